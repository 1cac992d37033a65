"""`Pair`: the two models and what every data method does with them.

Owns the pair's operations: the checked pair (both models have a thinking section, or
neither), the prompts, one generate call (seeded per sample, role and turn, timed, stop token
stripped), a predictor's verdicts, where a section ends, counting text in the student's tokens,
handing text from one model to the other, committing a model's kept tokens as a span, writing a
whole section with one model (`write`, on `decode.write_until`), the final answer, and turning a
sample's state into a `SampleResult`. The cooperative loop is `cooperative.py` (its `Engine` is a
`Pair` with the loop's speed layer and observer); the baselines are in `tessy.methods`. Nothing
here knows about files, HTTP or the CLI, or keeps anything across samples.

Promises:
- each model's own token ids are kept as generated; text goes to the other model only as whole
  characters (the ids themselves when the vocabularies are the same, else its text tokenized by
  the other model);
- `max_tokens` is never exceeded, by any method (the budget rule is in `Limits`);
- a response whose thinking did not end keeps its thinking open in the record.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from tessy.backends.base import SamplingParams
from tessy.engine.decode import Meter, Pieces, Written, write_until
from tessy.engine.state import (OTHER, STUDENT, TEACHER, Limits, PairError, Party, PromptTooLong, SampleResult,
                                SampleState, Span, sample_seed)
from tessy.predictors.base import SpanQuery
from tessy.voices import with_voice

#: Tokens an end marker or stop string spans at most (a single-model write stops at it).
END_MARKER_TOKENS = 32


class Pair:
    """The pair of models, the limits and the seed; serves any number of samples concurrently."""

    def __init__(self, student: Party, teacher: Party, limits: Limits | None = None, seed: int = 0,
                 trace: bool = False):
        if student.format.has_thinking != teacher.format.has_thinking:
            def kind(fmt):
                return "has a thinking section" if fmt.has_thinking else "has no thinking section"
            raise PairError(
                f"the student's format {student.format.name!r} {kind(student.format)} but the teacher's format "
                f"{teacher.format.name!r} {kind(teacher.format)}: both models must think, or neither "
                "(set student.format / teacher.format)")
        self.parties = {STUDENT: student, TEACHER: teacher}
        self.limits = limits or Limits()
        self.has_thinking = student.format.has_thinking
        self.limits.check(self.has_thinking)
        self.seed = seed
        self.trace = trace  # keep every step's pieces, verdicts and cut (tests, debugging)
        for party in self.parties.values():
            if party.preamble:  # every prompt of this model starts with its voice: prefill that once
                party.backend.share_prefix(shared_prompt_prefix(party))
        # Same vocabulary: spans pass as ids and cuts need no word back-off.
        self.shared_vocab = student.tokenizer.get_vocab() == teacher.tokenizer.get_vocab()
    # -- prompts and state -----------------------------------------------------------------

    def prompt_ids(self, messages: list[dict[str, str]], roles: tuple[str, ...] = (STUDENT, TEACHER),
                   min_room: int | None = None) -> dict[str, list[int]]:
        """Each model's rendered prompt; raises PromptTooLong when one leaves less than a step."""
        ids = {}
        for role in roles:
            party = self.parties[role]
            ids[role] = party.format.prompt_ids(party.tokenizer, with_voice(party.preamble, messages))
            room = party.backend.max_context - len(ids[role])
            if room < (party.k if min_room is None else min_room):
                raise PromptTooLong(
                    f"prompt is {len(ids[role])} tokens for the {role} ({party.backend.model_name}), "
                    f"leaving {max(room, 0)} of its {party.backend.max_context}-token context")
        return ids

    def new_state(self, sample_id: str, messages: list[dict[str, str]], roles: tuple[str, ...] = (STUDENT, TEACHER),
                  turn: str = STUDENT, min_room: int | None = None) -> SampleState:
        return SampleState(sample_id=sample_id, turn=turn, ids=self.prompt_ids(messages, roles, min_room),
                           generate_s={role: 0.0 for role in roles}, trace=[] if self.trace else None)

    def release(self, state: SampleState) -> None:
        for warming in state.warming.values():
            warming.cancel()
        for role in state.ids:
            self.parties[role].backend.release(seq_id(state, role))
        for predictor in {id(p.predictor): p.predictor for p in self.parties.values() if p.predictor}.values():
            predictor.forget(state.sample_id)

    def warm(self, state: SampleState, role: str) -> None:
        """Have `role`'s backend read the sample's prompt now, in the background, where it can
        (`Backend.warms_prompts`: a server's slot or prefix cache), so while the other model writes
        the first turn it is read already; `role`'s first request waits for it (`generate`)."""
        backend = self.parties[role].backend
        if backend.warms_prompts and role not in state.warming:
            state.warming[role] = asyncio.ensure_future(backend.warm(seq_id(state, role), list(state.ids[role])))

    # -- one request -------------------------------------------------------------------------

    async def generate(self, state: SampleState, role: str, context: list[int], n: int,
                       temperature: float | None = None,
                       on_tokens: Callable[[list[int], bool], Awaitable[bool]] | None = None,
                       ) -> tuple[list[int], bool, int]:
        """`role` continues `context` by at most `n` tokens: (new ids without a final stop
        token, whether it stopped, tokens generated, those made after an early stop included).

        `on_tokens(ids, done)`, when given, sees the new ids as they arrive (never a final stop
        token; `done`: no more will come) and returns True to stop the request there; the ids
        returned are then the ones it saw."""
        party = self.parties[role]
        warming = state.warming.pop(role, None)
        if warming is not None:  # its prompt is being read ahead: this request finds it cached
            await warming
        sampling = SamplingParams(
            temperature=party.sampling.temperature if temperature is None else temperature,
            top_p=party.sampling.top_p, top_k=party.sampling.top_k,
            seed=sample_seed(self.seed, state.sample_id, role, state.turns))
        started = time.perf_counter()
        stop_ids = party.stop_ids()
        if on_tokens is None:
            generation = await party.backend.generate(seq_id(state, role), context, n, sampling, stop_ids)
            ids, finish, generated = list(generation.token_ids), generation.finish_reason, len(generation.token_ids)
        else:
            ids, finish, generated = await self._stream(party, seq_id(state, role), context, n, sampling, on_tokens)
        state.generate_s[role] = state.generate_s.get(role, 0.0) + time.perf_counter() - started
        state.steps += 1
        state.generated += generated
        stopped = finish == "stop" and bool(ids) and ids[-1] in stop_ids
        return (ids[:-1] if stopped else ids), stopped, generated

    @staticmethod
    async def _stream(party: Party, sequence: str, context: list[int], n: int, sampling: SamplingParams,
                      on_tokens: Callable[[list[int], bool], Awaitable[bool]]) -> tuple[list[int], str, int]:
        """One streamed request, stopped where `on_tokens` says: (ids seen, finish reason, generated).

        Chunks are handed over as the backend yields them and the next is read only after
        `on_tokens` returns, so over HTTP where a request stops (and so `generated`) does not
        depend on timing. (Reading ahead while a predictor works would save a costly predictor
        some calls, but make those counts differ from run to run; the speed layer asks a costly
        predictor only a few times per step instead.)"""
        stop_ids = party.stop_ids()
        stream = party.backend.stream(sequence, context, n, sampling, stop_ids)
        ids: list[int] = []
        try:
            async for chunk in stream:
                ids += chunk
                stopped = bool(ids) and ids[-1] in stop_ids  # a stop token is always the last one
                done = stopped or len(ids) >= n
                if await on_tokens(chunk[:-1] if stopped else chunk, done) and not done:
                    break
        finally:
            await stream.aclose()
        return ids, stream.finish_reason or "length", max(stream.generated, len(ids))

    async def label(self, state: SampleState, role: str, context: str, pieces: list[str]) -> list[bool]:
        """The predictor's style verdict for each piece; no predictor: the model never hands over."""
        party = self.parties[role]
        if party.predictor is None or not pieces:
            return [role == STUDENT] * len(pieces)
        started = time.perf_counter()
        labels = await party.predictor.label(SpanQuery(context=context, pieces=tuple(pieces), key=state.sample_id))
        state.predict_s += time.perf_counter() - started
        if len(labels) != len(pieces):
            raise RuntimeError(f"predictor {party.predictor_name} returned {len(labels)} labels for {len(pieces)} tokens")
        return list(labels)

    def find_end(self, role: str, text: str) -> int | None:
        """Where the thinking section (or, without one, the response at a stop string) ends in
        `role`'s `text`."""
        chat_format = self.parties[role].format
        if self.has_thinking:
            return chat_format.find_thinking_end(text)
        found = [position for position in (text.find(stop) for stop in chat_format.stop_strings) if position >= 0]
        return min(found) if found else None

    # -- counting and handing over -----------------------------------------------------------

    def meter(self, role: str, own_tokens: bool = False) -> Meter:
        """Counts the first n of `role`'s pieces in the student's tokens (or `role`'s own)."""
        if own_tokens or role == STUDENT or self.shared_vocab:
            return lambda pieces, n: n
        student = self.parties[STUDENT].tokenizer
        return lambda pieces, n: len(student.encode(pieces.text_before(n), add_special_tokens=False)) if n else 0

    def hand_over(self, state: SampleState, role: str, pieces: Pieces, n: int, to: str | None = None) -> None:
        """Append the first `n` of `role`'s pieces to the other model's sequence."""
        to = to or OTHER[role]
        if to == role or n == 0:
            return
        if self.shared_vocab:
            state.ids[to] += pieces.ids[:n]
        else:
            state.ids[to] += self.parties[to].tokenizer.encode(pieces.text_before(n), add_special_tokens=False)

    def commit(self, state: SampleState, role: str, section: str, pieces: Pieces, n: int, generated: int,
               forced: bool = False) -> Span | None:
        """Commit `role`'s first `n` pieces: extend its sequence with their ids, roll its backend
        back to them (what it generated past them is gone) and record them as a span (none when
        n is 0)."""
        state.ids[role] += pieces.ids[:n]
        self.parties[role].backend.rollback(seq_id(state, role), len(state.ids[role]))
        if n == 0:
            return None
        span = Span(role, section, pieces.text_before(n), self.meter(role)(pieces, n), n, generated,
                    generated - n, forced)
        state.add_span(span)
        return span

    # -- whole sections --------------------------------------------------------------------

    async def write(self, state: SampleState, role: str, budget: int, find_end: Callable[[str], int | None] | None = None,
                    temperature: float | None = None, own_tokens: bool = False) -> Written:
        """`role` continues its sequence alone (`decode.write_until`); `state.ids` is unchanged.
        Where the backend streams, a request stops once `find_end` finds the end in the text
        written so far (the end of thinking, a stop string): what would follow is dropped anyway."""
        party = self.parties[role]
        start = len(state.ids[role])

        async def generate(context: list[int], n: int):
            if find_end is None or not party.backend.streams_tokens:
                return await self.generate(state, role, context, n, temperature)
            seen = list(context[start:][-END_MARKER_TOKENS:])  # the tokens before this request's

            async def at_end(ids: list[int], done: bool) -> bool:
                # Only whether to stop: write_until finds the end itself, in the kept pieces. An end
                # is a marker or stop string, and the text before this request had none, so it lies
                # in the new tokens and the few before them (a marker split across requests).
                seen.extend(ids)
                tail = seen[-(len(ids) + END_MARKER_TOKENS):]
                return find_end(party.tokenizer.decode(tail, skip_special_tokens=False)) is not None

            return await self.generate(state, role, context, n, temperature, on_tokens=at_end)

        return await write_until(generate, party.backend, state.ids[role], budget=budget,
                                 meter=self.meter(role, own_tokens), chunk=self.limits.answer_chunk,
                                 find_end=find_end)

    async def write_answer(self, state: SampleState, role: str, temperature: float | None = None,
                           own_tokens: bool = False) -> Written:
        """Close the thinking in `role`'s own syntax and let `role` write the final answer
        (at most `max_answer_tokens`); the answer is kept as an "answer" span."""
        party = self.parties[role]
        state.thinking_done = True
        opener = party.format.answer_opener_after(state.section_text("thinking"))
        state.ids[role] += party.tokenizer.encode(opener, add_special_tokens=False)
        written = await self.write(state, role, self.limits.max_answer_tokens, temperature=temperature,
                                   own_tokens=own_tokens)
        self.commit(state, role, "answer", written.pieces, len(written.pieces), written.generated)
        return written

    # -- the result --------------------------------------------------------------------------

    def result(self, state: SampleState, messages: list[dict[str, str]], finish: str, started: float) -> SampleResult:
        """The finished sample, in the student's format; the thinking is closed only if it ended."""
        student_format = self.parties[STUDENT].format
        if self.has_thinking:
            content = student_format.assistant_content(state.section_text("thinking"), state.section_text("answer"),
                                                       thinking_done=state.thinking_done)
        else:  # the spans in order (the baselines name the first paragraph "thinking")
            content = "".join(span.text for span in state.spans)
        kept = sum(span.tokens_own for span in state.spans)
        return SampleResult(state.sample_id, list(messages), content, state.spans, finish,
                            time.perf_counter() - started, state.generate_s, state.predict_s, state.generated,
                            state.generated - kept, state.steps, state.trace)


def seq_id(state: SampleState, role: str) -> str:
    return f"{state.sample_id}/{role}"


def stop_string_end(chat_format: Any) -> Callable[[str], int | None] | None:
    """`find_end` for families whose turns end with a stop string (the plain fallback), else None."""
    stops = tuple(chat_format.stop_strings)
    if not stops:
        return None

    def find(text: str) -> int | None:
        found = [position for position in (text.find(stop) for stop in stops) if position >= 0]
        return min(found) if found else None

    return find


__all__ = ["Pair", "Party", "Limits", "PromptTooLong", "PairError", "SampleResult", "TEACHER", "STUDENT",
           "stop_string_end", "seq_id"]


def shared_prompt_prefix(party: Party) -> list[int]:
    """The ids every prompt of `party` starts with: its voice's preamble as its template renders
    it (the common part of two prompts that differ only in the user's text)."""
    first, second = (
        party.format.prompt_ids(party.tokenizer, with_voice(party.preamble, [{"role": "user", "content": text}]))
        for text in ("x", "y"))
    size = next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
    return first[:size]
