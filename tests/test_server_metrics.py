"""The servers' own prompt-cache counters (`backends.openai.metrics`): Prometheus text as vLLM and
SGLang write it, and a run's figure as the difference of two readings. Against a real vLLM:
tests/test_vllm_server.py."""

from __future__ import annotations

import asyncio

from tessy.backends.openai import metrics
from tessy.backends.openai.stats import HTTPStats

VLLM = """# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="smollm2 135m"} 1039.0
vllm:prompt_tokens_cached_total{engine="0",model_name="smollm2 135m"} 512.0
vllm:prefix_cache_queries_total{engine="0",model_name="smollm2 135m"} 1039.0
vllm:prefix_cache_hits_total{engine="0",model_name="smollm2 135m"} 500.0
vllm:generation_tokens_total{engine="0",model_name="smollm2 135m"} 300.0
"""
SGLANG = """sglang:prompt_tokens_total{model_name="m",engine_type="unified",tp_rank="0"} 8.128902e+06
sglang:cached_tokens_total{model_name="m",engine_type="unified",cache_source="device"} 1.0e+06
sglang:cached_tokens_total{model_name="m",engine_type="unified",cache_source="host"} 2.5e+05
"""


def test_parse_reads_vllm_and_sglang_counters():
    assert metrics.parse(VLLM) == (1039.0, 512.0)  # the v1 pair first
    older = "\n".join(line for line in VLLM.splitlines() if "prompt_tokens" not in line)
    assert metrics.parse(older) == (1039.0, 500.0)
    assert metrics.parse(SGLANG) == (8.128902e06, 1.25e06)  # summed over cache tiers
    assert metrics.parse("llamacpp:prompt_tokens_total 12\nnot a sample line\n") is None
    assert metrics.parse("") is None


class _Answer:
    def __init__(self, text, status_code=200):
        self.text, self.status_code = text, status_code


class _Client:
    """Answers GET /metrics from a dict of url -> text (a missing url fails as a dead server)."""

    def __init__(self, pages):
        self.pages = pages

    async def request(self, method, url, timeout_s=None):
        assert method == "GET" and url.endswith("/metrics")
        page = self.pages[url[: -len("/metrics")]]
        if isinstance(page, Exception):
            raise page
        return _Answer(page)


def _reading(prompt, cached):
    return f'vllm:prompt_tokens_total{{engine="0"}} {prompt}\nvllm:prompt_tokens_cached_total{{engine="0"}} {cached}\n'


def test_a_run_adds_what_each_server_counted_since_its_start():
    stats = HTTPStats()
    counters = metrics.ServerCounters(stats)
    counters.start = {"http://a": (100.0, 10.0), "http://b": (50.0, 0.0), "http://gone": (1.0, 0.0)}
    client = _Client({"http://a": _reading(400, 110), "http://b": _reading(20, 0),  # b restarted: no figure
                      "http://gone": OSError("refused")})
    read_already = {"http://shared"}
    counters.start["http://shared"] = (0.0, 0.0)
    urls = ["http://a", "http://b", "http://gone", "http://shared", "http://never-read"]
    asyncio.run(counters.add_since(client, urls, read_already))
    assert (stats.server_prompt_tokens, stats.server_prompt_cached) == (300, 100)
    assert (stats.server_counted, stats.server_shared) == (1, 1)
    assert "http://a" in read_already and counters.start["http://a"] == (400.0, 110.0)
    counts = stats.counters()
    assert counts["server_prompt_tokens"] == 300 and counts["server_prompt_cached"] == 100
