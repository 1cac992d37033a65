"""The HTTP backend against the fake vLLM-shaped server (tests/fake_openai_server.py): request
bodies compared exactly, transports, readiness errors, replicas, the in-flight bound, retries
and their bounds, context-length errors, secrets (TESSY end to end over HTTP:
test_http_end_to_end.py; streamed requests: test_backend_streaming.py; llama.cpp's slots and
prompt usage: test_prompt_cache.py; the HTTP client itself: test_http_client.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from tessy.backends.openai import (OpenAIHTTPBackend, ServerError, ServerNotReady, ServersUnavailable,
                                   TokenizerNotFound)
from tests.fake_openai_server import FakeOpenAIServer
from tests.http_helpers import SAMPLING, SCRIPT, STOP, completions, generate, make

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


def test_capabilities_are_declared(server, smol_tokenizer):
    """Callers read what a backend can do from its declared attributes (`base.Backend`), never by
    probing for attributes: a served model names itself and counts its faults; a scripted one does not."""
    from tessy.backends.fake import ScriptedBackend

    backend = make(server, smol_tokenizer)
    generate(backend, context=[5, 6, 7, 8], n=4)
    assert (backend.served_model, backend.transport) == ("smol", "token_ids")
    assert backend.server_counters() == {"retries": 0, "faults": 0, "down": 0, "prompt_tokens": 4,
                                         "prompt_processed": 4, "prompt_reported": 0, "prompt_unknown": 0, "follow_ups": 0,
                                         "follow_up_excess": 0, "completions": 1, "server_prompt_tokens": 0,
                                         "server_prompt_cached": 0, "server_counted": 0, "server_shared": 0}
    scripted = ScriptedBackend(smol_tokenizer, SCRIPT)
    assert (scripted.served_model, scripted.transport, scripted.server_counters()) == ("", "in_process", {})
    assert scripted.streams_tokens and not scripted.warms_prompts


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
    assert backend.transport == "token_ids" and backend.readback == "logprobs"
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


def test_retries_on_faults_honour_retry_after_and_then_succeed(server, smol_tokenizer):
    backend = make(server, smol_tokenizer, max_retries=5)
    delays = []

    async def record(delay):
        delays.append(delay)

    backend.exchange.sleep = record
    server.retry_after = "1.5"
    server.inject("429", "500", "drop", "malformed")
    generation = generate(backend, n=3)
    assert len(generation.token_ids) == 3
    # A request that a kept connection's close left unanswered goes out once more at once, on a
    # new connection (a stale keep-alive, as llama-server leaves one after each stream): no retry.
    assert backend.stats.retries == 3
    assert delays[0] == 1.5  # Retry-After honoured
    assert all(0 <= d <= 0.5 * 2 ** i for i, d in enumerate(delays[1:], start=1))  # backoff with jitter
    assert len(generate(backend, n=2).token_ids) == 2  # the connection pool recovered


def test_a_cancelled_request_never_hands_its_answer_to_the_next_one(server, smol_tokenizer):
    """A sample task cancelled while its answer is on the way must not leave the connection in
    the pool: the next request on it would read the cancelled request's answer as its own."""
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
            deadline, i = asyncio.get_running_loop().time() + 30, 0  # a failure guard only
            while len(completions(b)) == before and asyncio.get_running_loop().time() < deadline:
                await backend.generate(f"q{i}/student", [i] * 10, 2, SAMPLING, STOP)
                await asyncio.sleep(0.01)
                i += 1
            return len(completions(b)) - before

        assert asyncio.run(main()) > 0  # used again
        assert backend.stats.replicas_down == 0 and backend.stats.retries == 0


def test_when_every_server_is_down_generate_waits_and_spends_no_retries(server, smol_tokenizer):
    backend = make(server, smol_tokenizer, max_retries=0, unavailable_wait_s=30)
    backend.replicas.probe_interval_s = 0.1
    server.stop()
    waiting = []

    def restart():  # once the request is seen waiting for a server (not after a set time)
        deadline = time.monotonic() + 30  # a failure guard only
        while backend.stats.waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting.append(backend.stats.waiting)
        server.start()

    restarter = threading.Thread(target=restart)
    restarter.start()
    generation = generate(backend, n=3)  # answered only by the restarted server
    restarter.join()
    assert len(generation.token_ids) == 3
    assert waiting == [1]  # the request was waiting for a server, visibly
    assert backend.stats.retries == 0 and backend.stats.breaker_trips == 1
    assert backend.stats.replicas_down == 0 and backend.stats.waiting == 0


def test_past_the_wait_generate_raises_servers_unavailable(server, smol_tokenizer, monkeypatch):
    """The wait is measured on the replicas' clock, a fake one here that the test moves: the
    request waits while less than `unavailable_wait_s` has passed and gives up once it has."""
    from types import SimpleNamespace

    from tessy.backends.openai import replicas

    now, reads = [0.0], [0]

    def monotonic():
        reads[0] += 1
        return now[0]

    monkeypatch.setattr(replicas, "time", SimpleNamespace(monotonic=monotonic))
    backend = make(server, smol_tokenizer, max_retries=0, unavailable_wait_s=0.5)
    server.stop()

    async def until(condition):
        deadline = asyncio.get_running_loop().time() + 30  # a failure guard only
        while not condition() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    async def main():
        request = asyncio.create_task(backend.generate("s/student", [1, 2, 3], 5, SAMPLING, STOP))
        await until(lambda: backend.stats.waiting == 1 or request.done())
        for at in (0.2, 0.49):  # the wait loop reads the clock again, and goes on waiting
            now[0], seen = at, reads[0]
            await until(lambda: reads[0] >= seen + 2 or request.done())
            assert not request.done() and backend.stats.waiting == 1
        now[0] = 0.5
        with pytest.raises(ServersUnavailable,
                           match=r"student: no server answered for 0\.5s \(http://127\.0\.0\.1:\d+\)"):
            await asyncio.wait_for(request, 30)

    asyncio.run(main())
    assert backend.stats.retries == 0 and backend.stats.waiting == 0
