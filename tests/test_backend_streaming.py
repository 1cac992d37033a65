"""Streamed requests over HTTP (issue 10): records equal to unstreamed ones at fewer tokens, a
stream stopped at the cut closes its request, frees its slot and still counts what its prompt
cost, and no streaming where the server does not stream."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fake_openai_server import FakeOpenAIServer
from tests.http_helpers import SAMPLING, SCRIPT, STOP, comparable, completions, http_config, make, read_jsonl, \
    write_prompts

@pytest.mark.slow
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
        results[stream] = (sorted((comparable(r) for r in records), key=lambda r: r["id"]), report.generated)
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
    """What the prompt of a stream closed at the cut cost: llama.cpp says it on every event
    (timings_per_token); vLLM says it only in the last event, which such a stream never gets, so
    the answer leaves it unknown and vLLM's own counters (`/metrics`) say it."""
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
            await backend.read_server_counters(set())
            return before, stream.finish_reason

        (sent, processed), reason = asyncio.run(run())
        assert reason == "cancelled"
        stats = backend.stats
        assert stats.prompt_tokens - sent == 42
        if cache_style == "llama.cpp":
            assert stats.prompt_processed - processed == 2  # only the two new tokens were computed
        else:
            assert stats.prompt_unknown == 1 and stats.prompt_processed - processed == 42  # an upper bound
            # The server's own count: the whole first prompt, then only the two new tokens.
            assert stats.server_prompt_tokens - stats.server_prompt_cached == 40 + 2
        body = [r["body"] for r in completions(fake) if r["body"].get("stream")][-1]
        assert body.get("timings_per_token", False) == (cache_style == "llama.cpp")


def test_no_streaming_where_the_server_does_not_stream(server, smol_tokenizer):
    server.streaming = False
    backend = make(server, smol_tokenizer)
    assert not backend.streams_tokens
    stream = backend.stream("s", [1, 2], 3, SAMPLING, STOP)
    assert type(stream).__name__ == "OneChunk"
    asyncio.run(stream.aclose())
