"""The GPU-cost simulating server (bench/gpu_sim_server.py): scripted answers with usage, prefix
cache hits that skip prefill, requests sharing steps, a closed stream leaving the batch, and the
HTTP backend streaming from it. Tiny step costs keep it fast."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from bench.gpu_sim_server import SimServer

SCRIPT = list(range(100, 120))


@pytest.fixture()
def sim():
    with SimServer("sim", script=SCRIPT, step_ms=1, decode_us_per_token=10, prefill_us_per_token=1,
                   max_model_len=1 << 16) as server:
        yield server


def stats(server) -> dict:
    return httpx.get(f"{server.url}/sim/stats").json()


def complete(server, prompt, max_tokens, **extra) -> dict:
    body = {"model": "sim", "prompt": prompt, "max_tokens": max_tokens, "return_token_ids": True, **extra}
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_plain_completion_scripted_tokens_and_usage(sim):
    answer = complete(sim, [1, 2, 3], 5)
    choice = answer["choices"][0]
    assert choice["token_ids"] == [SCRIPT[(3 + i) % len(SCRIPT)] for i in range(5)]
    assert choice["finish_reason"] == "length"
    assert answer["usage"]["prompt_tokens"] == 3 and answer["usage"]["completion_tokens"] == 5
    assert answer["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    s = stats(sim)
    assert s["requests"] == 1 and s["generated_tokens"] == 5 and s["steps"] == 5
    assert s["prefill_tokens"] == 3 and s["cached_tokens"] == 0 and s["busy_s"] > 0


def test_extending_a_context_hits_the_prefix_cache(sim):
    first = list(range(1, 41))
    answer = complete(sim, first, 10)
    second = first + answer["choices"][0]["token_ids"] + [7, 8, 9]  # 53 tokens: 3 full blocks of 16
    again = complete(sim, second, 4)
    cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == 48 and again["usage"]["prompt_tokens"] == len(second)
    s = stats(sim)
    assert s["cached_tokens"] == 48
    assert s["prefill_tokens"] == len(first) + len(second) - 48  # only the uncached part


def test_concurrent_requests_share_steps(sim):
    sim.step_s = 0.005  # long enough that all 8 are admitted while the first still runs
    tokens = 40
    results = []

    def one(i):
        results.append(complete(sim, [i] * 10, tokens))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8
    assert all(len(r["choices"][0]["token_ids"]) == tokens for r in results)
    s = stats(sim)
    assert s["max_running"] == 8 and s["generated_tokens"] == 8 * tokens
    assert s["steps"] < 2 * tokens  # 8 x 40 tokens in about 40 shared steps, not 320


def test_closed_stream_is_cancelled_and_stops_generating(sim):
    sim.step_s = 0.002
    body = {"model": "sim", "prompt": [1, 2, 3], "max_tokens": 2000, "stream": True, "return_token_ids": True}
    seen = []
    with httpx.Client(timeout=30) as client, client.stream("POST", f"{sim.url}/v1/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen += json.loads(line[6:])["choices"][0]["token_ids"]
            if len(seen) == 3:
                break
    assert seen == SCRIPT[3:6]
    deadline = time.time() + 5
    while stats(sim)["cancelled"] < 1 and time.time() < deadline:
        time.sleep(0.01)
    s = stats(sim)
    assert s["cancelled"] == 1 and s["running"] == 0 and s["generated_tokens"] < 200
    complete(sim, [1, 2, 3], 5)  # its steps would carry the cancelled request too, were it still running
    assert stats(sim)["generated_tokens"] == s["generated_tokens"] + 5
    assert sim.counts.get("stream_cancelled") == 1


def test_http_backend_streams_from_it(smol_tokenizer):
    from tessy.backends.base import SamplingParams
    from tessy.backends.openai import OpenAIHTTPBackend

    script = smol_tokenizer.encode(" Okay, so 3 plus 4 makes 7. Wait, let me check.", add_special_tokens=False)
    with SimServer("smol", script=script, decode=smol_tokenizer.decode, stop_id=2, step_ms=1,
                   decode_us_per_token=10, prefill_us_per_token=1) as sim:
        backend = OpenAIHTTPBackend("smollm2-135m-instruct", sim.url, role="student", tokenizer=smol_tokenizer)
        assert backend.streams_tokens  # the probe streamed

        async def run():
            stream = backend.stream("s/student", [5, 6, 7], 6, SamplingParams(temperature=0.5), frozenset({2}))
            chunks = [chunk async for chunk in stream]
            await stream.aclose()
            generation = await backend.generate("t/student", [5, 6, 7], 6, SamplingParams(temperature=0.5),
                                                frozenset({2}))
            return chunks, generation

        chunks, generation = asyncio.run(run())
        streamed = [i for chunk in chunks for i in chunk]
        assert streamed == generation.token_ids == [script[(3 + i) % len(script)] for i in range(6)]
        assert stats(sim)["generated_tokens"] >= 12


def test_following_the_text_goes_on_where_the_prompt_leaves_the_script():
    with SimServer("sim", script=SCRIPT, step_ms=1, decode_us_per_token=10, prefill_us_per_token=1,
                   max_model_len=1 << 16, follow_text=True) as server:
        # a prompt that ends inside the script (the other model's span, say) goes on right after it
        answer = complete(server, [1, 2, 3, 104, 105, 106, 107], 4)
        assert answer["choices"][0]["token_ids"] == [108, 109, 110, 111]
        # across the script's end, read cyclically
        assert complete(server, [9, 118, 119], 3)["choices"][0]["token_ids"] == [100, 101, 102]
        # a prompt that does not end in the script: continued from its length, as without it
        assert complete(server, [1, 2, 3], 2)["choices"][0]["token_ids"] == [103, 104]
