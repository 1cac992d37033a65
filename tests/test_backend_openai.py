"""The HTTP backend against the fake vLLM-shaped server (tests/fake_openai_server.py): request
bodies compared exactly, transports, readiness errors, replicas, the in-flight bound, retries
and their bounds, context-length errors, secrets, and TESSY end to end over HTTP with resume (the
lean HTTP/1.1 client itself: tests/test_http1.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tessy.backends.base import SamplingParams
from tessy.backends.openai import (OpenAIHTTPBackend, ServerError, ServerNotReady, ServersUnavailable,
                                   TokenizerNotFound)
from tests.fake_openai_server import FakeOpenAIServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = " Okay, so the answer is 7 because 3 plus 4 makes 7. Wait, let me check: 3 + 4 = 7."
SAMPLING = SamplingParams(temperature=0.5, top_p=0.9, seed=11)
STOP = frozenset({2})


@pytest.fixture()
def server(smol_tokenizer):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, stop_id=2, stop_at=10**9) as fake:
        yield fake


def make(server, tokenizer, **kwargs):
    return OpenAIHTTPBackend("smollm2-135m-instruct", server.url, role="student", tokenizer=tokenizer, **kwargs)


def completions(server):
    return [r for r in server.requests if r["path"] == "/v1/completions"]


def generate(backend, seq_id="s/student", context=(1, 2, 3), n=5, stop=STOP):
    return asyncio.run(backend.generate(seq_id, list(context), n, SAMPLING, stop))


def test_token_id_payload_exact_and_ids_read_back(server, smol_tokenizer):
    backend = make(server, smol_tokenizer, api_key="sk-secret", headers={"X-Team": "tessy"},
                   extra_body={"min_p": 0.05})
    assert backend.transport == "token_ids"
    probe = completions(server)[0]["body"]
    assert probe == {"model": "smol", "prompt": smol_tokenizer.encode("Hello", add_special_tokens=False)[:1],
                     "max_tokens": 1, "temperature": 0.0, "return_token_ids": True}
    generation = generate(backend, context=[5, 6, 7, 8], n=4)
    request = completions(server)[-1]
    assert request["body"] == {
        "model": "smol", "prompt": [5, 6, 7, 8], "max_tokens": 4, "temperature": 0.5, "top_p": 0.9, "seed": 11,
        "stop_token_ids": [2], "skip_special_tokens": False, "spaces_between_special_tokens": False,
        "return_token_ids": True, "min_p": 0.05,
    }
    assert request["headers"]["authorization"] == "Bearer sk-secret"
    assert request["headers"]["x-team"] == "tessy"
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    assert generation.token_ids == [script[(4 + i) % len(script)] for i in range(4)]
    assert generation.text == smol_tokenizer.decode(generation.token_ids)
    assert generation.finish_reason == "length"
    assert "sk-secret" not in json.dumps(backend.describe())


def test_stop_token_is_last_id(server, smol_tokenizer):
    server.stop_at = 3
    backend = make(server, smol_tokenizer)
    generation = generate(backend, context=[1, 2, 3], n=5)
    assert generation.token_ids == [2] and generation.finish_reason == "stop"


def test_logprobs_readback_when_server_ignores_return_token_ids(server, smol_tokenizer):
    original = server._complete

    def old_vllm(body):  # before return_token_ids existed: the field is ignored
        body = dict(body, return_token_ids=False) if isinstance(body, dict) else body
        return original(body)

    server._complete = old_vllm
    backend = make(server, smol_tokenizer)
    assert backend.transport == "token_ids" and backend._id_readback == "logprobs"
    generation = generate(backend, context=[5, 6], n=3)
    body = completions(server)[-1]["body"]
    assert body["logprobs"] == 0 and body["return_tokens_as_token_ids"] is True
    assert "return_token_ids" not in body
    assert len(generation.token_ids) == 3


@pytest.mark.parametrize("refuse_status", [422, 500])
def test_text_mode_for_servers_that_refuse_token_ids(smol_tokenizer, refuse_status):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, accept_token_ids=False,
                          refuse_status=refuse_status) as fake:
        backend = make(fake, smol_tokenizer)
        assert backend.transport == "text"
        context = smol_tokenizer.encode("Hello there", add_special_tokens=False)
        generation = generate(backend, context=context, n=6)
        assert completions(fake)[-1]["body"] == {
            "model": "smol", "prompt": "Hello there", "max_tokens": 6, "temperature": 0.5, "top_p": 0.9, "seed": 11,
            "top_k": 0, "repeat_penalty": 1.0, "stop": ["<|im_end|>"],
        }
        assert generation.token_ids == smol_tokenizer.encode(generation.text, add_special_tokens=False)
        assert 0 < len(generation.token_ids) <= 6


MULTIBYTE = "𝔼[X] ≤ ∑ café 北京 🙂 "


@pytest.mark.parametrize("server_writes", ["replace", "ignore", "overrun"])
def test_text_transport_never_returns_a_broken_character(smol_tokenizer, server_writes):
    """max_tokens ends inside a character at most of these n. Whatever the server does there (a
    U+FFFD for the partial bytes, drops them, or finishes the character past max_tokens), the
    backend returns at most n ids that decode to whole characters, and text that is their decoding."""
    script = smol_tokenizer.encode(MULTIBYTE * 2, add_special_tokens=False)
    full = smol_tokenizer.decode(script)
    decode = smol_tokenizer.decode if server_writes != "ignore" else \
        (lambda ids: smol_tokenizer.decode(ids).rstrip("\ufffd"))
    with FakeOpenAIServer("smol", script=script, decode=decode, accept_token_ids=False) as fake:
        fake.responder = lambda prompt_ids, max_tokens: script[:max_tokens]  # always from a character start
        if server_writes == "overrun":
            complete = fake._complete

            def finish_the_character(body):
                n = body["max_tokens"]
                while n < len(script) and smol_tokenizer.decode(script[:n]).endswith("\ufffd"):
                    n += 1
                return complete(dict(body, max_tokens=n))

            fake._complete = finish_the_character
        backend = make(fake, smol_tokenizer)
        assert backend.transport == "text"
        broken = 0
        for n in range(1, len(script) + 1):
            broken += smol_tokenizer.decode(script[:n]).endswith("\ufffd")
            generation = generate(backend, context=smol_tokenizer.encode("Hi", add_special_tokens=False), n=n)
            assert "\ufffd" not in generation.text, (n, generation.text)
            assert len(generation.token_ids) <= n
            assert generation.text == smol_tokenizer.decode(generation.token_ids)
            assert full.startswith(generation.text)  # what the model wrote, cut at a character boundary
            whole = max(m for m in range(n + 1) if not smol_tokenizer.decode(script[:m]).endswith("\ufffd"))
            # Nothing lost but the broken character (re-tokenizing may keep a space the script had
            # merged with the next character's first bytes).
            assert len(generation.text) >= len(smol_tokenizer.decode(script[:whole]))
        assert broken >= 8  # the cases above did cut characters


def test_ids_from_text_keeps_a_replacement_character_the_model_wrote(smol_tokenizer):
    from tessy.backends.openai.parse import ids_from_text

    text = "a\ufffdb 北京"
    ids, decoded = ids_from_text(smol_tokenizer, text, 100, "length")
    assert decoded == text and ids == smol_tokenizer.encode(text, add_special_tokens=False)
    clipped, decoded = ids_from_text(smol_tokenizer, text, len(ids) - 1, "length")  # splits 京
    assert decoded == "a\ufffdb 北" and clipped == ids[: len(clipped)]


def test_readiness_names_the_unreachable_server_and_the_wrong_model(server, smol_tokenizer):
    with pytest.raises(ServerNotReady, match=r"student server http://127\.0\.0\.1:1 is unreachable"):
        OpenAIHTTPBackend("smollm2-135m-instruct", "http://127.0.0.1:1", role="student", tokenizer=smol_tokenizer)
    with pytest.raises(ServerNotReady, match=r"serves \['smol'\], not 'Qwen/Qwen3-8B'"):
        make(server, smol_tokenizer, served_model_name="Qwen/Qwen3-8B")
    with pytest.raises(ServerNotReady, match=r"http://127\.0\.0\.1:1 is unreachable"):  # second replica down
        OpenAIHTTPBackend("m", f"{server.url},http://127.0.0.1:1", role="teacher", tokenizer=smol_tokenizer)


def test_missing_tokenizer_says_how_to_provide_it(server, tmp_path):
    with pytest.raises(TokenizerNotFound, match=r"--teacher\.tokenizer"):
        OpenAIHTTPBackend(str(tmp_path), server.url, role="teacher")


def test_replicas_pin_each_sequence_and_bound_requests_in_flight(smol_tokenizer):
    with FakeOpenAIServer("smol", latency_s=0.05) as a, FakeOpenAIServer("smol", latency_s=0.05) as b:
        backend = OpenAIHTTPBackend("m", f"{a.url}, {b.url}/v1", role="student", tokenizer=smol_tokenizer,
                                    max_in_flight=3)

        async def sample(i):
            for step in range(3):
                await backend.generate(f"p{i}/student", [i] * (10 + step), 2, SAMPLING, STOP)
            backend.release(f"p{i}/student")

        async def run():
            await asyncio.gather(*(sample(i) for i in range(8)))

        asyncio.run(run())
        for i in range(8):
            seen = {name for name, fake in (("a", a), ("b", b))
                    for r in completions(fake) if r["body"]["prompt"][0] == i and r["body"]["max_tokens"] == 2}
            assert len(seen) == 1, (i, seen)  # every request of a sample went to one replica
        assert len(completions(a)) > 1 and len(completions(b)) > 1  # both replicas used
        events = sorted([(t0, 1) for t0, _ in a.intervals + b.intervals] + [(t1, -1) for _, t1 in a.intervals + b.intervals])
        running = peak = 0
        for _, delta in events:
            running += delta
            peak = max(peak, running)
        assert 1 < peak <= 3  # the bound holds across replicas (and requests did overlap)
        assert all(r.live == 0 for r in backend.replicas.replicas)


@pytest.mark.parametrize("client", ["http1", "httpx"])
def test_retries_on_faults_honour_retry_after_and_then_succeed(server, smol_tokenizer, monkeypatch, client):
    if client == "httpx":  # what https servers and proxied URLs use
        monkeypatch.setattr("tessy.backends.openai.replicas.direct_http", lambda url: False)
    backend = make(server, smol_tokenizer, max_retries=5)
    delays = []

    async def record(delay):
        delays.append(delay)

    backend._sleep = record
    server.retry_after = "1.5"
    server.inject("429", "500", "drop", "malformed")
    generation = generate(backend, n=3)
    assert len(generation.token_ids) == 3
    # http1 sends a request that a kept connection's close left unanswered once more at once, on a
    # new connection (a stale keep-alive, as llama-server leaves one after each stream): no retry.
    assert backend.stats.retries == (3 if client == "http1" else 4)
    assert delays[0] == 1.5  # Retry-After honoured
    assert all(0 <= d <= 0.5 * 2 ** i for i, d in enumerate(delays[1:], start=1))  # backoff with jitter
    assert len(generate(backend, n=2).token_ids) == 2  # the connection pool recovered


@pytest.mark.parametrize("client", ["http1", "httpx"])
def test_a_cancelled_request_never_hands_its_answer_to_the_next_one(server, smol_tokenizer, monkeypatch, client):
    """A sample task cancelled while its answer is on the way must not leave the connection in
    the pool: the next request on it would read the cancelled request's answer as its own."""
    if client == "httpx":
        monkeypatch.setattr("tessy.backends.openai.replicas.direct_http", lambda url: False)
    backend = make(server, smol_tokenizer)
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    server.latency_s = 0.3  # every answer takes a while

    async def main():
        sent = len(completions(server))
        first = asyncio.create_task(backend.generate("a/student", [1] * 10, 4, SAMPLING, STOP))
        while len(completions(server)) == sent:  # the request is on the wire, its answer not yet
            await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await backend.generate("b/student", [1] * 20, 4, SAMPLING, STOP)

    second = asyncio.run(main())
    assert second.token_ids == [script[(20 + i) % len(script)] for i in range(4)]  # its own answer


def test_timeouts_are_retried(server, smol_tokenizer):
    backend = make(server, smol_tokenizer, timeout_s=0.3, backoff_s=0.01)
    server.timeout_sleep_s = 1.0
    server.inject("timeout")
    assert len(generate(backend, n=2).token_ids) == 2
    assert backend.stats.faults == {"timeout": 1}


def test_no_retry_on_other_4xx(server, smol_tokenizer):
    backend = make(server, smol_tokenizer)
    backend.served_model_name = "gone"  # the server answers 404
    before = len(completions(server))
    with pytest.raises(ServerError, match="HTTP 404 \\(not retried\\)"):
        generate(backend)
    assert len(completions(server)) == before + 1


def test_retries_are_bounded_per_request_and_per_sample(server, smol_tokenizer):
    backend = make(server, smol_tokenizer, max_retries=2, max_sample_retries=3, backoff_s=0.0)
    server.inject("500", "500", "500")
    with pytest.raises(ServerError, match="gave up after 2 retries"):
        generate(backend, seq_id="x/student")
    backend.release("x/student")  # requeued: the sample's count survives
    server.inject("500", "500")
    with pytest.raises(ServerError, match="3 retries for this sample"):
        generate(backend, seq_id="x/student")
    server.injected.clear()
    assert generate(backend, seq_id="other/student").token_ids  # other samples are unaffected


def test_context_length_error_lowers_max_context_and_ends_with_no_tokens(smol_tokenizer):
    with FakeOpenAIServer("smol", max_model_len=50) as fake:
        backend = make(fake, smol_tokenizer, max_context=1000)  # configured too large
        generation = generate(backend, context=list(range(45)), n=20)
        assert backend.max_context == 50
        assert len(generation.token_ids) == 5  # asked again for what fits
        assert generate(backend, context=list(range(50)), n=20).token_ids == []


def test_served_model_is_recorded_also_when_no_name_is_configured(smol_tokenizer):
    with FakeOpenAIServer("smol-served", root="/models/SmolLM2-135M-Instruct") as fake:
        backend = make(fake, smol_tokenizer)  # served_model_name left empty
        assert backend.served_model == "smol-served"
        assert backend.describe()["served_model"] == "smol-served"
        assert backend.describe()["served_root"] == "/models/SmolLM2-135M-Instruct"


def test_secrets_reach_the_server_and_no_message(server, smol_tokenizer):
    secrets = ("pw-s3cret", "xk-s3cret", "sk-s3cret")
    host = server.url.split("//")[1]
    backend = OpenAIHTTPBackend("m", f"http://alice:pw-s3cret@{host}", role="student", tokenizer=smol_tokenizer,
                                headers={"X-API-Key": "xk-s3cret"})
    generate(backend)
    seen = completions(server)[-1]["headers"]
    assert seen["authorization"] == "Basic " + __import__("base64").b64encode(b"alice:pw-s3cret").decode()
    assert seen["x-api-key"] == "xk-s3cret"
    messages = [json.dumps(backend.describe())]
    with pytest.raises(ServerNotReady) as error:
        OpenAIHTTPBackend("m", "http://alice:pw-s3cret@127.0.0.1:1", role="student", tokenizer=smol_tokenizer,
                          api_key="sk-s3cret")
    messages.append(str(error.value))
    keyed = make(server, smol_tokenizer, api_key="sk-s3cret", unavailable_wait_s=0.3)
    server.stop()
    with pytest.raises(ServersUnavailable) as error:
        generate(keyed)
    messages.append(str(error.value))
    assert "127.0.0.1:1" in messages[1] and server.url in messages[2]
    for message in messages:
        assert not any(secret in message for secret in secrets), message
        assert "alice" not in message


def test_a_dead_replica_is_skipped_and_used_again_when_it_answers(smol_tokenizer):
    with FakeOpenAIServer("smol") as a, FakeOpenAIServer("smol") as b:
        backend = OpenAIHTTPBackend("m", f"{a.url},{b.url}", role="student", tokenizer=smol_tokenizer,
                                    max_retries=0)  # a charged retry would fail the request
        backend.replicas.probe_interval_s = 0.05
        b.stop()

        async def main():
            for i in range(6):  # half of them are first pinned to b
                assert len((await backend.generate(f"p{i}/student", [i] * 10, 2, SAMPLING, STOP)).token_ids) == 2
            assert backend.stats.replicas_down == 1 and backend.stats.breaker_trips == 1
            before = len(completions(b))
            b.start()  # back on the same port
            for i in range(40):
                await backend.generate(f"q{i}/student", [i] * 10, 2, SAMPLING, STOP)
                await asyncio.sleep(0.01)
            return len(completions(b)) - before

        assert asyncio.run(main()) > 0  # used again
        assert backend.stats.replicas_down == 0 and backend.stats.retries == 0


def test_when_every_server_is_down_generate_waits_and_spends_no_retries(server, smol_tokenizer):
    backend = make(server, smol_tokenizer, max_retries=0, unavailable_wait_s=30)
    backend.replicas.probe_interval_s = 0.1
    server.stop()
    waiting = []

    def restart():
        waiting.append(backend.stats.waiting)
        server.start()

    timer = threading.Timer(1.0, restart)
    timer.start()
    started = time.monotonic()
    generation = generate(backend, n=3)
    timer.join()
    assert len(generation.token_ids) == 3 and time.monotonic() - started >= 1.0
    assert waiting == [1]  # the request was waiting for a server, visibly
    assert backend.stats.retries == 0 and backend.stats.breaker_trips == 1
    assert backend.stats.replicas_down == 0 and backend.stats.waiting == 0


def test_past_the_wait_generate_raises_servers_unavailable(server, smol_tokenizer):
    backend = make(server, smol_tokenizer, max_retries=0, unavailable_wait_s=0.5)
    server.stop()
    started = time.monotonic()
    with pytest.raises(ServersUnavailable, match=r"student: no server answered for 0\.5s \(http://127\.0\.0\.1:\d+\)"):
        generate(backend)
    assert 0.5 <= time.monotonic() - started < 5
    assert backend.stats.retries == 0 and backend.stats.waiting == 0


# ---- TESSY end to end over HTTP --------------------------------------------------------------


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


def _serve(script, name, port=0, latency_s=0.0):
    """A fake server in its own process (so it can be killed for real): (process, port)."""
    args = [sys.executable, "-m", "tests.fake_openai_server", "--model", name, "--script", script,
            "--stop-id", "2", "--stop-at", "80", "--port", str(port), "--latency-s", str(latency_s)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return proc, int(proc.stdout.readline())


def test_a_server_killed_mid_run_and_restarted_loses_no_attempt(tmp_path, smol_tokenizer):
    from tessy.runner import build_engine, synthesize

    script = ",".join(map(str, smol_tokenizer.encode(SCRIPT, add_special_tokens=False)))
    student, student_port = _serve(script, "student", latency_s=0.02)
    teacher, teacher_port = _serve(script, "teacher", latency_s=0.02)
    events = []
    try:
        write_prompts(tmp_path / "prompts.jsonl", 24)
        config = http_config(tmp_path, f"http://127.0.0.1:{student_port}", f"http://127.0.0.1:{teacher_port}")
        config.student.unavailable_wait_s = 60
        records = tmp_path / "run" / "records.jsonl"

        def kill_and_restart():
            nonlocal student
            deadline = time.time() + 60
            while time.time() < deadline and len(read_jsonl(records)) < 4:
                time.sleep(0.02)
            student.kill()
            student.wait()
            events.append(("killed", len(read_jsonl(records))))
            time.sleep(1.5)
            student, _ = _serve(script, "student", port=student_port, latency_s=0.02)
            events.append(("restarted", len(read_jsonl(records))))

        watcher = threading.Thread(target=kill_and_restart)
        watcher.start()
        engine = build_engine(config)
        report = synthesize(config, engine=engine)
        watcher.join()
    finally:
        student.kill()
        teacher.kill()
    assert [e[0] for e in events] == ["killed", "restarted"] and events[0][1] < 24  # killed mid-run
    assert report.failed == 0 and report.written == 24
    assert read_jsonl(tmp_path / "run" / "failures.jsonl") == []
    ids = [r["id"] for r in read_jsonl(records)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(24))  # every prompt exactly once
    stats = engine.parties["student"].backend.stats
    assert stats.breaker_trips >= 1 and stats.replicas_down == 0


def test_servers_down_past_the_wait_stop_the_run_without_spending_attempts(tmp_path, smol_tokenizer):
    from tessy.runner import synthesize

    script = ",".join(map(str, smol_tokenizer.encode(SCRIPT, add_special_tokens=False)))
    student, student_port = _serve(script, "student", latency_s=0.02)
    teacher, teacher_port = _serve(script, "teacher")
    try:
        write_prompts(tmp_path / "prompts.jsonl", 12)
        config = http_config(tmp_path, f"http://127.0.0.1:{student_port}", f"http://127.0.0.1:{teacher_port}")
        config.student.unavailable_wait_s = 1.0
        records = tmp_path / "run" / "records.jsonl"

        def kill():
            deadline = time.time() + 60
            while time.time() < deadline and len(read_jsonl(records)) < 2:
                time.sleep(0.02)
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
        student, _ = _serve(script, "student", port=student_port)
        report = synthesize(config)  # the same command, once the server is back
    finally:
        student.kill()
        teacher.kill()
    assert report.failed == 0 and report.skipped_done == done and report.written == 12 - done
    assert sorted(r["id"] for r in read_jsonl(records)) == sorted(f"q{i}" for i in range(12))


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


# ---- cache-friendly requests and prompt usage (issue 10) ---------------------------------------

TEXT_BODY = {"model": "smol", "prompt": "Hello there", "max_tokens": 6, "temperature": 0.5, "top_p": 0.9,
             "seed": 11, "top_k": 0, "repeat_penalty": 1.0, "stop": ["<|im_end|>"]}


def test_llama_server_gets_cache_prompt_and_one_slot_per_sequence(smol_tokenizer):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, accept_token_ids=False,
                          owned_by="llamacpp", total_slots=3) as fake:
        backend = make(fake, smol_tokenizer)
        assert (backend.transport, backend.server, backend.slots) == ("text", "llama.cpp", 3)
        context = smol_tokenizer.encode("Hello there", add_special_tokens=False)
        slots = []
        for seq in ("a", "b", "a", "c", "d", "b"):
            generate(backend, seq_id=seq, context=context, n=6)
            slots.append(completions(fake)[-1]["body"]["id_slot"])
        assert slots == [0, 1, 0, 2, 0, 1]  # each sequence keeps its slot; new ones take the least used
        assert completions(fake)[-1]["body"] == {**TEXT_BODY, "cache_prompt": True, "id_slot": 1}
        backend.release("b")
        generate(backend, seq_id="e", context=context, n=6)
        assert completions(fake)[-1]["body"]["id_slot"] == 1  # "b"'s slot was freed


def test_llama_cpp_python_gets_cache_prompt_and_id_slot_only_when_configured(smol_tokenizer):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    context = smol_tokenizer.encode("Hello there", add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, accept_token_ids=False,
                          owned_by="me") as fake:
        backend = make(fake, smol_tokenizer)
        assert (backend.server, backend.slots) == ("llama-cpp-python", 0)
        generate(backend, seq_id="a", context=context, n=6)
        assert completions(fake)[-1]["body"] == {**TEXT_BODY, "cache_prompt": True}
        configured = make(fake, smol_tokenizer, slots=2)
        generate(configured, seq_id="a", context=context, n=6)
        generate(configured, seq_id="b", context=context, n=6)
        assert [r["body"].get("id_slot") for r in completions(fake)[-2:]] == [0, 1]
    # Recognised by its validation error alone, too (a card that does not say who serves it).
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, accept_token_ids=False,
                          owned_by="someone") as fake:
        assert make(fake, smol_tokenizer).server == "llama-cpp-python"


def test_vllm_gets_no_llama_fields_and_no_props_request(server, smol_tokenizer):
    backend = make(server, smol_tokenizer)
    assert backend.server == "vllm"
    generate(backend, context=[5, 6, 7, 8], n=4)
    body = completions(server)[-1]["body"]
    assert "cache_prompt" not in body and "id_slot" not in body
    assert [r["path"] for r in server.requests if r["method"] == "GET"] == ["/v1/models"]


@pytest.mark.parametrize("style", ["vllm", "llama.cpp", ""])
def test_prompt_tokens_processed_are_read_from_the_servers_usage(smol_tokenizer, style):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, cache_style=style) as fake:
        backend = make(fake, smol_tokenizer)
        base = (backend.stats.prompt_tokens, backend.stats.prompt_processed)
        context = list(range(10, 30))
        first = generate(backend, seq_id="a", context=context, n=5)
        # The slot holds the first prompt and its answer: all 23 tokens of the second are cached.
        generate(backend, seq_id="a", context=context + first.token_ids[:3], n=5)
        sent = backend.stats.prompt_tokens - base[0]
        processed = backend.stats.prompt_processed - base[1]
        assert sent == 43
        if style:
            assert processed == 20 and backend.stats.prompt_reported == 2
        else:
            assert processed == 43 and backend.stats.prompt_reported == 0


def test_summary_shows_prompt_tokens_processed_per_kept_token():
    from tessy.cli.synthesize import prompt_tokens_line
    from tessy.runner import RunReport

    report = RunReport(output="x", kept_tokens=100, server_stats={
        "student": {"retries": 0, "faults": 0, "down": 0, "prompt_tokens": 500, "prompt_processed": 120,
                    "prompt_reported": 10, "completions": 10},
        "teacher": {"retries": 0, "faults": 0, "down": 0, "prompt_tokens": 300, "prompt_processed": 300,
                    "prompt_reported": 0, "completions": 8}})
    assert prompt_tokens_line(report) == (
        "prompt tokens processed per kept token: 4.20 (student 1.20, teacher 3.00 (server reports no cache "
        "hits: all sent); 8.00 sent)")
    assert prompt_tokens_line(RunReport(output="x")) == ""


# ---- streaming: requests stop at the cut (issue 10) --------------------------------------------

def _comparable(record):
    """A record without what depends on where requests stopped (tokens generated, timings)."""
    if isinstance(record, dict):
        return {key: _comparable(value) for key, value in record.items()
                if key not in ("generated", "discarded", "timings", "steps", "config_fingerprint")}
    if isinstance(record, list):
        return [_comparable(value) for value in record]
    return record


@pytest.mark.parametrize("transport", ["token_ids", "logprobs", "text"])
def test_streamed_records_equal_unstreamed_ones_and_cost_fewer_tokens(tmp_path, smol_tokenizer, transport):
    from tessy.runner import synthesize

    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    write_prompts(tmp_path / "prompts.jsonl", 3)
    results = {}
    for stream in ("off", "on"):
        options = dict(decode=smol_tokenizer.decode, stream_delay_s=0.003,
                       accept_token_ids=transport != "text", returns_token_ids=transport != "logprobs")
        stop_at = 10**9 if transport == "text" else 90  # text: one "token" per character
        with FakeOpenAIServer("student", script=script, stop_id=2, stop_at=stop_at, **options) as s, \
                FakeOpenAIServer("teacher", script=script[3:], **options) as t:
            config = http_config(tmp_path, s.url, t.url, output=str(tmp_path / stream))
            config.student.k = config.teacher.k = 16
            config.student.stream = config.teacher.stream = stream
            config.student.adaptive_k = config.teacher.adaptive_k = False  # k tokens asked either way
            report = synthesize(config)
            assert report.written == 3 and report.failed == 0, report
            bodies = [r["body"] for fake in (s, t) for r in completions(fake)[2:]
                      if r["body"]["max_tokens"] > 1]  # not the one-token requests reading a prompt ahead
            assert all(bool(b.get("stream")) == (stream == "on") for b in bodies)
            cancelled = s.counts.get("stream_cancelled", 0) + t.counts.get("stream_cancelled", 0)
            assert (cancelled > 0) == (stream == "on"), cancelled
        records = read_jsonl(tmp_path / stream / "records.jsonl")
        results[stream] = (sorted((_comparable(r) for r in records), key=lambda r: r["id"]), report.generated)
        assert {m["transport"] for r in records for m in r["models"].values()} == \
            {"text" if transport == "text" else "token_ids"}
    if transport != "text":
        assert results["on"][0] == results["off"][0]
    # (text: the server counts its own tokens, here characters, so a request of k of them holds
    # fewer of the local tokens a streamed step counts k of: the steps, and so the cuts, differ)
    assert results["on"][1] < results["off"][1]  # the streamed run generated fewer tokens


def test_a_stopped_stream_closes_its_request_and_frees_its_slot(smol_tokenizer):
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, stream_delay_s=0.02) as fake:
        backend = make(fake, smol_tokenizer, max_in_flight=1)
        assert backend.streams_tokens

        async def run():
            stream = backend.stream("s/student", [5, 6, 7], 40, SAMPLING, STOP)
            first = await stream.__anext__()
            await stream.aclose()
            stopped = (first, stream.finish_reason, stream.generated)
            whole = backend.stream("t/student", [5, 6, 7], 6, SAMPLING, STOP)
            chunks = [chunk async for chunk in whole]  # the in-flight slot was given back
            await whole.aclose()
            return stopped, chunks, whole.finish_reason, await backend.generate("u/student", [5, 6, 7], 6, SAMPLING, STOP)

        (first, reason, generated), chunks, whole_reason, generation = asyncio.run(run())
        assert reason == "cancelled" and len(first) == 1 and generated < 40
        deadline = time.time() + 5
        while not fake.counts.get("stream_cancelled") and time.time() < deadline:
            time.sleep(0.02)
        assert fake.counts.get("stream_cancelled") == 1 and fake.streamed[-3] < 40  # the server stopped early
        assert [i for c in chunks for i in c] == generation.token_ids and whole_reason == generation.finish_reason
        body = [r["body"] for r in completions(fake) if r["body"].get("stream")][-1]
        assert body == {"model": "smol", "prompt": [5, 6, 7], "max_tokens": 6, "temperature": 0.5, "top_p": 0.9,
                        "seed": 11, "stop_token_ids": [2], "skip_special_tokens": False,
                        "spaces_between_special_tokens": False, "return_token_ids": True, "stream": True,
                        "stream_options": {"include_usage": True, "continuous_usage_stats": True}}


@pytest.mark.parametrize("cache_style", ["vllm", "llama.cpp"])
def test_a_stream_stopped_early_still_counts_what_its_prompt_cost(smol_tokenizer, cache_style):
    """The usage on every event (continuous_usage_stats / timings_per_token) is what counts the
    prompt of a stream closed at the cut; without it every prompt token would count as computed."""
    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, stream_delay_s=0.02,
                          cache_style=cache_style, **({"owned_by": "llamacpp", "total_slots": 1}
                                                      if cache_style == "llama.cpp" else {})) as fake:
        backend = make(fake, smol_tokenizer)
        prompt = list(range(5, 45))

        async def run():
            await backend.generate("s/student", prompt, 4, SAMPLING, STOP)  # the server caches this prompt
            before = backend.stats.prompt_tokens, backend.stats.prompt_processed
            stream = backend.stream("s/student", prompt + [50, 51], 30, SAMPLING, STOP)
            await stream.__anext__()
            await stream.aclose()
            return before, stream.finish_reason

        (sent, processed), reason = asyncio.run(run())
        assert reason == "cancelled"
        assert backend.stats.prompt_tokens - sent == 42
        assert backend.stats.prompt_processed - processed == 2  # only the two new tokens were computed
        body = [r["body"] for r in completions(fake) if r["body"].get("stream")][-1]
        assert body.get("timings_per_token", False) == (cache_style == "llama.cpp")


def test_no_streaming_where_the_server_does_not_stream(server, smol_tokenizer):
    server.streaming = False
    backend = make(server, smol_tokenizer)
    assert not backend.streams_tokens
    stream = backend.stream("s", [1, 2], 3, SAMPLING, STOP)
    assert type(stream).__name__ == "OneChunk"
    asyncio.run(stream.aclose())
