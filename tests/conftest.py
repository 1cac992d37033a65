"""Shared fixtures: real tokenizers and models available offline; the `kill` and `ray` markers.

The demo models are converted once into a session cache (`TESSY_CACHE`, default
`~/.cache/tessy`), so only the first test run pays the GGUF conversion.

The markers (pyproject.toml) sort out what `make test-fast` leaves out. `real_models`, `server`
and `slow` are written on the tests; `kill` and `ray` are added here, from what a test does: one
that kills a process (`.kill(`, `SIGKILL` in its body) is a kill test, one that takes the
`ray_cluster` fixture a Ray test. A test without `real_models` that loads a demo model's real
weights in this process (through `HFBackend`) fails, so the marker stays true.
"""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path

import pytest

KILLS = re.compile(r"\.kill\(|SIGKILL")


def pytest_collection_modifyitems(items):
    for item in items:
        try:
            source = inspect.getsource(item.function)
        except (AttributeError, OSError, TypeError):  # not a plain test function
            source = ""
        if KILLS.search(source):
            item.add_marker(pytest.mark.kill)
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(autouse=True)
def _real_weights_need_the_marker(request, monkeypatch):
    if request.node.get_closest_marker("real_models"):
        return
    from tessy.backends.hf import HFBackend
    from tessy.models import DEMO_MODELS, cache_dir

    real_init = HFBackend.__init__

    def refuse_demo_weights(self, model, *args, **kwargs):
        if model in DEMO_MODELS or Path(model).resolve().is_relative_to((cache_dir() / "models").resolve()):
            raise AssertionError(f"{request.node.nodeid} loads the real {model} weights: mark it real_models")
        real_init(self, model, *args, **kwargs)

    monkeypatch.setattr(HFBackend, "__init__", refuse_demo_weights)


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


@pytest.fixture(scope="session")
def recipe():
    """The SFT recipe, examples/sft/train.py, loaded as a module (it is a script, not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "sft" / "train.py"
    spec = importlib.util.spec_from_file_location("sft_recipe", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sft_recipe"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
