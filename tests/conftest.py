"""Shared fixtures: real tokenizers and models available offline.

The demo models are converted once into a session cache (`TESSY_CACHE`, default
`~/.cache/tessy`), so only the first test run pays the GGUF conversion.
"""

from __future__ import annotations

import functools

import pytest


@functools.cache
def _tokenizer(spec: str):
    from tessy.models import load_tokenizer

    return load_tokenizer(spec)


@pytest.fixture(scope="session")
def smol_tokenizer():
    return _tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_tokenizer():
    return _tokenizer("gemma3-270m")


@pytest.fixture(scope="session")
def qwen3_tokenizer():
    from tests.qwen3_tokenizer import build_qwen3_tokenizer

    return build_qwen3_tokenizer()


@pytest.fixture()
def server(smol_tokenizer):
    """A fake vLLM-shaped server (tests/fake_openai_server.py) that speaks tests.http_helpers.SCRIPT."""
    from tests.fake_openai_server import FakeOpenAIServer
    from tests.http_helpers import SCRIPT

    script = smol_tokenizer.encode(SCRIPT, add_special_tokens=False)
    with FakeOpenAIServer("smol", script=script, decode=smol_tokenizer.decode, stop_id=2, stop_at=10**9) as fake:
        yield fake
