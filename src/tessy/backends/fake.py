"""A scripted backend for unit tests and fault injection (no model, no torch).

`ScriptedBackend` continues any sequence with tokens of a fixed script, chosen by how many
response tokens the sequence already holds: the response is the script itself, so a test knows
exactly what each model would write next. It uses a real tokenizer when given one (its script is
then text), and can raise on chosen calls to inject faults. `stream` delivers a call's tokens
`stream_chunk` at a time (default one; 0: one chunk, like a server without streaming), like a
model decoding token by token, and generates nothing past where the caller stops it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from tessy.backends.base import Backend, Generation, SamplingParams, TokenStream


class ScriptedBackend(Backend):
    """Writes `script` (text) as its response, whatever the other model wrote in between:
    each call returns the next script tokens after the ones this backend has already written
    into the sequence."""

    # Capabilities (`base.Backend`): in process, nothing to warm; `streams_tokens` per `stream_chunk`.
    warms_prompts = False
    transport = "in_process"

    def __init__(
        self,
        tokenizer: Any,
        script: str,
        model_name: str = "scripted",
        prompt_length: Callable[[str], int] | None = None,
        max_context: int = 1_000_000,
        fail_on_call: Callable[[int], Exception | None] | None = None,
        delay_s: float = 0.0,
        stop_token_id: int | None = None,
        stream_chunk: int = 1,
    ):
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_context = max_context
        self.script_ids = tokenizer.encode(script, add_special_tokens=False)
        self.stop_token_id = stop_token_id if stop_token_id is not None else tokenizer.eos_token_id
        self.fail_on_call = fail_on_call
        self.delay_s = delay_s
        self.stream_chunk = stream_chunk
        self.streams_tokens = stream_chunk > 0  # 0: `stream` is `generate` as one chunk
        self.calls = 0
        self.written: dict[str, int] = {}  # seq_id -> script tokens already kept in the sequence
        self._offered: dict[str, tuple[int, int]] = {}  # seq_id -> (context length, script position)

    async def generate(
        self,
        seq_id: str,
        context_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        stop_token_ids: frozenset[int] = frozenset(),
    ) -> Generation:
        self.calls += 1
        if self.fail_on_call is not None:
            error = self.fail_on_call(self.calls)
            if error is not None:
                raise error
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        position = self._script_position(seq_id, context_ids)
        new = self.script_ids[position : position + max_new_tokens]
        finish = "length"
        if len(new) < max_new_tokens:
            new = new + [self.stop_token_id]
            finish = "stop"
        self._offered[seq_id] = (len(context_ids), position)
        return Generation(new, self.tokenizer.decode(new, skip_special_tokens=False), finish)

    def stream(
        self,
        seq_id: str,
        context_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        stop_token_ids: frozenset[int] = frozenset(),
    ) -> TokenStream:
        if not self.streams_tokens:
            return super().stream(seq_id, context_ids, max_new_tokens, sampling, stop_token_ids)
        return _Chunks(self.generate(seq_id, context_ids, max_new_tokens, sampling, stop_token_ids), self.stream_chunk)

    def rollback(self, seq_id: str, length: int) -> None:
        # The engine keeps `length` tokens: whatever part of the last offer survived is written. A
        # cut may also reach back into tokens of an earlier request of the same span (a character
        # split across two steps), so the position can move back too.
        if seq_id in self._offered:
            context_length, position = self._offered.pop(seq_id)
            self.written[seq_id] = max(0, position + length - context_length)

    def _script_position(self, seq_id: str, context_ids: list[int]) -> int:
        # Without an explicit rollback, a longer context means the whole last offer was kept.
        if seq_id in self._offered:
            context_length, position = self._offered.pop(seq_id)
            self.written[seq_id] = position + max(0, len(context_ids) - context_length)
        return self.written.get(seq_id, 0)

    def release(self, seq_id: str) -> None:
        self.written.pop(seq_id, None)
        self._offered.pop(seq_id, None)


class _Chunks(TokenStream):
    """A scripted call delivered a few tokens at a time; tokens not delivered count as never generated."""

    def __init__(self, call, chunk: int):
        self._call, self._chunk = call, max(1, chunk)
        self._ids: list[int] | None = None
        self._finish = "length"

    async def __anext__(self) -> list[int]:
        if self._ids is None:
            generation = await self._call
            self._ids, self._finish = list(generation.token_ids), generation.finish_reason
        else:
            await asyncio.sleep(0)
        if self.generated >= len(self._ids):
            self.finish_reason = self._finish
            raise StopAsyncIteration
        chunk = self._ids[self.generated : self.generated + self._chunk]
        self.generated += len(chunk)
        return chunk

    async def aclose(self) -> None:
        if self._ids is None:
            self._call.close()
            self._ids = []
        if self.finish_reason is None:
            self.finish_reason = "cancelled" if self.generated < len(self._ids) else self._finish
