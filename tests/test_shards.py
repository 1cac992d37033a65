"""Shards and merge: `--shard I/N` splits the prompts by id hash, `tessy merge` joins the folders, and
two shard processes plus a merge write the same records as one process (timings aside).

The runs are real CLI runs against two fake vLLM-shaped servers (deterministic answers), so the
same config drives the one-process run, the shards and the Ray tasks.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tessy.cli.main import EXIT_ERROR, main
from tessy.shards import MergeError, Shard, merge_runs, parse_shard, shard_of
from tests.fake_openai_server import FakeOpenAIServer

pytestmark = pytest.mark.slow  # most tests here run whole CLI syntheses (shard processes, merges)

SCRIPT = " Okay, so the answer is 7 because 3 plus 4 makes 7. Wait, let me check: 3 + 4 = 7."
N_PROMPTS = 10
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def servers(smol_tokenizer):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("student", script=script, decode=smol_tokenizer.decode, stop_id=2, stop_at=70) as s, \
            FakeOpenAIServer("teacher", script=script[3:], decode=smol_tokenizer.decode) as t:
        yield s.url, t.url


def write_prompts(path: Path) -> Path:
    rows = [json.dumps({"id": f"q{i}", "prompt": f"What is {i} plus {i}?"}) for i in range(N_PROMPTS)]
    rows += ["not json", json.dumps({"id": "q3", "prompt": "a duplicate id"}), json.dumps({"id": "empty", "prompt": ""})]
    path.write_text("\n".join(rows) + "\n")
    return path


def synth_args(prompts: Path, output: Path, urls, *extra: str) -> list[str]:
    return ["synthesize", "--input", str(prompts), "--output", str(output), "--no-progress",
            "--student.backend", "openai", "--teacher.backend", "openai",
            "--student.url", urls[0], "--teacher.url", urls[1], "--teacher.model", "smollm2-135m-instruct",
            "--student.k", "8", "--teacher.k", "8", "--max-tokens", "60", "--max-answer-tokens", "16",
            "--concurrency", "3", "--seed", "7", *extra]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def comparable(folder: Path) -> dict[str, dict]:
    """Records by id, without the timings and the request count (`totals.steps`): with adaptive k
    (tessy.engine.learned) the size of each request follows the spans a role wrote recently in that
    process, so a shard that ran other samples before makes more or fewer requests for the same
    spans. Everything written (texts, spans, token counts, finish reasons) must match."""
    records = {r["id"]: {k: v for k, v in r.items() if k != "timings"} for r in read(folder / "records.jsonl")}
    for record in records.values():
        record["totals"].pop("steps")
    return records


def rejects(folder: Path) -> list[tuple]:
    return sorted((r["line"], r["id"], r["reason"]) for r in read(folder / "rejects.jsonl"))


@pytest.fixture(scope="module")
def one_process(servers, tmp_path_factory):
    """The reference: every prompt in one process."""
    root = tmp_path_factory.mktemp("one")
    prompts = write_prompts(root / "prompts.jsonl")
    assert main(synth_args(prompts, root / "run", servers)) == 0
    return prompts, root / "run"


# ---------------------------------------------------------------------------- the split


def test_shard_spec_is_checked_with_a_clear_error(tmp_path, capsys):
    assert parse_shard("1/4") == Shard(1, 4) and str(parse_shard(" 0/1 ")) == "0/1"
    for bad in ("2/2", "-1/2", "1/0", "1", "a/b", "1/2/3", ""):
        with pytest.raises(ValueError, match=r"expected I/N with 0 <= I < N \(e\.g\. 0/4\)"):
            parse_shard(bad)
    assert main(["synthesize", "--input", "x.jsonl", "--output", str(tmp_path / "o"), "--shard", "2/2"]) == EXIT_ERROR
    assert "--shard: expected I/N with 0 <= I < N (e.g. 0/4), got '2/2'" in capsys.readouterr().err
    assert main(["synthesize", "--input", "x.jsonl", "--shard", "0/2", "--executor", "ray"]) == EXIT_ERROR
    assert "--executor ray makes its own shards" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_shard_of_is_stable_disjoint_and_balanced():
    # sha256, not hash(): the same on every machine and Python run (pinned values).
    assert [shard_of(f"q{i}", 2) for i in range(6)] == [shard_of(f"q{i}", 2) for i in range(6)]
    assert shard_of("q0", 1000) == int.from_bytes(__import__("hashlib").sha256(b"q0").digest()[:8], "big") % 1000
    ids = [f"id-{i}" for i in range(3000)]
    parts = [{i for i in ids if Shard(k, 3).owns(i)} for k in range(3)]
    assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
    assert all(800 < len(part) < 1200 for part in parts)


def test_fingerprint_leaves_out_how_the_run_is_spread():
    from tessy.config import SynthesizeConfig

    assert SynthesizeConfig(shard="1/3", executor="ray", ray_shards=5, ray_num_gpus=1).data_fields() == \
        SynthesizeConfig().data_fields()


# ---------------------------------------------------------------------------- the done-when


def test_two_shard_processes_plus_merge_equal_one_process(servers, one_process, tmp_path, capsys):
    prompts, single = one_process
    shards = [tmp_path / "shards" / "0-of-2", tmp_path / "shards" / "1-of-2"]
    # Two CLI processes at once, as a shell loop would start them.
    procs = [subprocess.Popen([sys.executable, "-m", "tessy.cli.main",
                               *synth_args(prompts, folder, servers, "--shard", f"{index}/2")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for index, folder in enumerate(shards)]
    for index, (proc, folder) in enumerate(zip(procs, shards)):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert f"shard {index}/2: left" in out  # "shard 0/2: left N prompts to the other shards"
        info = json.loads((folder / "run.json").read_text())
        assert info["config"]["shard"] == f"{index}/2"  # the folder knows its shard
        assert info["fingerprint"] == json.loads((single / "run.json").read_text())["fingerprint"]
    parts = [set(comparable(folder)) for folder in shards]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    # Each reject is written by one shard only: the one that owns its id (or its line, without one).
    assert sorted(rejects(shards[0]) + rejects(shards[1])) == rejects(single)

    merged = tmp_path / "merged"
    assert main(["merge", *map(str, shards), "-o", str(merged)]) == 0
    assert comparable(merged) == comparable(single)
    assert set(comparable(single)) == {f"q{i}" for i in range(N_PROMPTS)}
    assert rejects(merged) == rejects(single)
    info = json.loads((merged / "run.json").read_text())
    assert info["fingerprint"] == json.loads((single / "run.json").read_text())["fingerprint"]
    assert info["config"]["shard"] == "" and info["shards_missing"] == []
    assert [entry["shard"] for entry in info["merged_from"]] == ["0/2", "1/2"]
    assert not list(tmp_path.glob(".merged*"))  # no staging folder left behind

    # The merged folder is a run like any other: view, export, analyze read it, and a rerun into
    # it (no shard) finds every prompt done.
    assert main(["view", str(merged)]) == 0 and (merged / "view.html").is_file()
    assert main(["export", str(merged), "-o", str(tmp_path / "sft"), "--finish-reasons", "stop,length"]) == 0
    exported = read(tmp_path / "sft" / "train.jsonl") + read(tmp_path / "sft" / "validation.jsonl")
    assert sorted(row["id"] for row in exported) == sorted(comparable(single))
    assert main(["analyze", str(merged), str(single), "-o", str(tmp_path / "analysis"), "--no-nll"]) == 0
    capsys.readouterr()
    assert main(synth_args(prompts, merged, servers)) == 0
    assert "skipped 10 prompts already done" in capsys.readouterr().out


def test_merge_refuses_overlaps_other_configs_and_repeats(servers, one_process, tmp_path, capsys):
    prompts, single = one_process
    shard0, shard1 = tmp_path / "s0", tmp_path / "s1"
    assert main(synth_args(prompts, shard0, servers, "--shard", "0/2")) == 0
    other = tmp_path / "other"  # shard 1 of a run with another max_tokens
    assert main(synth_args(prompts, other, servers, "--shard", "1/2", "--max-tokens", "50")) == 0
    assert main(synth_args(prompts, shard1, servers, "--shard", "1/2")) == 0
    out = tmp_path / "out"
    capsys.readouterr()

    def refused(folders, pattern):
        with pytest.raises(MergeError, match=pattern):
            merge_runs(folders, out)
        assert not out.exists() and not list(tmp_path.glob(".out*"))

    refused([shard0, single], rf"id 'q\d+' is in both {shard0} and {single}: shards must hold disjoint prompts")
    refused([shard0, other], rf"{shard0} and {other} were made by different configs \(fingerprint \w+ vs \w+\)")
    refused([shard0, shard0], rf"{shard0} is given twice")
    refused([shard0, tmp_path / "nowhere"], r"no run folder at .*nowhere")
    # The CLI says it on one line, exit code 2.
    assert main(["merge", str(shard0), str(other), "-o", str(out)]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(shard0) in err and str(other) in err and "different configs" in err

    # One shard alone merges, naming the missing one; an existing OUT only with --overwrite.
    assert main(["merge", str(shard0), "-o", str(out)]) == 0
    assert "shards 1/2 are missing" in capsys.readouterr().err
    assert main(["merge", str(shard0), str(shard1), "-o", str(out)]) == EXIT_ERROR
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["merge", str(shard0), str(shard1), "-o", str(out), "--overwrite"]) == 0
    assert comparable(out) == comparable(single)
    # A merged folder merges again (its shards are known), but not with a shard it already holds.
    with pytest.raises(MergeError, match=r"are both shard 0/2"):
        merge_runs([out, shard0], tmp_path / "again")
    with pytest.raises(MergeError, match=r"holds the run"):
        merge_runs([out], out, overwrite=True)


def test_a_shard_folder_refuses_another_shard(servers, one_process, tmp_path, capsys):
    prompts, _ = one_process
    folder = tmp_path / "s0"
    assert main(synth_args(prompts, folder, servers, "--shard", "0/2")) == 0
    before = (folder / "records.jsonl").read_text()
    assert main(synth_args(prompts, folder, servers, "--shard", "1/2")) == EXIT_ERROR
    assert "holds shard 0/2, this run is shard 1/2; give each shard its own --output" in capsys.readouterr().err
    assert main(synth_args(prompts, folder, servers)) == EXIT_ERROR
    assert "this run is every prompt (no shard)" in capsys.readouterr().err
    assert (folder / "records.jsonl").read_text() == before


def test_merge_refuses_a_folder_being_written(one_process, tmp_path):
    import fcntl
    import os

    _, single = one_process
    fd = os.open(single / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(MergeError, match=rf"{single} is in use by a running tessy process"):
            merge_runs([single], tmp_path / "out")
    finally:
        os.close(fd)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_writes_what_one_process_writes(servers, one_process, ray_cluster, tmp_path, capsys):
    prompts, single = one_process
    out = tmp_path / "run"
    args = synth_args(prompts, out, servers, "--executor", "ray", "--ray-shards", "3")
    assert main(args) == 0
    assert comparable(out) == comparable(single)
    assert rejects(out) == rejects(single)
    info = json.loads((out / "run.json").read_text())
    assert info["fingerprint"] == json.loads((single / "run.json").read_text())["fingerprint"]
    assert sorted(entry["shard"] for entry in info["merged_from"]) == ["0/3", "1/3", "2/3"]
    assert sorted(p.name for p in (tmp_path / "run.shards").iterdir()) == ["0-of-3", "1-of-3", "2-of-3"]
    assert f"wrote {N_PROMPTS} records" in capsys.readouterr().out
    # The same command again resumes every shard (nothing to do) and merges the same records.
    assert main(args) == 0
    assert "skipped 10 prompts already done" in capsys.readouterr().out
    assert comparable(out) == comparable(single)


def test_ray_executor_refuses_a_one_process_run_and_names_a_failing_shard(servers, one_process, ray_cluster,
                                                                          tmp_path, capsys):
    import shutil

    prompts, single = one_process
    taken = tmp_path / "taken"
    shutil.copytree(single, taken)
    before = (taken / "records.jsonl").read_text()
    assert main(synth_args(prompts, taken, servers, "--executor", "ray")) == EXIT_ERROR
    assert "holds a run that --executor ray did not merge" in capsys.readouterr().err
    assert (taken / "records.jsonl").read_text() == before
    # A task that raises (here: a server that serves another model than asked) is named by shard.
    args = synth_args(prompts, tmp_path / "bad", servers, "--executor", "ray", "--student.served-model-name", "nope")
    assert main(args) == EXIT_ERROR
    err = capsys.readouterr().err
    assert re.search(r"shard [01]/2 \(.*\.shards/[01]-of-2\): \w+: .*'nope'", err), err
    assert "rerun the same command to resume" in err and err.count("tessy synthesize: error") == 1
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------- the real demo pair


@pytest.mark.real_models
def test_real_pair_shards_plus_merge_equal_one_process(tmp_path):
    """The same check with the real SmolLM2 / Gemma pair in process (loaded once, one sample at a
    time so that batching cannot change the numbers)."""
    import dataclasses

    from tessy.config import SynthesizeConfig
    from tessy.runner import build_engine, load_party, synthesize

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} times 3? Explain."}) + "\n"
                               for i in range(2)))
    config = SynthesizeConfig(input=str(prompts), output=str(tmp_path / "one"), progress=False, concurrency=1,
                              max_tokens=16, max_answer_tokens=8, seed=3)
    config.student.max_batch = config.teacher.max_batch = 1
    engine = build_engine(config, {role: load_party(role, getattr(config, role)) for role in ("student", "teacher")})
    assert synthesize(config, engine=engine).written == 2
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for index, folder in enumerate(shards):
        synthesize(dataclasses.replace(config, shard=f"{index}/2", output=str(folder)), engine=engine)
    merge_runs(shards, tmp_path / "merged")

    def without_overshoot(folder):
        # The in-process backend streams tokens and stops when the engine closes the stream, so how
        # many tokens were sampled past a cut (generated, discarded) depends on thread timing, like
        # the timings; every text, span and kept count must match.
        records = comparable(folder)
        for record in records.values():
            for part in (record["totals"], *record["spans"]):
                part.pop("generated"), part.pop("discarded")
        return records

    assert without_overshoot(tmp_path / "merged") == without_overshoot(tmp_path / "one")
    assert all(comparable(folder) for folder in shards)  # both shards got prompts
