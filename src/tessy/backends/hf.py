"""In-process transformers backend: a causal LM with a KV cache per sequence, batched decoding.

Owns: the model and tokenizer, one KV cache per `seq_id` (a `DynamicCache` plus the exact token
ids it holds), and one worker thread where every torch call runs; the cache surgery is
`hf_cache`, the draw of a token `hf_sampling`. Promises, on top of `base`:

- A step costs its new tokens, not a re-prefill. `generate` finds the longest common prefix of the
  cached ids and `context_ids`, crops the cache to it and prefills only the rest. The last context
  token is always fed (its logits give the first new token), so a cache covering all of
  `context_ids` is cropped one token back. The cached ids are the truth, so a missed `rollback` or
  a changed context never gives wrong output, only extra prefill.
- Caches are plain full-attention `DynamicLayer`s, also for models with sliding-window layers
  (Gemma 3): the sliding window is applied by the attention mask, and any prefix can be cropped.
- Sampling (`hf_sampling`): a seeded draw depends only on the context, the seed and the position,
  never on how tokens were split into calls; unseeded, one `torch.Generator` per sequence.
- `stream` delivers each token as it is sampled; closing the stream stops the request after the
  forward in progress (the cache then holds those tokens until the caller's `rollback`).
- Concurrency: all torch work runs in ONE worker thread, so the event loop stays responsive.
  Requests waiting together are decoded together, one forward per step for up to `max_batch`
  rows: the rows' caches are left-padded into one batched cache, with an attention mask and
  per-row position ids; each row stops on its own. A request arriving mid-decode is prefilled
  and joins the batch at the next step. Prefill runs one sequence at a time.
- Shared prefixes (`share_prefix`, e.g. a voice's few-shot preamble): their cache is computed
  once, from exactly those ids in one forward, and a new sequence that starts with them starts
  from a copy of it, so only the rest of its prompt is prefilled. The same ids always give the
  same cached values, whatever order the prompts arrive in.
- `rollback` and `release` are queued in order with `generate` calls, so they take effect
  between the calls the caller made around them. Calling them for a sequence while its own
  `generate` is in flight is not supported (the engine never does).
- `stats` counts prefill tokens, decoded tokens, forwards and the largest batch seen.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tessy.backends.base import Backend, Generation, SamplingParams, TokenStream
from tessy.backends.hf_cache import common_prefix, crop, select, stack, unstack
from tessy.backends.hf_sampling import sample
from tessy.models import cache_argument, resolve_model


@dataclass
class BackendStats:
    prefill_tokens: int = 0  # context tokens fed to the model (cache misses)
    decode_tokens: int = 0  # sampled tokens fed back one step at a time
    forwards: int = 0  # model forward calls
    max_batch_seen: int = 0  # most rows decoded in one forward


@dataclass
class _Seq:
    """What the backend keeps for one sequence between calls."""

    cache: Any = None  # DynamicCache holding exactly `ids`
    ids: list[int] = field(default_factory=list)
    seed: int | None = None
    generator: Any = None


@dataclass
class _Request:
    seq_id: str
    context: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    stop: frozenset[int]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    started: float
    new: list[int] = field(default_factory=list)
    finish: str | None = None
    stream: "_HFStream | None" = None  # gets each token as it is sampled
    cancelled: bool = False  # set by the stream's owner: stop after the forward in progress


class HFBackend(Backend):
    """A transformers causal LM run in process (see the module docstring)."""

    # Capabilities (`base.Backend`): decodes token by token in process; no server, nothing to warm.
    streams_tokens = True
    warms_prompts = False
    transport = "in_process"

    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        max_context: int | None = None,
        max_batch: int = 8,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        self.model_name = model
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(self.device).eval()
        self._cache_arg = cache_argument(self.model) or "past_key_values"
        config = self.model.config.get_text_config(decoder=True)
        self.max_context = int(max_context or getattr(config, "max_position_embeddings", 0) or 2048)
        self.max_batch = max(1, int(max_batch))
        self.stats = BackendStats()
        self._seqs: dict[str, _Seq] = {}
        self._shared: list[tuple[list[int], Any]] = []  # shared prompt prefixes and their caches (built lazily)
        self._queue: deque = deque()  # ("gen", _Request) | ("rollback", seq_id, n) | ("release", seq_id)
        self._inflight: list[_Request] = []  # taken from the queue, not yet delivered
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessy-hf")

    # ---- the async interface (event loop side) -------------------------------------------------

    async def generate(
        self,
        seq_id: str,
        context_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        stop_token_ids: frozenset[int] = frozenset(),
    ) -> Generation:
        req = self._request(seq_id, context_ids, max_new_tokens, sampling, stop_token_ids)
        self._submit(("gen", req))
        new, finish = await req.future
        text = self.tokenizer.decode(new, skip_special_tokens=False)
        return Generation(new, text, finish, time.perf_counter() - req.started)

    def _request(self, seq_id: str, context_ids: list[int], max_new_tokens: int, sampling: SamplingParams,
                 stop_token_ids: frozenset[int]) -> "_Request":
        """A checked request for the worker (the context and budget must fit the model)."""
        if not context_ids:
            raise ValueError("generate needs at least one context token")
        if len(context_ids) + max_new_tokens > self.max_context:
            raise ValueError(
                f"context of {len(context_ids)} tokens + {max_new_tokens} new tokens exceeds "
                f"max_context={self.max_context} of {self.model_name}"
            )
        loop = asyncio.get_running_loop()
        return _Request(seq_id, list(context_ids), max_new_tokens, sampling, frozenset(stop_token_ids),
                        loop.create_future(), loop, time.perf_counter())

    def stream(
        self,
        seq_id: str,
        context_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        stop_token_ids: frozenset[int] = frozenset(),
    ) -> TokenStream:
        req = self._request(seq_id, context_ids, max_new_tokens, sampling, stop_token_ids)
        req.stream = _HFStream(req)
        self._submit(("gen", req))
        return req.stream

    def share_prefix(self, ids: list[int]) -> None:
        if len(ids) >= 2 and list(ids) not in (p for p, _ in self._shared):
            self._shared.append((list(ids), None))  # the cache is computed on the worker, when first used

    def rollback(self, seq_id: str, length: int) -> None:
        self._submit(("rollback", seq_id, int(length)))

    def release(self, seq_id: str) -> None:
        self._submit(("release", seq_id))

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        self._seqs.clear()

    def _submit(self, item: tuple) -> None:
        with self._lock:
            self._queue.append(item)
        self._executor.submit(self._drain)  # surplus drains find an empty queue and return

    # ---- worker thread ------------------------------------------------------------------------

    def _take(self, active: set[str], room: int) -> list[_Request]:
        """Pop queue items in order: apply cache operations, start up to `room` requests."""
        taken: list[_Request] = []
        with self._lock:
            while self._queue:
                item = self._queue[0]
                if item[0] == "gen":
                    req = item[1]
                    if req.cancelled:  # stopped before it started: nothing generated
                        req.loop.call_soon_threadsafe(_set_result, req.future, ([], "cancelled"))
                        self._queue.popleft()
                        continue
                    if len(taken) >= room or req.seq_id in active or any(r.seq_id == req.seq_id for r in taken):
                        break
                    taken.append(req)
                    self._inflight.append(req)
                elif item[1] in active or any(r.seq_id == item[1] for r in taken):
                    break  # wait until that sequence's generate is done
                elif item[0] == "rollback":
                    crop(self._seqs.get(item[1]), item[2])
                else:
                    self._seqs.pop(item[1], None)
                self._queue.popleft()
        return taken

    def _drain(self) -> None:
        import torch

        try:
            with torch.inference_mode():
                self._decode_loop()
        except BaseException as exc:  # fail the requests in flight; their caches may be half-updated
            for req in self._inflight:
                self._seqs.pop(req.seq_id, None)
                req.loop.call_soon_threadsafe(_set_exception, req.future, exc)
            self._inflight.clear()
            raise

    def _decode_loop(self) -> None:
        rows: list[_Request] = []  # requests being decoded, in batch order
        batch = None  # (cache, pads) of the rows, built when membership changes
        while True:
            new = self._take({r.seq_id for r in rows}, self.max_batch - len(rows))
            if new:
                if batch is not None:
                    self._unstack(rows, *batch)
                for req in new:
                    self._prefill(req)
                rows.extend(r for r in new if not self._finish_if_done(r))
                batch = stack([self._seqs[r.seq_id].cache for r in rows]) if rows else None
            if not rows:
                with self._lock:
                    if not self._queue:
                        return
                continue
            self._step(rows, *batch)
            done = [i for i, r in enumerate(rows) if self._finish_if_done(r)]
            if done:
                self._unstack([rows[i] for i in done], *select(batch, done))
                keep = [i for i in range(len(rows)) if i not in set(done)]
                rows[:] = [rows[i] for i in keep]
                batch = select(batch, keep) if rows else None

    def _prefill(self, req: _Request) -> None:
        """Crop the sequence's cache to its common prefix with the context (at most all but the
        last token), feed the rest in one forward, and sample the first new token."""
        import torch

        seq = self._seqs.setdefault(req.seq_id, _Seq())
        if seq.generator is None or seq.seed != req.sampling.seed:
            seq.seed = req.sampling.seed
            seq.generator = torch.Generator(device=self.device)
            if seq.seed is None:
                seq.generator.seed()
            else:
                seq.generator.manual_seed(seq.seed)
        if req.max_new_tokens <= 0:
            req.finish = "length"
            return
        keep = common_prefix(seq.ids, req.context)
        keep = min(keep, len(req.context) - 1)  # the last context token is always fed
        if keep == 0 or seq.cache is None:
            seq.cache, seq.ids = self._start_from_shared(req.context)
        else:
            crop(seq, keep)
        feed = req.context[len(seq.ids):]
        positions = torch.arange(len(seq.ids), len(req.context), device=self.device)[None]
        logits = self._forward(torch.tensor([feed], device=self.device), positions, None, seq.cache)
        self.stats.prefill_tokens += len(feed)
        seq.ids = list(req.context)
        self._append(req, sample(logits[0], req.sampling, len(req.context) + len(req.new), seq.generator))

    def _start_from_shared(self, context: list[int]) -> tuple[Any, list[int]]:
        """A fresh (cache, ids) for `context`: a copy of the longest shared prefix it starts with
        (leaving at least its last token to feed), else an empty cache."""
        import copy

        import torch
        from transformers import DynamicCache

        starts = [i for i, (ids, _) in enumerate(self._shared)
                  if len(ids) < len(context) and context[: len(ids)] == ids]
        if not starts:
            return DynamicCache(), []
        best = max(starts, key=lambda i: len(self._shared[i][0]))
        ids, cache = self._shared[best]
        if cache is None:
            cache = DynamicCache()
            self._forward(torch.tensor([ids], device=self.device), torch.arange(len(ids), device=self.device)[None],
                          None, cache)
            self.stats.prefill_tokens += len(ids)
            self._shared[best] = (ids, cache)
        return copy.deepcopy(cache), list(ids)

    def _step(self, rows: list[_Request], cache: Any, pads: list[int]) -> None:
        """Feed every row's last sampled token in one forward; sample each row's next token."""
        import torch

        length = cache.get_seq_length()
        tokens = torch.tensor([[r.new[-1]] for r in rows], device=self.device)
        positions = torch.tensor([[length - p] for p in pads], device=self.device)
        mask = None
        if any(pads):
            mask = torch.ones(len(rows), length + 1, dtype=torch.long, device=self.device)
            for i, p in enumerate(pads):
                mask[i, :p] = 0
        logits = self._forward(tokens, positions, mask, cache)
        self.stats.decode_tokens += len(rows)
        self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(rows))
        for i, r in enumerate(rows):
            self._seqs[r.seq_id].ids.append(r.new[-1])
            self._append(r, sample(logits[i], r.sampling, len(r.context) + len(r.new), self._seqs[r.seq_id].generator))

    @staticmethod
    def _append(req: _Request, token: int) -> None:
        req.new.append(token)
        if req.stream is not None:
            req.loop.call_soon_threadsafe(req.stream.push, token)

    def _forward(self, tokens, positions, mask, cache):
        out = self.model(
            input_ids=tokens, position_ids=positions, attention_mask=mask,
            use_cache=True, logits_to_keep=1, **{self._cache_arg: cache},
        )
        self.stats.forwards += 1
        return out.logits[:, -1, :].float()

    def _finish_if_done(self, req: _Request) -> bool:
        """Deliver the request if its last token is a stop token or it has enough tokens."""
        if req.finish is None:
            if req.cancelled:
                req.finish = "cancelled"
            elif req.new and req.new[-1] in req.stop:
                req.finish = "stop"
            elif len(req.new) >= req.max_new_tokens:
                req.finish = "length"
            else:
                return False
        self._inflight.remove(req)
        req.loop.call_soon_threadsafe(_set_result, req.future, (list(req.new), req.finish))
        return True

    def _unstack(self, rows: list[_Request], cache: Any, pads: list[int]) -> None:
        """Give each row its own (unpadded) cache back from the batched one."""
        if len(rows) == 1 and pads == [0] and self._seqs[rows[0].seq_id].cache is cache:
            return
        for r, own in zip(rows, unstack(cache, pads)):
            self._seqs[r.seq_id].cache = own


class _HFStream(TokenStream):
    """The tokens of one request as the worker thread samples them (see `base.TokenStream`)."""

    def __init__(self, req: _Request):
        self._req = req
        self._buffer: list[int] = []
        self._event = asyncio.Event()
        req.future.add_done_callback(lambda _: self._event.set())

    def push(self, token: int) -> None:  # event loop side, scheduled by the worker thread
        self._buffer.append(token)
        self._event.set()

    async def __anext__(self) -> list[int]:
        while True:
            if self._buffer:  # every token pushed before the request finished arrives first
                chunk, self._buffer = self._buffer, []
                return chunk
            if self._req.future.done():
                self._finish()
                raise StopAsyncIteration
            self._event.clear()
            await self._event.wait()

    async def aclose(self) -> None:
        self._req.cancelled = True
        await asyncio.shield(self._req.future)
        self._finish()

    def _finish(self) -> None:
        new, self.finish_reason = self._req.future.result()
        self.generated = len(new)


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
