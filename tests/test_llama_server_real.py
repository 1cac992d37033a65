"""The HTTP backend against llama.cpp's own server (`llama-server`, built by `make llama-server`;
skipped without it): each sequence keeps its slot, so a follow-up request computes only its new
tokens; a stream closed early still counts what its prompt cost (`timings_per_token`); the
connection the server closes after each stream costs no fault; a sliding-window model (Gemma 3)
keeps a sample's last answer only with `--swa-full`, and the backend's counters say so."""

from __future__ import annotations

import asyncio
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.bench_servers import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent

BINARY = os.environ.get("LLAMA_SERVER") or str(ROOT / ".venv" / "bin" / "llama-server")

pytestmark = [pytest.mark.real_models, pytest.mark.server,
              pytest.mark.skipif(not Path(BINARY).is_file(), reason="llama-server not built (make llama-server)")]


@contextmanager
def llama_server(alias: str, folder: Path, *options: str):
    """The URL of a fresh llama-server with 2 slots serving the demo model `alias`, killed after."""
    from tessy.models import DEMO_MODELS

    port = free_port()
    log = folder / f"{alias}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([BINARY, "-m", str(DEMO_MODELS[alias].gguf_path()), "-a", alias,
                                 "--host", "127.0.0.1", "--port", str(port), "--parallel", "2", "--ctx-size", "2048",
                                 "--threads", "1", *options], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    from tessy.models import STUDENT_DEMO

    with llama_server(STUDENT_DEMO, tmp_path_factory.mktemp("llama-server")) as url:
        yield url


def test_slots_keep_the_prefix_cache_and_stopped_streams_count_their_prompt(server_url, smol_tokenizer):
    from tessy.backends.base import SamplingParams
    from tessy.backends.openai import OpenAIHTTPBackend

    backend = OpenAIHTTPBackend("smollm2-135m-instruct", server_url, role="student", tokenizer=smol_tokenizer)
    sampling, stop = SamplingParams(seed=1), frozenset({smol_tokenizer.eos_token_id})

    async def run():
        contexts = {seq: smol_tokenizer.encode(f"Explain step by step how to add {seq} numbers.",
                                               add_special_tokens=False) for seq in ("a", "b")}
        computed = []
        for _ in range(3):  # two sequences taking turns: each stays on its own slot
            for seq, context in contexts.items():
                before = backend.stats.prompt_processed
                generation = await backend.generate(seq, context, 8, sampling, stop)
                computed.append(backend.stats.prompt_processed - before)
                contexts[seq] = context + list(generation.token_ids)[:5]
        sent, before = backend.stats.prompt_tokens, backend.stats.prompt_processed
        stream = backend.stream("a", contexts["a"] + smol_tokenizer.encode(" So", add_special_tokens=False), 30,
                                sampling, stop)
        await stream.__anext__()
        await stream.aclose()
        streamed = (backend.stats.prompt_tokens - sent, backend.stats.prompt_processed - before, stream.finish_reason)
        for _ in range(2):  # whole streams: the server closes the connection after each one
            whole = backend.stream("b", contexts["b"], 4, sampling, stop)
            assert len([i for chunk in [c async for c in whole] for i in chunk]) >= 1
            await whole.aclose()
        await backend.aclose()
        return computed, streamed

    computed, (sent, processed, reason) = asyncio.run(run())
    assert backend.server == "llama.cpp" and backend.slots == 2
    assert computed[0] > 5 and computed[1] > 5  # first requests compute their whole prompt
    assert all(n <= 2 for n in computed[2:]), computed  # later ones only what the slot does not hold
    assert reason == "cancelled" and sent > 20 and processed <= 3, (sent, processed)
    assert backend.stats.prompt_reported == backend.stats.completions == 9
    assert backend.stats.faults == {}  # the request after a stream went out again on a new connection


@pytest.mark.parametrize("swa_full", [False, True])
def test_a_sliding_window_model_keeps_the_last_answer_only_with_swa_full(tmp_path, gemma_tokenizer, swa_full):
    from tessy.backends.base import SamplingParams
    from tessy.backends.openai import OpenAIHTTPBackend
    from tessy.backends.openai.cache import recompute_warning
    from tessy.models import TEACHER_DEMO

    sampling = SamplingParams(seed=1)
    with llama_server(TEACHER_DEMO, tmp_path, *(["--swa-full"] if swa_full else [])) as url:
        backend = OpenAIHTTPBackend(TEACHER_DEMO, url, role="teacher", tokenizer=gemma_tokenizer)

        async def run():
            context = gemma_tokenizer.encode("List the steps to sort a list of numbers by hand.")
            for _ in range(9):  # one sample going on from its own answers, 20 tokens at a time
                generation = await backend.generate("a", context, 20, sampling)
                context += list(generation.token_ids)
            await backend.aclose()

        asyncio.run(run())
    stats = backend.stats
    counters = {"follow_ups": stats.follow_ups, "follow_up_excess": stats.follow_up_excess}
    assert stats.follow_ups == 8
    if swa_full:
        assert stats.follow_up_excess <= 8, counters  # at most a token again now and then
        assert recompute_warning("teacher", counters) == ""
    else:  # the slot restores an older checkpoint: the last answer and more are computed again
        assert stats.follow_up_excess >= 8 * 20, counters
        assert "--swa-full" in recompute_warning("teacher", counters)
