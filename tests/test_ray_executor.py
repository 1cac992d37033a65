"""`--executor ray` when things go wrong: a shard whose worker is killed mid-run is started again
by Ray and resumes (every prompt lands exactly once), the bar counts the rows of all shards, and
a shard that fails for good stops the others at once, merging nothing.

Real CLI runs on a 2-CPU local Ray cluster against two fake vLLM-shaped servers that stream
slowly (`stream_delay_s`), so a shard is still running when the test kills its worker: the pid
comes from the worker file the task writes (`tessy.ray_progress`), the kill is a real SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from tessy.cli.main import EXIT_ERROR, main
from tessy.ray_progress import read_worker_file
from tessy.shards import shard_of
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_shards import SCRIPT, read, synth_args

N_PROMPTS = 12
IDS = [f"q{i}" for i in range(N_PROMPTS)]


@pytest.fixture(scope="module")
def slow_servers(smol_tokenizer):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("student", script=script, decode=smol_tokenizer.decode, stop_id=2, stop_at=70,
                          stream_delay_s=0.01, keep_requests=False) as s, \
            FakeOpenAIServer("teacher", script=script[3:], decode=smol_tokenizer.decode, stream_delay_s=0.01,
                             keep_requests=False) as t:
        yield s.url, t.url


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def prompts_file(tmp_path: Path) -> Path:
    rows = [json.dumps({"id": i, "prompt": f"What is {n} plus {n}?"}) for n, i in enumerate(IDS)] + ["not json"]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def ids(folder: Path) -> list[str]:
    return [r["id"] for r in read(folder / "records.jsonl")]


def shard_folder(out: Path, index: int) -> Path:
    return out.with_name(f"{out.name}.shards") / f"{index}-of-2"


def kill_when_running(out: Path, index: int, after_records: int, killed: dict) -> threading.Thread:
    """A thread that SIGKILLs shard `index`'s worker (the pid its worker file names) once the shard
    has `after_records` records, noting in `killed` the pid and the records it had."""
    folder = shard_folder(out, index)

    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                info = read_worker_file(folder)
                done = ids(folder) if info else []
            except (OSError, ValueError):  # a line or the worker file caught mid-write: look again
                time.sleep(0.05)
                continue
            if info and len(done) >= after_records:
                killed.update(pid=info["pid"], records=len(done), at=time.perf_counter())
                os.kill(info["pid"], signal.SIGKILL)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def bigger_shard() -> tuple[int, int]:
    owned = [sum(shard_of(i, 2) == s for i in IDS) for s in range(2)]
    index = max(range(2), key=owned.__getitem__)
    return index, owned[index]


@pytest.mark.kill
def test_a_shard_whose_worker_is_killed_is_retried_and_every_prompt_lands_once(slow_servers, ray_cluster, tmp_path,
                                                                               capsys):
    out = tmp_path / "run"
    index, owned = bigger_shard()
    assert owned >= 4  # the kill lands mid-shard: after 2 records, before the last
    killed: dict = {}
    thread = kill_when_running(out, index, 2, killed)  # os.kill(pid, SIGKILL) of the task's worker
    started = time.perf_counter()
    args = synth_args(prompts_file(tmp_path), out, slow_servers, "--executor", "ray", "--ray-shards", "2",
                      "--concurrency", "1")
    args.remove("--no-progress")  # the bar across the shards, on (captured) stderr
    assert main(args) == 0
    took = time.perf_counter() - started
    thread.join(1)
    err = capsys.readouterr().err
    assert killed and killed["records"] < owned, killed
    # Every prompt exactly once, in the merged run and in the shard that was killed.
    assert sorted(ids(out)) == sorted(IDS) and len(ids(out)) == N_PROMPTS
    folder = shard_folder(out, index)
    assert len(ids(folder)) == len(set(ids(folder))) == owned
    info = read_worker_file(folder)
    assert info["attempt"] == 2 and info["pid"] != killed["pid"]
    assert f"shard {index}/2: its worker died (or its node); Ray started it again (attempt 2 of 4" in err
    # The bar: the input's 13 rows (12 prompts, 1 reject) across both shards, seen on the way up.
    counts = {int(n) for n in re.findall(r"(\d+)/13 \[", err)}
    assert 13 in counts and any(0 < n < 13 for n in counts), err[-2000:]
    print(f"killed shard {index}/2 at {killed['records']}/{owned} records; run took {took:.1f}s")


@pytest.mark.kill
def test_a_shard_that_fails_for_good_stops_the_others_and_merges_nothing(slow_servers, ray_cluster, tmp_path, capsys):
    from tessy import durable

    out = tmp_path / "run"
    index, owned = bigger_shard()
    other = 1 - index
    killed: dict = {}
    thread = kill_when_running(out, index, 1, killed)  # os.kill(pid, SIGKILL): with no retries, a failure
    prompts = prompts_file(tmp_path)
    args = synth_args(prompts, out, slow_servers, "--executor", "ray", "--ray-shards", "2", "--concurrency", "1",
                      "--ray-max-retries", "0")
    started = time.perf_counter()
    assert main(args) == EXIT_ERROR
    ended = time.perf_counter()
    thread.join(1)
    err = capsys.readouterr().err
    assert killed, err
    after_kill = ended - killed["at"]
    assert after_kill < 15, f"the run ended {after_kill:.1f}s after the kill"  # Ray notices, cancels, waits <= 5 s
    assert (f"shard {index}/2 ({shard_folder(out, index)}): its worker died and --ray-max-retries 0 allows no "
            "more attempts (") in err
    assert "the other shards were stopped" in err and "nothing was merged: rerun the same command" in err
    assert len([line for line in err.splitlines() if "tessy synthesize: error" in line]) == 1
    assert not out.exists()  # nothing half-written: OUTPUT is made only by the merge
    # The other shard was stopped, not left to finish: its folder is free and stays as it is.
    stopped = shard_folder(out, other)
    before = ids(stopped)
    assert len(before) < N_PROMPTS - owned, "the other shard had finished: nothing to stop"
    fd = durable.lock(stopped / ".lock", create=False)  # LockHeld if a writer were still there
    if fd is not None:
        os.close(fd)
    time.sleep(1.5)
    assert ids(stopped) == before
    # Both folders resume: the same command finishes the run, every prompt exactly once.
    assert main(args) == 0
    assert sorted(ids(out)) == sorted(IDS) and len(ids(out)) == N_PROMPTS
    for index_ in range(2):
        done = ids(shard_folder(out, index_))
        assert len(done) == len(set(done))
    print(f"failed run ended {after_kill:.1f}s after the kill ({ended - started:.1f}s in all); the other shard "
          f"had {len(before)} of {N_PROMPTS - owned} records")


def test_the_watch_counts_the_rows_each_shard_folder_finished(tmp_path, capsys):
    """No Ray: what ShardWatch reads of two shard folders as they grow, tear and resume."""
    from tessy.ray_progress import ShardWatch, write_worker_file

    a, b = tmp_path / "0-of-2", tmp_path / "1-of-2"
    a.mkdir()
    (a / "failures.jsonl").write_text('{"id": "old"}\n')  # an earlier run's attempt: not a row finished now
    watch = ShardWatch([str(a), str(b)], ["0/2", "1/2"], 6, "run1", show=False, max_attempts=4)
    assert watch.poll() == 0  # b does not exist yet
    (a / "records.jsonl").write_text('{"id": "p1"}\n{"id": "p2"}\n{"id": "p3"')  # the last line is being written
    (a / "rejects.jsonl").write_text('{"line": 9}\n')
    with open(a / "failures.jsonl", "a") as f:
        f.write('{"id": "p4"}\n{"id": "p4"}\n')  # one row, however many lines
    assert watch.poll() == 4
    (a / "records.jsonl").write_text('{"id": "p1"}\n{"id": "p2"}\n')  # a resume cut the torn tail off
    assert watch.poll() == 4
    b.mkdir()
    (b / "records.jsonl").write_text("".join(f'{{"id": "b{i}"}}\n' for i in range(9)))
    assert watch.poll() == 6  # never past the total
    write_worker_file(b, "run1")
    watch.poll()
    assert read_worker_file(b)["attempt"] == 1 and watch.retried == 0
    write_worker_file(b, "run1")  # the same run's task started again: a retry, said once
    watch.poll()
    watch.poll()
    assert read_worker_file(b)["attempt"] == 2 and watch.retried == 1
    assert capsys.readouterr().err.count("shard 1/2: its worker died (or its node); Ray started it again "
                                         "(attempt 2 of 4") == 1
    write_worker_file(b, "run2")  # another driver's run starts over at 1
    assert read_worker_file(b)["attempt"] == 1


def test_combined_reports_sum_the_answers_figures_and_drop_the_servers_own_counts():
    """No Ray: every shard reads the same servers' /metrics, so their sum would count each shard's
    traffic once per shard; the merged report keeps only what the shards' own answers said."""
    from tessy.pipeline import RunReport
    from tessy.ray_executor import combine

    shard = {"prompt_tokens": 100, "prompt_processed": 60, "completions": 5, "server_prompt_tokens": 250,
             "server_prompt_cached": 200, "server_counted": 1, "server_shared": 0}
    reports = [RunReport(output=f"s{i}", server_stats={"teacher": dict(shard)}) for i in range(2)]
    total = combine(reports, "run", 1.0).server_stats["teacher"]
    assert total == {"prompt_tokens": 200, "prompt_processed": 120, "completions": 10}
