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
- **Faults** before any event are retried like `generate`'s; after tokens came, the stream ends
  there with "length" (the tokens are the model's; the engine asks again from them).
- `stats`: requests, completions, prompt usage (from a usage event when the server sends one)
  and completion tokens, as `generate` counts them.

What a stream needs of the backend that made it is `StreamHost` (the backend imports this
module, never the reverse).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from tessy.backends.base import SamplingParams, TokenStream
from tessy.backends.openai import parse
from tessy.backends.openai.exchange import Exchange
from tessy.backends.openai.retry import ServerError


class StreamHost(Protocol):
    """What a stream uses of its backend (`OpenAIHTTPBackend`): the request body, the send loop
    (`exchange`: opening, faults, retries, redaction), and the accounting of what was answered."""

    role: str
    tokenizer: Any
    llama_cpp: bool
    _id_readback: str
    exchange: Exchange

    def request_body(self, context_ids: list[int], max_new_tokens: int, sampling: SamplingParams,
                     stop_token_ids: frozenset[int], seq_id: str = "") -> dict[str, Any]: ...

    def _learn_context_limit(self, message: str, context_len: int, n: int) -> int: ...

    def _answered(self, seq_id: str, answer: dict, context_ids: list[int], ids: list[int],
                  generated: int | None = None) -> None: ...


#: Text transport: the last tokens of the text so far are held back (a later character may merge them).
HOLD = 2


def event_data(line: bytes) -> dict | str | None:
    """One SSE line: its JSON data, "[DONE]", or None (comments, blank lines, other fields)."""
    if not line.startswith(b"data:"):
        return None
    data = line[5:].strip()
    if data == b"[DONE]":
        return "[DONE]"
    try:
        value = json.loads(data)
    except ValueError:
        raise ValueError(f"an event that is not JSON: {parse.snippet(data.decode('utf-8', 'replace'))}") from None
    return value if isinstance(value, dict) else None


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
        backend, n = self.backend, self.n
        exact = backend._id_readback in ("return_token_ids", "logprobs")
        tokenizer = backend.tokenizer
        attempt = 0
        while True:
            if n <= 0:
                self.finish_reason = "length"
                return
            body = backend.request_body(self.context, n, self.sampling, self.stop, self.seq_id)
            body["stream"] = True
            # The usage so far on every event, so a stream closed at the cut still counts what its
            # prompt cost: llama.cpp's timings_per_token; vLLM's and SGLang's continuous_usage_stats.
            if backend.llama_cpp:
                body["timings_per_token"] = True
            else:
                body["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
            opened = await backend.exchange.open_stream(self.seq_id, body)
            if isinstance(opened, str):  # a context-length refusal
                n = backend._learn_context_limit(opened, len(self.context), n)
                continue
            replica, connection, response, release = opened
            text, ids, delivered = "", [], []
            finish, stop_reason, usage = None, None, None
            unstable = False  # text transport: a tokenization disagreed with what was delivered
            received = False
            fault = ""
            try:
                try:
                    async for line in response.lines():
                        event = event_data(line)
                        if event is None:
                            continue
                        if event == "[DONE]":
                            await response.read()  # to the body's end: the connection may be kept
                            break
                        if "usage" in event and event.get("usage") or "timings" in event:
                            usage = event
                        choices = event.get("choices")
                        if not choices or not isinstance(choices[0], dict):
                            continue
                        choice = choices[0]
                        received = True
                        piece = choice.get("text") or ""
                        text += piece
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                            stop_reason = choice.get("stop_reason", choice.get("matched_stop", stop_reason))
                        if exact:
                            new = _event_ids(choice, backend._id_readback)
                            if new is None:
                                if piece:
                                    raise ServerError(f"{backend.role} server {replica.shown}: a streamed event "
                                                      "carries text but no token ids")
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
                except ServerError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the connection failed mid-stream
                    fault = f"{type(exc).__name__}: {backend.exchange.redact(exc)}"
                    finish = None
                if fault:
                    backend.exchange.count_fault(fault)
                    if not received:
                        attempt += 1
                        await backend.exchange.charge_retry(self.seq_id, replica, attempt, fault)
                        continue
                choice = {"text": text, "finish_reason": finish or "length", "stop_reason": stop_reason}
                if backend._id_readback == "return_token_ids":
                    choice["token_ids"] = ids
                elif backend._id_readback == "logprobs":
                    choice["logprobs"] = {"tokens": [f"token_id:{i}" for i in ids]}
                final, _, finish_reason = parse.parse_choice(choice, backend._id_readback, tokenizer, n, self.stop)
                if final[: len(delivered)] != delivered:  # text transport: go on from the text delivered
                    done = tokenizer.decode(delivered, skip_special_tokens=False)
                    rest = {"text": text[len(done):], "finish_reason": finish or "length", "stop_reason": stop_reason}
                    final, _, finish_reason = parse.parse_choice(rest, "text", tokenizer, n - len(delivered), self.stop)
                    final = delivered + final
                chunk = final[len(delivered):]
                delivered += chunk
                self.generated = max(len(delivered), len(ids))
                self.finish_reason = finish_reason
                backend._answered(self.seq_id, usage or {}, self.context, delivered)
                if chunk:
                    yield chunk
                return
            finally:
                if self.finish_reason is None and not fault:  # stopped by the caller (or failed)
                    self.generated = max(len(delivered), len(ids) if exact else
                                         len(tokenizer.encode(text, add_special_tokens=False)) if text else 0)
                    backend._answered(self.seq_id, usage or {}, self.context, delivered, self.generated)
                release(response.complete and not fault)


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
