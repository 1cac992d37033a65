"""`stream: true` for `/v1/completions`: a request's tokens as server-sent events, stopped when the
engine's cut is certain (`base.TokenStream`).

Owns reading one streamed answer. Promises:

- **Same ids as `generate`**: when the stream ends, its chunks join to what `parse.parse_choice`
  makes of the whole answer (the text and ids joined, the finish, the stop id appended where the
  server does not echo it). Exact ids (`token_ids` or logprobs `token_id:N` in each event) are
  delivered as they come; a stream that should carry ids and does not is a `ServerError`, never
  re-tokenized. In text transport the text so far is tokenized locally and only ids that later
  text cannot change are delivered (all but the last `HOLD` tokens, ending on a whole character
  that starts the text); should a later tokenization still disagree, the rest is the
  tokenization of the remaining text, so the text kept is always the text the server wrote.
- **Stopping**: `aclose()` before the end closes the connection (the server stops generating
  when it sees the client gone), frees the in-flight slot and ends with "cancelled".
- **Faults** before the first event are retried like `generate`'s (`exchange`, the one retry
  loop); after it, the stream ends there with "length" (the tokens are the model's; the engine
  asks again from them).
- `stats`: requests, completions, prompt usage (from the last event that carries usage; a stream
  stopped before vLLM's final usage event counts its cache use as unknown, see `cache`) and
  completion tokens, as `generate` counts them.

What a stream needs of the backend that made it is `StreamHost`, public members only (the backend
imports this module, never the reverse).
"""

from __future__ import annotations

from typing import Any, Protocol

from tessy.backends.base import SamplingParams, TokenStream
from tessy.backends.openai import parse
from tessy.backends.openai.exchange import Events
from tessy.backends.openai.retry import ServerError


class StreamHost(Protocol):
    """What a stream uses of its backend (`OpenAIHTTPBackend`): the one request path (`complete`,
    with `stream=True`), how ids come back, and the accounting of what was answered."""

    tokenizer: Any
    readback: str  # "return_token_ids", "logprobs" or "text"

    async def complete(self, seq_id: str, context_ids: list[int], max_new_tokens: int, sampling: SamplingParams,
                       stop_token_ids: frozenset[int], *, stream: bool = False) -> tuple[int, "Events | Any"]: ...

    def answered(self, seq_id: str, answer: dict, context_ids: list[int], ids: list[int],
                 generated: int | None = None, whole: bool = True) -> None: ...


#: Text transport: the last tokens of the text so far are held back (a later character may merge them).
HOLD = 2


class HTTPTokenStream(TokenStream):
    def __init__(self, backend: StreamHost, seq_id: str, context_ids: list[int], n: int,
                 sampling: SamplingParams, stop: frozenset[int]):
        self.backend, self.seq_id, self.context = backend, seq_id, list(context_ids)
        self.n, self.sampling, self.stop = int(n), sampling, frozenset(stop)
        self._gen: Any = None

    async def __anext__(self) -> list[int]:
        if self._gen is None:
            self._gen = self._run()
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()
        if self.finish_reason is None:
            self.finish_reason = "cancelled"

    async def _run(self):
        backend = self.backend
        readback, tokenizer = backend.readback, backend.tokenizer
        exact = readback in ("return_token_ids", "logprobs")
        n, events = await backend.complete(self.seq_id, self.context, self.n, self.sampling, self.stop, stream=True)
        if events is None:  # no token fits the server's context
            self.finish_reason = "length"
            return
        text, ids, delivered = "", [], []
        finish, stop_reason, usage = None, None, None
        unstable = False  # text transport: a tokenization disagreed with what was delivered
        try:
            async for event in events:
                if "usage" in event and event.get("usage") or "timings" in event:
                    usage = event
                choices = event.get("choices")
                if not choices or not isinstance(choices[0], dict):
                    continue
                choice = choices[0]
                piece = choice.get("text") or ""
                text += piece
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
                    stop_reason = choice.get("stop_reason", choice.get("matched_stop", stop_reason))
                if exact:
                    new = _event_ids(choice, readback)
                    if new is None:
                        if piece:
                            raise ServerError(f"{events.where}: a streamed event carries text but no token ids")
                        new = []
                    ids += new
                    candidate = ids[:n]
                elif unstable:
                    continue
                else:
                    candidate = _stable_ids(tokenizer, text, n)
                    if candidate[: len(delivered)] != delivered:
                        unstable = True
                        continue
                if len(candidate) > len(delivered):
                    chunk = candidate[len(delivered):]
                    delivered += chunk
                    self.generated = len(delivered)
                    yield chunk
            if events.fault:
                finish = None  # ended by a fault: the tokens so far, as if cut by the length
            choice = {"text": text, "finish_reason": finish or "length", "stop_reason": stop_reason}
            if readback == "return_token_ids":
                choice["token_ids"] = ids
            elif readback == "logprobs":
                choice["logprobs"] = {"tokens": [f"token_id:{i}" for i in ids]}
            final, _, finish_reason = parse.parse_choice(choice, readback, tokenizer, n, self.stop)
            if final[: len(delivered)] != delivered:  # text transport: go on from the text delivered
                done = tokenizer.decode(delivered, skip_special_tokens=False)
                rest = {"text": text[len(done):], "finish_reason": finish or "length", "stop_reason": stop_reason}
                final, _, finish_reason = parse.parse_choice(rest, "text", tokenizer, n - len(delivered), self.stop)
                final = delivered + final
            chunk = final[len(delivered):]
            delivered += chunk
            self.generated = max(len(delivered), len(ids))
            self.finish_reason = finish_reason
            backend.answered(self.seq_id, usage or {}, self.context, delivered, whole=events.finished)
            if chunk:
                yield chunk
        finally:
            if self.finish_reason is None:  # stopped by the caller (or failed)
                self.generated = max(len(delivered), len(ids) if exact else
                                     len(tokenizer.encode(text, add_special_tokens=False)) if text else 0)
                backend.answered(self.seq_id, usage or {}, self.context, delivered, self.generated, whole=False)
            await events.aclose()


def _event_ids(choice: dict, readback: str) -> list[int] | None:
    if readback == "return_token_ids":
        ids = choice.get("token_ids")
        return [int(i) for i in ids] if isinstance(ids, list) else None
    return parse.ids_from_logprobs(choice)


def _stable_ids(tokenizer: Any, text: str, n: int) -> list[int]:
    """Ids of the text so far that later text will not change: all but the last HOLD tokens, at
    most n, decoding to whole characters that start `text`."""
    ids = tokenizer.encode(text, add_special_tokens=False) if text else []
    ids = ids[: max(0, min(n, len(ids) - HOLD))]
    while ids:
        decoded = tokenizer.decode(ids, skip_special_tokens=False)
        if not decoded.endswith(parse.REPLACEMENT) and text.startswith(decoded):
            break
        ids.pop()
    return ids
