"""The backend interface: a model that continues token sequences.

A backend owns nothing about the TESSY loop. The engine keeps each sample's token ids (the
truth); a backend is asked to continue a sequence it may have seen before (`seq_id`) and may
keep a cache for it (a KV cache in process, a prefix cache on a server). Promises:

- `generate` returns at most `max_new_tokens` new token ids, exactly as the model sampled
  them (never re-tokenized), with their decoded text and why generation stopped;
- a stop token, when hit, is the last id returned and `finish_reason` is "stop";
- `rollback(seq_id, length)` drops any cached state past `length` tokens, so the next call
  costs only the tokens after the kept prefix; `release(seq_id)` forgets the sequence.
- `stream` is `generate` delivered in chunks that the caller may stop early (`TokenStream`): the
  chunks join to what `generate` would return for the same call, up to where the caller stopped.
  The default delivers `generate` as one chunk, so every backend streams; a backend that decodes
  token by token (`hf`) delivers tokens as they come and stops generating when asked.
- `warm(seq_id, context_ids)` may read a sequence's context into the cache ahead of its first
  request (`warms_prompts` says whether it does anything), so the engine can have one model read
  the prompt while the other writes; it never changes what `generate` returns.

Capabilities are declared, never probed: each backend sets `streams_tokens`, `warms_prompts`,
`served_model`, `transport` and, when it talks to servers, `server_counters()`; callers read
them as attributes of every `Backend` (the defaults below describe an in-process model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Awaitable


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are drawn. `seed` makes a sample's draws reproducible."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0  # 0 disables top-k
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class Generation:
    """New tokens from one `generate` call."""

    token_ids: list[int]
    text: str
    finish_reason: str  # "length": hit max_new_tokens; "stop": a stop token was sampled
    seconds: float = 0.0


class Backend(ABC):
    """A causal LM behind a small async interface (see the module docstring)."""

    #: Name of the model, for records.
    model_name: str
    #: A Hugging Face tokenizer for this model (used to decode, and to tokenize handed-over text).
    tokenizer: Any
    #: Longest sequence (prompt + response) the model accepts, in its own tokens.
    max_context: int
    #: Whether `stream` delivers tokens as they are made (so a caller's stop saves the rest).
    streams_tokens: bool = False
    #: Whether `warm` reads a context ahead into a cache that the sequence's next request finds.
    warms_prompts: bool = False
    #: The model id the server reports serving ("" in process): records name it, a resume checks it.
    served_model: str = ""
    #: How the model is reached, for records: "in_process", or the HTTP transport ("token_ids", "text", ...).
    transport: str = "in_process"

    def server_counters(self) -> dict[str, int]:
        """Live counters of a model behind servers (retries, faults, replicas down, prompt tokens,
        ...), for the progress line and the run report; {} for a model run in process."""
        return {}

    async def read_server_counters(self, read_already: set[str]) -> None:
        """At a run's end: add to `server_counters` what the servers' own counters say the run cost
        them (servers whose URL is in `read_already` were read for another role; add the ones
        read). Nothing for a model run in process."""

    @abstractmethod
    async def generate(
        self,
        seq_id: str,
        context_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        stop_token_ids: frozenset[int] = frozenset(),
    ) -> Generation:
        """Continue `context_ids` by at most `max_new_tokens` tokens."""

    def stream(
        self,
        seq_id: str,
        context_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        stop_token_ids: frozenset[int] = frozenset(),
    ) -> "TokenStream":
        """`generate`, delivered in chunks that the caller may stop (default: one chunk)."""
        return OneChunk(self.generate(seq_id, context_ids, max_new_tokens, sampling, stop_token_ids))

    def share_prefix(self, ids: list[int]) -> None:
        """Token ids that start many prompts (a voice's preamble): a backend may compute their
        state once and start every such sequence from it (no-op by default; servers have their
        own prefix caches)."""

    async def warm(self, seq_id: str, context_ids: list[int]) -> None:
        """Read `context_ids` into `seq_id`'s cache before its first request (no-op by default)."""

    def rollback(self, seq_id: str, length: int) -> None:
        """Forget cached state past the first `length` tokens of `seq_id` (no-op by default)."""

    def release(self, seq_id: str) -> None:
        """Forget everything cached for `seq_id` (no-op by default)."""

    async def aclose(self) -> None:
        """Free resources held by the backend."""


class ServersUnavailable(RuntimeError):
    """No server of a role answered within the configured wait (every replica down). Not the
    sample's fault: a runner stops taking samples and does not count it as a failed attempt."""


class TokenStream:
    """New token ids of one request, chunk by chunk: `async for chunk in stream`.

    `aclose()` stops the request (generation ends soon after; tokens made meanwhile are never
    delivered) and waits until it has. After the last chunk or `aclose()`, `finish_reason` is
    "stop", "length" or "cancelled" and `generated` counts every token the model generated for the
    request, delivered or not. A stop token, when hit, is the last id of the last chunk.
    """

    finish_reason: str | None = None
    generated: int = 0

    def __aiter__(self) -> "TokenStream":
        return self

    async def __anext__(self) -> list[int]:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Stop the request and wait until it has stopped."""


class OneChunk(TokenStream):
    """A whole `generate` call as a stream of one chunk (it cannot be stopped part-way)."""

    def __init__(self, call: Awaitable[Generation]):
        self._call = call
        self._done = False

    async def __anext__(self) -> list[int]:
        if self._done:
            raise StopAsyncIteration
        self._done = True
        generation = await self._call
        self.finish_reason, self.generated = generation.finish_reason, len(generation.token_ids)
        return list(generation.token_ids)

    async def aclose(self) -> None:
        if not self._done:  # never started: nothing was generated
            self._done = True
            self._call.close()
            self.finish_reason = "cancelled"
