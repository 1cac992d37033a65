"""A loopback vLLM-shaped server that simulates a GPU server's continuous-batching cost.

What it owns: `SimServer`, the fake server of tests/fake_openai_server.py (same HTTP, same
answers: `responder`/script, stop id, `max_tokens`, finish reasons, the SSE event shapes, vLLM's
context-length error) with its answers paced by one simulated engine instead of sent at once.
It promises that a scheduler driving it sees what it would see at GPU-like concurrency: many
requests sharing each decode step, a prefix cache that makes extending a context cheap, and a
stream that the client closes leaving the batch at once.

The engine (one asyncio task per server) ticks in steps. Every admitted request, streaming or
not, is in the running batch (at most `max_batch`; the rest wait in FIFO order for a free slot)
and gets its next token each step. A step costs

    step_ms  +  decode_us_per_token x running requests  +  prefill_us_per_token x new prompt tokens

where the new prompt tokens are those of the requests admitted this step that the prefix cache
did not hold; the engine `asyncio.sleep`s that long. The prefix cache works like vLLM's automatic
prefix caching: sequences (prompt, then prompt + generated tokens when a request ends) are kept
as chained hashes of full `block_size`-token blocks, LRU, at most `cache_tokens` tokens; a prompt's
cached part is its leading run of known blocks (never its last token, which is always computed).
It is reported vLLM's way, `usage.prompt_tokens_details.cached_tokens`, in plain answers and in
the stream's usage event. A client that closes its connection is dropped from the batch (or the
queue) before the next step is costed and counted in `cancelled`.

`GET /sim/stats` answers the counters: steps, busy_s (simulated time slept), generated_tokens,
prefill_tokens, cached_tokens, requests, cancelled, max_running (and running/waiting now).
`GET /metrics` answers the prompt tokens taken in and found cached as vLLM's Prometheus counters
(`vllm:prompt_tokens_total`, `vllm:prompt_tokens_cached_total`): like vLLM, a stream closed at
the cut never gets the cache figure of its last event, so tessy reads these.

These figures are simulated time from the cost model above, not measurements of a GPU: they show
how a client's scheduling shapes the batch (how full the steps are, how much prefill it causes),
not how fast any real server is. Simplifications: no chunked prefill or token budget per step, no
KV-memory limit on admission, cached blocks of running requests may be evicted, no faults.

Run `python -m bench.gpu_sim_server --help`: it prints its port on the first line of stdout and
serves until killed, like `python -m tests.fake_openai_server`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/ when run as a script

from tests.fake_openai_server import (FakeOpenAIServer, add_script_arguments, script_options,  # noqa: E402
                                      serve_until_killed)

#: Run lengths (longest first) by which `follow_text` finds where a prompt leaves the script.
FOLLOW = (6, 4, 3, 2)

STATS = ("steps", "busy_s", "generated_tokens", "prefill_tokens", "cached_tokens", "requests",
         "cancelled", "max_running")


class _Request:
    def __init__(self, prompt: list[int], ids: list[int], reader, writer):
        self.prompt, self.ids, self.reader, self.writer = prompt, ids, reader, writer
        self.produced = 0  # tokens the engine has generated for it
        self.cached = 0
        self.state = "waiting"  # then "running", and "done" or "cancelled"
        self.event = asyncio.Event()  # set whenever produced or state changes

    def gone(self) -> bool:
        return self.reader.at_eof() or self.writer.is_closing()


class SimServer(FakeOpenAIServer):
    def __init__(self, model: str = "fake-model", *, step_ms: float = 8.0, decode_us_per_token: float = 300.0,
                 prefill_us_per_token: float = 30.0, max_batch: int = 256, cache_tokens: int = 2_000_000,
                 block_size: int = 16, follow_text: bool = False, **kwargs: Any):
        kwargs.setdefault("keep_requests", False)
        super().__init__(model, **kwargs)
        self.cache_style = ""  # our own prefix cache reports vLLM-style, not the fake's slot cache
        self.step_s = step_ms / 1e3
        self.decode_s = decode_us_per_token / 1e6
        self.prefill_s = prefill_us_per_token / 1e6
        self.max_batch = max(1, int(max_batch))
        self.block_size = max(1, int(block_size))
        self.cache_blocks = max(0, int(cache_tokens) // self.block_size)
        self.blocks: OrderedDict[int, None] = OrderedDict()  # chained block hash -> None, LRU order
        self.stats: dict[str, float] = dict.fromkeys(STATS, 0)
        self._engine: asyncio.Task | None = None
        self.follow_text = follow_text
        # Where each run of `FOLLOW` script tokens first ends (the script read cyclically), for `responder`.
        cycled = self.script + self.script[:max(FOLLOW)]
        self._after: dict[tuple[int, ...], int] = {}
        for n in FOLLOW:
            for end in range(n, len(cycled) + 1):
                self._after.setdefault(tuple(cycled[end - n:end]), end % len(self.script))

    # ---- script ------------------------------------------------------------------------------

    def responder(self, prompt_ids: list[int], max_tokens: int) -> list[int]:
        """With `follow_text`, a model that continues the text it is given: the script goes on
        after the prompt's last tokens where they are found in it (the longest run of `FOLLOW`
        that is), else from the prompt's length. Both servers write the same text in their own
        tokens, so a hand-over goes on where the other model stopped, as real models do; without
        it each server's script runs by its own prompt length, out of step with the other's text,
        and hand-overs come out empty or a token long."""
        start = None
        if self.follow_text and not (self.stop_id is not None and len(prompt_ids) >= self.stop_at):
            start = next((self._after[tail] for n in FOLLOW if len(prompt_ids) >= n
                          and (tail := tuple(prompt_ids[-n:])) in self._after), None)
        if start is None:
            return super().responder(prompt_ids, max_tokens)
        return [self.script[(start + i) % len(self.script)] for i in range(max_tokens)]

    # ---- prefix cache ------------------------------------------------------------------------

    def _hashes(self, ids: list[int]) -> list[int]:
        """Chained hashes of the full blocks of `ids`: a block's hash names its whole prefix."""
        out, h, b = [], 0, self.block_size
        for start in range(0, len(ids) - b + 1, b):
            h = hash((h, tuple(ids[start:start + b])))
            out.append(h)
        return out

    def _lookup(self, prompt: list[int]) -> int:
        cached = 0
        for h in self._hashes(prompt[:-1]):  # the last prompt token is always computed
            if h not in self.blocks:
                break
            self.blocks.move_to_end(h)
            cached += self.block_size
        return cached

    def _remember(self, ids: list[int]) -> None:
        for h in self._hashes(ids):
            self.blocks[h] = None
            self.blocks.move_to_end(h)
        while len(self.blocks) > self.cache_blocks:
            self.blocks.popitem(last=False)

    # ---- engine ------------------------------------------------------------------------------

    def _submit(self, req: _Request) -> None:
        if self._engine is None or self._engine.done():  # first request, or after stop()/start()
            self._running: list[_Request] = []
            self._waiting: deque[_Request] = deque()
            self._wake = asyncio.Event()
            self._engine = asyncio.get_running_loop().create_task(self._run_engine())
        self.stats["requests"] += 1
        self._waiting.append(req)
        self._wake.set()

    def _cancel(self, req: _Request) -> None:
        if req.state == "running":  # its computed blocks stay in the prefix cache, as in vLLM
            self._remember(req.prompt + req.ids[:req.produced])
        req.state = "cancelled"
        req.event.set()
        self.stats["cancelled"] += 1

    async def _run_engine(self) -> None:
        while True:
            # Closed connections leave before the step is costed: they stop costing decode time.
            for req in [r for r in (*self._running, *self._waiting) if r.gone()]:
                self._cancel(req)
            self._running = [r for r in self._running if r.state == "running"]
            self._waiting = deque(r for r in self._waiting if r.state == "waiting")
            prefill = 0
            while self._waiting and len(self._running) < self.max_batch:
                req = self._waiting.popleft()
                req.cached = self._lookup(req.prompt)
                prefill += len(req.prompt) - req.cached
                self.stats["cached_tokens"] += req.cached
                self._remember(req.prompt)  # shared by later requests with this prefix
                req.state = "running"
                self._running.append(req)
            if not self._running:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.stats["prefill_tokens"] += prefill
            self.stats["max_running"] = max(self.stats["max_running"], len(self._running))
            cost = self.step_s + self.decode_s * len(self._running) + self.prefill_s * prefill
            await asyncio.sleep(cost)  # the simulated GPU time of this step
            self.stats["steps"] += 1
            self.stats["busy_s"] += cost
            for req in self._running:
                if req.state != "running":
                    continue
                if req.produced < len(req.ids):
                    req.produced += 1
                    self.stats["generated_tokens"] += 1
                if req.produced >= len(req.ids):
                    req.state = "done"
                    self._remember(req.prompt + req.ids)
                req.event.set()

    # ---- HTTP --------------------------------------------------------------------------------

    async def _respond(self, writer, method: str, path: str, headers: dict, raw: bytes) -> bool:
        if method == "GET" and path == "/sim/stats":
            running = len(getattr(self, "_running", ()))
            waiting = len(getattr(self, "_waiting", ()))
            return self._send(writer, 200, {**self.stats, "running": running, "waiting": waiting})
        if method == "GET" and path == "/metrics":  # vLLM's own counters: prompt tokens taken in, of them cached
            taken, cached = self.stats["prefill_tokens"] + self.stats["cached_tokens"], self.stats["cached_tokens"]
            page = (f"vllm:prompt_tokens_total{{engine=\"0\"}} {taken}.0\n"
                    f"vllm:prompt_tokens_cached_total{{engine=\"0\"}} {cached}.0\n")
            return self._send_raw(writer, 200, page.encode())
        return await super()._respond(writer, method, path, headers, raw)

    async def _completion(self, writer, body: Any) -> bool:
        reader = self._reader  # this connection's (read before any await: the attribute is shared)
        stream = self.streaming and isinstance(body, dict) and bool(body.get("stream"))
        # The fake decides the answer (tokens, finish, usage); "stream" keeps its ids in `_ids`.
        status, answer = self._complete(dict(body, stream=True) if isinstance(body, dict) else body)
        if status != 200:
            return self._send(writer, status, answer)
        prompt = body["prompt"]
        prompt_ids = [int(i) for i in prompt] if isinstance(prompt, list) else [ord(c) for c in str(prompt)]
        req = _Request(prompt_ids, answer.pop("_ids"), reader, writer)
        self._submit(req)
        if stream:
            return await self._stream_steps(writer, body, answer, req)
        while req.state in ("waiting", "running"):
            req.event.clear()
            await req.event.wait()
        if req.state == "cancelled":
            return False
        answer["usage"]["prompt_tokens_details"] = {"cached_tokens": req.cached}
        return self._send(writer, 200, answer)

    async def _stream_steps(self, writer, body: dict, answer: dict, req: _Request) -> bool:
        """The fake's `_stream` events, each sent as the engine's step produces its token."""
        choice, ids = answer["choices"][0], req.ids
        text_ids = ids[:-1] if choice["finish_reason"] == "stop" else ids
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")

        def event(data: Any) -> None:
            raw = b"data: " + (data if isinstance(data, bytes) else json.dumps(data).encode()) + b"\n\n"
            writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")

        base = {key: answer[key] for key in ("id", "object", "created", "model")}
        shown, sent = "", 0
        self.streamed.append(0)
        while True:
            if req.state == "cancelled" or writer.is_closing():
                self.counts["stream_cancelled"] = self.counts.get("stream_cancelled", 0) + 1
                return False
            if req.produced > sent:  # admitted: its cached prefix is known
                answer["usage"]["prompt_tokens_details"] = {"cached_tokens": req.cached}
            for index in range(sent, req.produced):
                data, shown = self.token_event(body, answer, base, ids, text_ids, index, shown)
                event(data)
                self.streamed[-1] += 1
            sent = req.produced
            await writer.drain()
            if req.state == "done" and sent == req.produced:
                break
            if sent == req.produced and req.state in ("waiting", "running"):
                req.event.clear()  # no await since the checks above: no wake-up is lost
                await req.event.wait()
        event({**base, "choices": [{"index": 0, "text": "", "logprobs": None,
                                    "finish_reason": choice["finish_reason"], "stop_reason": choice["stop_reason"]}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            answer["usage"]["prompt_tokens_details"] = {"cached_tokens": req.cached}
            event({**base, "choices": [], "usage": answer["usage"]})
        event(b"[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the GPU-cost simulating server until killed; "
                                                 "prints its port on the first line.")
    add_script_arguments(parser)
    parser.add_argument("--step-ms", type=float, default=8.0, help="fixed cost of each engine step")
    parser.add_argument("--decode-us-per-token", type=float, default=300.0, help="per running request, per step")
    parser.add_argument("--prefill-us-per-token", type=float, default=30.0, help="per uncached prompt token")
    parser.add_argument("--max-batch", type=int, default=256, help="most requests running at once")
    parser.add_argument("--cache-tokens", type=int, default=2_000_000, help="prefix cache capacity")
    parser.add_argument("--block-size", type=int, default=16, help="prefix cache block (tokens)")
    parser.add_argument("--follow-text", action="store_true",
                        help="continue the script where the prompt's text leaves it (see SimServer.responder)")
    args = parser.parse_args()
    server = SimServer(
        args.model, **script_options(args), step_ms=args.step_ms, decode_us_per_token=args.decode_us_per_token,
        prefill_us_per_token=args.prefill_us_per_token, max_batch=args.max_batch,
        cache_tokens=args.cache_tokens, block_size=args.block_size,
        follow_text=args.follow_text)
    serve_until_killed(server, args.port)

if __name__ == "__main__":
    main()
