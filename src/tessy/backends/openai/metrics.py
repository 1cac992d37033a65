"""The servers' own count of the prompt tokens they took in and found in their prefix cache.

A stream stopped at the cut ends before vLLM's last event, the only one whose usage says how much
of the prompt was cached, so with streaming (the default) the answers cannot say what the cache
saved (`cache`). The server's Prometheus counters can: vLLM serves them at `GET /metrics` always,
SGLang with `--enable-metrics`. `read` takes one reading of a server, (prompt tokens, of which
cached) since it started, or None when it serves no such counters (llama.cpp, a proxy, an API).

The backend reads each replica after its readiness check and again when the run ends
(`OpenAIHTTPBackend.read_server_counters`); the difference is what this run cost that server,
plus whatever other clients sent it meanwhile (the summary says the figure is the server's).
"""

from __future__ import annotations

from typing import Any, Iterator

#: (prompt tokens, cached prompt tokens) counter pairs, the first a server serves whole is used:
#: vLLM's v1 engine, older vLLM (cache queries and hits, in tokens), SGLang.
COUNTER_PAIRS = (
    ("vllm:prompt_tokens_total", "vllm:prompt_tokens_cached_total"),
    ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"),
    ("sglang:prompt_tokens_total", "sglang:cached_tokens_total"),
)


def parse(text: str) -> tuple[float, float] | None:
    """(prompt tokens, of which cached) from Prometheus text, summed over label sets (engines,
    cache tiers); None when it holds none of `COUNTER_PAIRS`."""
    sums: dict[str, float] = {}
    for name, value in _samples(text):
        sums[name] = sums.get(name, 0.0) + value
    for prompt, cached in COUNTER_PAIRS:
        if prompt in sums and cached in sums:
            return sums[prompt], sums[cached]
    return None


def _samples(text: str) -> Iterator[tuple[str, float]]:
    """(metric name, value) of each sample line (`name{labels} value [timestamp]`)."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, tail = line[: line.index("{")], line[line.rindex("}") + 1:]
        else:
            name, _, tail = line.partition(" ")
        fields = tail.split()
        try:
            yield name, float(fields[0])
        except (IndexError, ValueError):
            continue


async def read(client: Any, url: str, timeout_s: float = 10.0) -> tuple[float, float] | None:
    """One reading of the server at `url` (None when it has no such counters or does not answer:
    the counters are a report, never a reason to stop)."""
    try:
        answer = await client.request("GET", url + "/metrics", timeout_s=timeout_s)
    except Exception:  # noqa: BLE001 - any failure: no reading
        return None
    return parse(answer.text) if answer.status_code == 200 else None


class ServerCounters:
    """One role's replicas: their readings at the start, and (`add_since`) what was spent since,
    added to the role's `HTTPStats` (`server_prompt_tokens`, `server_prompt_cached`; the replicas
    read in `server_counted`, those another role read already in `server_shared`)."""

    def __init__(self, stats: Any):
        self.stats = stats
        self.start: dict[str, tuple[float, float]] = {}  # url -> reading

    def begin(self, urls: list[str], headers: dict[str, str]) -> None:
        """Read every replica now (from synchronous code, before the run)."""
        from tessy.backends.openai.client import HTTPClient, run_sync

        async def read_all() -> dict[str, tuple[float, float] | None]:
            async with HTTPClient(headers, 10.0) as client:
                return {url: await read(client, url) for url in urls}

        self.start = {url: reading for url, reading in run_sync(read_all).items() if reading is not None}

    async def add_since(self, client: Any, urls: list[str], read_already: set[str]) -> None:
        """Add what each replica counted since its last reading; a replica in `read_already` (another
        role's server too) is left to that role and counted as shared."""
        for url in urls:
            start = self.start.get(url)
            if start is None:
                continue
            if url in read_already:
                self.stats.server_shared += 1
                continue
            read_already.add(url)
            now = await read(client, url)
            if now is None or now[0] < start[0]:  # no answer, or the server was restarted: no figure
                continue
            self.stats.server_counted += 1
            self.stats.server_prompt_tokens += int(now[0] - start[0])
            self.stats.server_prompt_cached += int(now[1] - start[1])
            self.start[url] = now
