"""What the HTTP backend's tests share: the text the fake servers speak, the sampling they are
asked with, and small builders (a backend, a request, a run's config, a prompts file, a fake
server in its own process). Used by test_backend_openai, test_backend_streaming,
test_http_end_to_end and test_prompt_cache."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from tessy.backends.base import SamplingParams
from tessy.backends.openai import OpenAIHTTPBackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = " Okay, so the answer is 7 because 3 plus 4 makes 7. Wait, let me check: 3 + 4 = 7."
SAMPLING = SamplingParams(temperature=0.5, top_p=0.9, seed=11)
STOP = frozenset({2})


def make(server, tokenizer, **kwargs):
    return OpenAIHTTPBackend("smollm2-135m-instruct", server.url, role="student", tokenizer=tokenizer, **kwargs)


def completions(server):
    return [r for r in server.requests if r["path"] == "/v1/completions"]


def generate(backend, seq_id="s/student", context=(1, 2, 3), n=5, stop=STOP):
    return asyncio.run(backend.generate(seq_id, list(context), n, SAMPLING, stop))


def write_prompts(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"What is {i} plus {i}?"}) + "\n")


def http_config(tmp_path, student_url, teacher_url, **overrides):
    from tessy.config import ModelConfig, SynthesizeConfig

    common = dict(backend="openai", model="smollm2-135m-instruct", k=8, temperature=0.0)
    config = SynthesizeConfig(
        input=str(tmp_path / "prompts.jsonl"), output=str(tmp_path / "run"), max_tokens=60,
        max_answer_tokens=16, concurrency=4, progress=False,
        student=ModelConfig(url=student_url, **common),
        teacher=ModelConfig(url=teacher_url, **common),
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def read_jsonl(path):
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def comparable(record):
    """A record without what depends on where requests stopped (tokens generated, timings)."""
    if isinstance(record, dict):
        return {key: comparable(value) for key, value in record.items()
                if key not in ("generated", "discarded", "timings", "steps", "config_fingerprint")}
    if isinstance(record, list):
        return [comparable(value) for value in record]
    return record


def spawn_fake_server(script, name, port=0, latency_s=0.0):
    """A fake server in its own process (so it can be killed for real): (process, port)."""
    args = [sys.executable, "-m", "tests.fake_openai_server", "--model", name, "--script", script,
            "--stop-id", "2", "--stop-at", "80", "--port", str(port), "--latency-s", str(latency_s)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return proc, int(proc.stdout.readline())


def wait_until(condition, timeout_s=60.0):
    """Wait until `condition()` is true; `timeout_s` is a failure guard (the caller asserts)."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


def wait_for_records(path, count, timeout_s=60.0):
    """Wait until the records file at `path` holds `count` records (or `timeout_s` passes)."""
    wait_until(lambda: len(read_jsonl(path)) >= count, timeout_s)
