"""TESSY end to end over HTTP against fake servers: records and secrets, context errors, a run
killed and resumed exactly once, the example server recipes, and a dead server as a pause (killed
mid-run and restarted: no attempt lost; down past the wait: the run stops, spending nothing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tessy.backends.openai import ServersUnavailable
from tests.fake_openai_server import FakeOpenAIServer
from tests.http_helpers import ROOT, SCRIPT, http_config, read_jsonl, spawn_fake_server, wait_for_records, \
    wait_until, write_prompts

@pytest.mark.slow
def test_tessy_over_http_writes_records_and_keeps_keys_out(tmp_path, smol_tokenizer, monkeypatch):
    from tessy.records import validate_record
    from tessy.runner import synthesize

    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    write_prompts(tmp_path / "prompts.jsonl", 3)
    monkeypatch.setenv("TESSY_TEST_KEY", "sk-from-env")
    with FakeOpenAIServer("student", script=script, decode=smol_tokenizer.decode, stop_id=2, stop_at=90) as s, \
            FakeOpenAIServer("teacher", script=script[3:], decode=smol_tokenizer.decode) as t:
        config = http_config(tmp_path, s.url, t.url)
        config.student.api_key = "sk-literal"
        config.teacher.api_key_env = "TESSY_TEST_KEY"
        s.inject("500", "429")
        report = synthesize(config)
        assert report.written == 3 and report.failed == 0
        assert {r["headers"].get("authorization") for r in s.requests} == {"Bearer sk-literal"}
        assert {r["headers"].get("authorization") for r in t.requests} == {"Bearer sk-from-env"}
    records = read_jsonl(tmp_path / "run" / "records.jsonl")
    assert sorted(r["id"] for r in records) == ["q0", "q1", "q2"]
    for record in records:
        validate_record(record)
        assert {role: m["transport"] for role, m in record["models"].items()} == \
            {"student": "token_ids", "teacher": "token_ids"}
        assert {span["role"] for span in record["spans"]} == {"student", "teacher"}
    for name in ("run.json", "records.jsonl"):
        text = (tmp_path / "run" / name).read_text()
        assert "sk-literal" not in text and "sk-from-env" not in text
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["student"]["api_key"] == "<redacted>"


@pytest.mark.slow
def test_context_error_ends_the_sample_with_reason_context(tmp_path, smol_tokenizer):
    from tessy.runner import synthesize

    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    write_prompts(tmp_path / "prompts.jsonl", 1)
    with FakeOpenAIServer("student", script=script, decode=smol_tokenizer.decode, max_model_len=60) as s, \
            FakeOpenAIServer("teacher", script=script, decode=smol_tokenizer.decode, max_model_len=60) as t:
        config = http_config(tmp_path, s.url, t.url, max_tokens=200)
        config.student.max_context = config.teacher.max_context = 4096  # wrong: the servers hold 60
        report = synthesize(config)
    assert report.written == 1, report
    assert read_jsonl(tmp_path / "run" / "records.jsonl")[0]["finish_reason"] == "context"


@pytest.mark.server
def test_killed_run_resumes_against_the_same_servers_exactly_once(tmp_path, smol_tokenizer):
    script = ",".join(map(str, smol_tokenizer.encode(SCRIPT, add_special_tokens=False)))
    servers = []
    for name in ("student", "teacher"):
        args = [sys.executable, "-m", "tests.fake_openai_server", "--model", name, "--script", script,
                "--stop-id", "2", "--stop-at", "80", "--fault-rate", "0.1", "--fault-kinds", "429,500,drop,malformed"]
        servers.append(subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT))
    try:
        urls = [f"http://127.0.0.1:{int(p.stdout.readline())}" for p in servers]
        write_prompts(tmp_path / "prompts.jsonl", 30)
        common = ["--student.backend", "openai", "--teacher.backend", "openai", "--student.url", urls[0],
                  "--teacher.url", urls[1], "--teacher.model", "smollm2-135m-instruct", "--max-tokens", "60",
                  "--max-answer-tokens", "16", "--concurrency", "4", "--no-progress"]
        cmd = [sys.executable, "-m", "tessy.cli.main", "synthesize", "--input", str(tmp_path / "prompts.jsonl"),
               "--output", str(tmp_path / "run"), *common]
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        records = tmp_path / "run" / "records.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and len(read_jsonl(records)) < 5 and first.poll() is None:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        done_before = len(read_jsonl(records))
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
    finally:
        for p in servers:
            p.kill()
    ids = [r["id"] for r in read_jsonl(records)]
    failed = {f["id"] for f in read_jsonl(tmp_path / "run" / "failures.jsonl")} - set(ids)
    assert len(ids) == len(set(ids))  # none twice
    assert set(ids) | failed == {f"q{i}" for i in range(30)}  # none lost
    assert done_before < 30


def test_example_recipes_are_valid_configs():
    import glob

    from tessy.config import SynthesizeConfig
    from tessy.settings import config_from_sources
    from tessy.formats import CHOICES

    examples = os.path.join(ROOT, "examples")
    # the server recipes (examples/pairs holds in-process pairs, checked in test_demo)
    paths = sorted(p for p in glob.glob(os.path.join(examples, "*", "*.yaml"))
                   if os.path.basename(os.path.dirname(p)) in ("vllm", "sglang"))
    assert len(paths) >= 4
    for path in paths:
        config = config_from_sources(SynthesizeConfig, path)
        for role in (config.teacher, config.student):
            assert role.backend == "openai" and role.url and role.served_model_name
            assert role.format in CHOICES


# ---- a dead server is a pause, not a failure -------------------------------------------------


@pytest.mark.server
def test_a_server_killed_mid_run_and_restarted_loses_no_attempt(tmp_path, smol_tokenizer):
    from tessy.runner import build_engine, synthesize

    script = ",".join(map(str, smol_tokenizer.encode(SCRIPT, add_special_tokens=False)))
    student, student_port = spawn_fake_server(script, "student", latency_s=0.02)
    teacher, teacher_port = spawn_fake_server(script, "teacher", latency_s=0.02)
    events = []
    try:
        write_prompts(tmp_path / "prompts.jsonl", 24)
        config = http_config(tmp_path, f"http://127.0.0.1:{student_port}", f"http://127.0.0.1:{teacher_port}")
        config.student.unavailable_wait_s = 60
        records = tmp_path / "run" / "records.jsonl"
        engine = build_engine(config)
        stats = engine.parties["student"].backend.stats

        def kill_and_restart():
            nonlocal student
            wait_for_records(records, 4)
            student.kill()
            student.wait()
            events.append(("killed", len(read_jsonl(records))))
            wait_until(lambda: stats.waiting > 0)  # the run paused: requests wait for a server
            events.append(("paused", stats.waiting))
            student, _ = spawn_fake_server(script, "student", port=student_port, latency_s=0.02)
            events.append(("restarted", len(read_jsonl(records))))

        watcher = threading.Thread(target=kill_and_restart)
        watcher.start()
        report = synthesize(config, engine=engine)
        watcher.join()
    finally:
        student.kill()
        teacher.kill()
    assert [e[0] for e in events] == ["killed", "paused", "restarted"] and events[0][1] < 24  # killed mid-run
    assert events[1][1] > 0  # requests were waiting for the server, none failed
    assert report.failed == 0 and report.written == 24
    assert read_jsonl(tmp_path / "run" / "failures.jsonl") == []
    ids = [r["id"] for r in read_jsonl(records)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(24))  # every prompt exactly once
    assert stats.breaker_trips >= 1 and stats.replicas_down == 0


@pytest.mark.server
def test_servers_down_past_the_wait_stop_the_run_without_spending_attempts(tmp_path, smol_tokenizer):
    from tessy.runner import synthesize

    script = ",".join(map(str, smol_tokenizer.encode(SCRIPT, add_special_tokens=False)))
    student, student_port = spawn_fake_server(script, "student", latency_s=0.02)
    teacher, teacher_port = spawn_fake_server(script, "teacher")
    try:
        write_prompts(tmp_path / "prompts.jsonl", 12)
        config = http_config(tmp_path, f"http://127.0.0.1:{student_port}", f"http://127.0.0.1:{teacher_port}")
        config.student.unavailable_wait_s = 1.0
        records = tmp_path / "run" / "records.jsonl"

        def kill():
            wait_for_records(records, 2)
            student.kill()

        watcher = threading.Thread(target=kill)
        watcher.start()
        with pytest.raises(ServersUnavailable, match=rf"student: no server answered .*127\.0\.0\.1:{student_port}"):
            synthesize(config)
        watcher.join()
        assert read_jsonl(tmp_path / "run" / "failures.jsonl") == []  # no attempt spent
        done = len(read_jsonl(records))
        assert 2 <= done < 12
        student.wait()
        student, _ = spawn_fake_server(script, "student", port=student_port)
        report = synthesize(config)  # the same command, once the server is back
    finally:
        student.kill()
        teacher.kill()
    assert report.failed == 0 and report.skipped_done == done and report.written == 12 - done
    assert sorted(r["id"] for r in read_jsonl(records)) == sorted(f"q{i}" for i in range(12))


@pytest.mark.slow
def test_no_secret_in_any_output_file_or_log_line(tmp_path, smol_tokenizer, monkeypatch, caplog):
    """Every way of passing a credential: a literal api_key, api_key_env, a secret header, URL
    userinfo. None of them may appear in the output folder or the log (DEBUG included)."""
    import logging

    from tessy.runner import synthesize

    secrets = ("sk-literal-1", "sk-env-2", "xk-header-3", "pw-userinfo-4")
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    write_prompts(tmp_path / "prompts.jsonl", 2)
    monkeypatch.setenv("TESSY_TEST_KEY", "sk-env-2")
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer("student", script=script, decode=smol_tokenizer.decode, stop_id=2, stop_at=60) as s, \
            FakeOpenAIServer("teacher", script=script[3:], decode=smol_tokenizer.decode) as t:
        config = http_config(tmp_path, s.url.replace("//", "//alice:pw-userinfo-4@"), t.url)
        config.student.headers = {"X-API-Key": "xk-header-3"}
        config.teacher.api_key = "sk-literal-1"
        config.teacher.api_key_env = ""
        s.inject("500", "drop")
        report = synthesize(config)
        assert report.written == 2
        config.teacher.api_key_env = "TESSY_TEST_KEY"
        config.overwrite = True
        assert synthesize(config).written == 2
        assert s.requests[-1]["headers"]["x-api-key"] == "xk-header-3"
    texts = {path.name: path.read_text() for path in (tmp_path / "run").iterdir() if path.is_file()}
    texts["log"] = caplog.text
    for name, text in texts.items():
        for secret in secrets:
            assert secret not in text, (name, secret)
        assert "alice" not in text, name
