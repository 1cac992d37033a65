"""The cooperative loop (Algorithm 1 of the paper): one sample, two models, one response.

The student writes first. The model whose turn it is generates up to k tokens; its boundary
predictor labels every new token (style or capability) and the span is cut before the first
token of the wrong kind for its role (teacher: style; student: capability). The rest is thrown
away and that model's sequence rolled back. A cut hands the turn to the other model; no cut lets
the same model go on. When the two tokenizers differ, a cut backs off to a word boundary (never
forward), so no model continues from half a word. When either model ends the thinking section,
the student writes the whole final answer. For families without a thinking section the whole
response alternates until a model stops.

What this module promises:

- each model's own token ids are kept exactly as generated; text is decoded only to hand a span
  to the other model, which tokenizes it (or takes the ids as they are when the vocabularies
  are the same);
- the state of a sample is small and explicit (`SampleState`): whose turn, each model's token
  ids, the spans so far; the engine knows nothing about files, HTTP or the CLI;
- every span in the result says which model wrote it; a span cut down to nothing is not
  recorded (its cost stays in the sample's totals) and adjacent spans of one role are merged,
  so the roles strictly alternate;
- a sample always ends: by the model stopping, the token budget, the span budget, the context
  limit, or detected repetition (`finish_reason`). Two empty hand-overs in a row force the model
  whose turn it is to keep at least one word (the span is marked `forced`), so the models can
  never pass the turn back and forth without progress.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from tessy.backends.base import Backend, SamplingParams
from tessy.formats.base import ChatFormat
from tessy.predictors.base import BoundaryPredictor, SpanQuery, cut_index
from tessy.tokens import back_off_to_word_boundary, first_word_boundary_after, piece_texts, tail_repetition

STUDENT, TEACHER = "student", "teacher"
OTHER = {STUDENT: TEACHER, TEACHER: STUDENT}
#: Consecutive empty hand-overs allowed before the current model must keep a word.
MAX_EMPTY_HANDOVERS = 2


@dataclass
class Party:
    """One model of the pair, with everything the loop needs to drive it."""

    role: str
    backend: Backend
    format: ChatFormat
    predictor: BoundaryPredictor | None
    k: int = 20
    sampling: SamplingParams = field(default_factory=SamplingParams)
    predictor_name: str = "lexicon"

    @property
    def tokenizer(self) -> Any:
        return self.backend.tokenizer

    def stop_ids(self) -> frozenset[int]:
        return self.format.stop_token_ids(self.tokenizer)


@dataclass
class Limits:
    max_tokens: int = 2048  # response tokens, in the student's tokenizer
    max_answer_tokens: int = 512
    max_spans: int = 400
    answer_chunk: int = 128  # tokens per request while the student writes the answer


@dataclass
class Span:
    role: str
    section: str  # "thinking", "answer" or "response" (families without thinking)
    text: str
    tokens_student: int
    tokens_own: int
    generated: int
    discarded: int
    forced: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SampleState:
    """Everything one sample carries between steps."""

    sample_id: str
    turn: str = STUDENT
    ids: dict[str, list[int]] = field(default_factory=dict)  # each model's full sequence, own tokens
    spans: list[Span] = field(default_factory=list)
    thinking: str = ""
    answer: str = ""
    empty_handovers: int = 0
    steps: int = 0
    generated: int = 0
    discarded: int = 0
    generate_s: dict[str, float] = field(default_factory=lambda: {STUDENT: 0.0, TEACHER: 0.0})
    predict_s: float = 0.0
    trace: list[dict[str, Any]] | None = None  # per-step verdicts, when the engine traces

    @property
    def response_tokens(self) -> int:
        return sum(span.tokens_student for span in self.spans)


@dataclass
class SampleResult:
    sample_id: str
    messages: list[dict[str, str]]
    assistant_content: str
    spans: list[Span]
    finish_reason: str
    wall_s: float
    generate_s: dict[str, float]
    predict_s: float
    generated: int
    discarded: int
    steps: int
    trace: list[dict[str, Any]] | None = None
    #: Method-specific fields merged into the record (e.g. teacher-score's `scores`).
    extra: dict[str, Any] | None = None


@dataclass
class Written:
    """What one model wrote in one phase (`Engine._write_until`): its own ids and their texts."""

    ids: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    finish: str = "length"
    generated: int = 0  # tokens generated, those dropped after an end included

    def keep(self, count: int) -> None:
        self.ids, self.pieces = self.ids[:count], self.pieces[:count]


@dataclass
class Judgement:
    """A model's greedy answer to a judging prompt (`Engine.judge`)."""

    text: str
    finish: str
    wall_s: float
    generate_s: float
    generated: int


def pieces_before(pieces: list[str], end: int) -> int:
    """How many of `pieces` end at or before character offset `end` of their joined text."""
    position = 0
    for index, piece in enumerate(pieces):
        if position + len(piece) > end:
            return index
        position += len(piece)
    return len(pieces)


def stop_string_end(chat_format: ChatFormat):
    """`find_end` for families whose turns end with a stop string (the plain fallback), else None."""
    stops = tuple(chat_format.stop_strings)
    if not stops:
        return None

    def find(text: str) -> int | None:
        found = [position for position in (text.find(stop) for stop in stops) if position >= 0]
        return min(found) if found else None

    return find


def paragraph_end(text: str) -> int | None:
    """Offset just after the first blank line that follows some text (and any newlines after it)."""
    start = len(text) - len(text.lstrip())
    position = text.find("\n\n", start)
    if position < 0:
        return None
    end = position + 2
    while end < len(text) and text[end] == "\n":
        end += 1
    return end


def plain_thinking_end(chat_format: ChatFormat):
    """`find_end` of the "thinking" of a family without a thinking section: its first paragraph,
    or less if a stop string comes first."""
    stops = stop_string_end(chat_format)

    def find(text: str) -> int | None:
        found = [end for end in (paragraph_end(text), stops(text) if stops else None) if end is not None]
        return min(found) if found else None

    return find


class PromptTooLong(ValueError):
    """The rendered prompt does not fit a model's context."""


def _without_stop(generation: Any, party: Party) -> tuple[list[int], bool]:
    """The generated ids without a final stop token, and whether there was one."""
    ids = list(generation.token_ids)
    stopped = generation.finish_reason == "stop" and bool(ids) and ids[-1] in party.stop_ids()
    return (ids[:-1] if stopped else ids), stopped


def sample_seed(base_seed: int, sample_id: str, role: str) -> int:
    digest = hashlib.sha256(f"{base_seed}:{sample_id}:{role}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class Engine:
    """Runs Algorithm 1 for one sample at a time; many samples may run concurrently."""

    def __init__(self, student: Party, teacher: Party, limits: Limits | None = None, seed: int = 0,
                 trace: bool = False):
        self.parties = {STUDENT: student, TEACHER: teacher}
        self.trace = trace  # keep every step's pieces, verdicts and cut (for tests and debugging)
        self.limits = limits or Limits()
        self.seed = seed
        # Same vocabulary: spans pass as ids and cuts need no word back-off.
        self.shared_vocab = student.tokenizer.get_vocab() == teacher.tokenizer.get_vocab()
        self.has_thinking = student.format.has_thinking and teacher.format.has_thinking

    # -- public ----------------------------------------------------------------------------

    def prompt_ids(self, messages: list[dict[str, str]]) -> dict[str, list[int]]:
        """Each model's rendered prompt; raises PromptTooLong when one does not fit."""
        ids = {}
        for role, party in self.parties.items():
            ids[role] = party.format.prompt_ids(party.tokenizer, messages)
            room = party.backend.max_context - len(ids[role])
            if room < party.k:
                raise PromptTooLong(
                    f"prompt is {len(ids[role])} tokens for the {role} ({party.backend.model_name}), "
                    f"leaving {max(room, 0)} of its {party.backend.max_context}-token context"
                )
        return ids

    async def run(self, sample_id: str, messages: list[dict[str, str]]) -> SampleResult:
        started = time.perf_counter()
        state = SampleState(sample_id=sample_id, ids=self.prompt_ids(messages), trace=[] if self.trace else None)
        try:
            finish = await self._alternate(state)
            if finish == "thinking_done":
                finish = await self._write_answer(state)
        finally:
            for role, party in self.parties.items():
                party.backend.release(self._seq_id(state, role))
        student_format = self.parties[STUDENT].format
        content = student_format.assistant_content(state.thinking, state.answer)
        return SampleResult(
            sample_id=sample_id,
            messages=list(messages),
            assistant_content=content,
            spans=state.spans,
            finish_reason=finish,
            wall_s=time.perf_counter() - started,
            generate_s=state.generate_s,
            predict_s=state.predict_s,
            generated=state.generated,
            discarded=state.discarded,
            steps=state.steps,
            trace=state.trace,
        )

    async def run_single(self, sample_id: str, messages: list[dict[str, str]], role: str,
                         prompt_messages: list[dict[str, str]] | None = None) -> SampleResult:
        """One model writes the whole response (the teacher-only / student-only baselines),
        recorded in the same schema and in the student's format. `prompt_messages`, when given,
        is what the model sees instead of `messages` (teacher-reference); the result keeps
        `messages`."""
        started = time.perf_counter()
        state = SampleState(sample_id=sample_id, ids=self.prompt_ids(prompt_messages or messages), turn=role)
        party = self.parties[role]
        own_ids: list[int] = []
        pieces: list[str] = []
        finish = "length"
        try:
            while len(own_ids) < self.limits.max_tokens:
                context = state.ids[role] + own_ids
                n = min(self.limits.answer_chunk, self.limits.max_tokens - len(own_ids),
                        party.backend.max_context - len(context))
                if n <= 0:
                    finish = "context"
                    break
                generation = await self._generate(state, party, context, n)
                new_ids, stopped = _without_stop(generation, party)
                pieces += piece_texts(party.tokenizer, new_ids, prefix_ids=context)
                own_ids += new_ids
                text = "".join(pieces)
                if not self.has_thinking and any(stop in text for stop in party.format.stop_strings):
                    finish = "stop"
                    break
                if stopped:
                    finish = "stop"
                    break
                if tail_repetition(text):
                    finish = "repetition"
                    break
        finally:
            party.backend.release(self._seq_id(state, role))
        text = "".join(pieces)
        if not self.has_thinking:
            cut = min([text.find(s) for s in party.format.stop_strings if s in text], default=len(text))
            sections = [("response", text[:cut])]
        else:
            split = party.format.split_thinking(text)
            sections = [("thinking", split[0]), ("answer", split[1])] if split else [("thinking", text)]
        for section, section_text in sections:
            own = len(party.tokenizer.encode(section_text, add_special_tokens=False)) if section_text else 0
            student_tokens = own if role == STUDENT or self.shared_vocab else len(
                self.parties[STUDENT].tokenizer.encode(section_text, add_special_tokens=False))
            if section_text:
                state.spans.append(Span(role, section, section_text, student_tokens, own, own, 0))
        thinking = "".join(s.text for s in state.spans if s.section != "answer")
        answer = "".join(s.text for s in state.spans if s.section == "answer")
        content = self.parties[STUDENT].format.assistant_content(thinking, answer)
        return SampleResult(sample_id, list(messages), content, state.spans, finish,
                            time.perf_counter() - started, state.generate_s, 0.0,
                            state.generated, state.generated - len(own_ids), state.steps)

    # -- two-phase methods (teacher-think, teacher-answer) and the judge (teacher-score) -----

    async def run_split(self, sample_id: str, messages: list[dict[str, str]], thinker: str,
                        answerer: str) -> SampleResult:
        """`thinker` writes the thinking section, then `answerer` writes the final answer after it
        (teacher-think: teacher then student; teacher-answer: student then teacher). One span
        per phase, recorded in the student's format.

        With a thinking section: the thinker writes until its end of thinking (at most
        `max_tokens`); the answerer continues from that thinking (the thinker's own ids when it
        is the same model, else the text tokenized by the answerer) plus its own answer opener,
        for at most `max_answer_tokens`. Thinking that never ends gives no answer (as in `run`).

        Without one (the plain demo pair), "thinking" is the thinker's first paragraph: its text
        up to and including its first blank line, at most half of `max_tokens` (a budget cut
        backs off to a word boundary). The answerer continues the response after it for the rest
        of `max_tokens`. A thinker that stops before a blank line hands over all it wrote.
        """
        started = time.perf_counter()
        state = SampleState(sample_id=sample_id, ids=self.prompt_ids(messages), turn=thinker)
        think_party, answer_party = self.parties[thinker], self.parties[answerer]
        finish = "length"
        try:
            if self.has_thinking:
                thought = await self._write_until(state, thinker, self.limits.max_tokens,
                                                  think_party.format.find_thinking_end)
                thinking_ended = thought.finish == "end"
            else:
                thought = await self._write_until(state, thinker, max(1, self.limits.max_tokens // 2),
                                                  plain_thinking_end(think_party.format))
                if thought.finish == "length":
                    thought.keep(back_off_to_word_boundary(thought.pieces, len(thought.pieces)) or len(thought.pieces))
                thinking_ended = thought.finish not in ("repetition", "context")
            thinking = "".join(thought.pieces)
            thinking_span = self._phase_span(state, thinker, "thinking", thought)
            finish = "stop" if thought.finish == "end" else thought.finish
            if thinking_ended:
                state.turn = answerer
                if answerer == thinker or self.shared_vocab:
                    handed = list(thought.ids)
                else:
                    handed = answer_party.tokenizer.encode(thinking, add_special_tokens=False) if thinking else []
                opener = answer_party.format.answer_opener_after(thinking) if self.has_thinking else ""
                if opener:
                    handed += answer_party.tokenizer.encode(opener, add_special_tokens=False)
                state.ids[answerer] = state.ids[answerer] + handed
                if self.has_thinking:
                    budget = self.limits.max_answer_tokens
                else:
                    budget = self.limits.max_tokens - (thinking_span.tokens_student if thinking_span else 0)
                answer = await self._write_until(state, answerer, max(budget, 0),
                                                 None if self.has_thinking else stop_string_end(answer_party.format))
                self._phase_span(state, answerer, "answer", answer)
                finish = "stop" if answer.finish == "end" else answer.finish
        finally:
            for role, party in self.parties.items():
                party.backend.release(self._seq_id(state, role))
        thinking = "".join(span.text for span in state.spans if span.section == "thinking")
        answer_text = "".join(span.text for span in state.spans if span.section == "answer")
        content = self.parties[STUDENT].format.assistant_content(thinking, answer_text)
        kept = sum(span.tokens_own for span in state.spans)
        return SampleResult(sample_id, list(messages), content, state.spans, finish,
                            time.perf_counter() - started, state.generate_s, 0.0,
                            state.generated, state.generated - kept, state.steps)

    async def judge(self, sample_id: str, messages: list[dict[str, str]], role: str = TEACHER,
                    max_new_tokens: int = 0) -> "Judgement":
        """`role` answers `messages` greedily (temperature 0); returns its final answer text
        (after its thinking, for families with a thinking section; "" if the thinking never
        ends). Budget: `max_new_tokens`, else `max_tokens + max_answer_tokens` for a family
        with thinking and 16 tokens for one without. Used by teacher-score."""
        started = time.perf_counter()
        party = self.parties[role]
        ids = party.format.prompt_ids(party.tokenizer, messages)
        if party.backend.max_context - len(ids) < 1:
            raise PromptTooLong(f"judging prompt is {len(ids)} tokens for the {role}, more than its context")
        state = SampleState(sample_id=sample_id, ids={role: ids}, turn=role)
        thinks = party.format.has_thinking
        budget = max_new_tokens or (self.limits.max_tokens + self.limits.max_answer_tokens if thinks else 16)
        try:
            written = await self._write_until(state, role, budget, None if thinks else stop_string_end(party.format),
                                              temperature=0.0)
        finally:
            party.backend.release(self._seq_id(state, role))
        text = "".join(written.pieces)
        if thinks:
            split = party.format.split_thinking(text)
            text = split[1] if split else ""
        return Judgement(text, written.finish, time.perf_counter() - started, state.generate_s[role], written.generated)

    async def _write_until(self, state: SampleState, role: str, budget: int, find_end=None,
                           temperature: float | None = None) -> "Written":
        """`role` continues `state.ids[role]` for at most `budget` of its tokens, in chunks of
        `answer_chunk`, until a stop token ("stop"), `find_end(text)` gives an offset ("end":
        only the tokens that end at or before it are kept), the budget ("length"), the context
        ("context") or repetition ("repetition"). Does not change `state.ids`."""
        party = self.parties[role]
        written = Written()
        while True:
            if len(written.ids) >= budget:
                written.finish = "length"
                return written
            context = state.ids[role] + written.ids
            n = min(self.limits.answer_chunk, budget - len(written.ids), party.backend.max_context - len(context))
            if n <= 0:
                written.finish = "context"
                return written
            generation = await self._generate(state, party, context, n, temperature)
            written.generated += len(generation.token_ids)
            new_ids, stopped = _without_stop(generation, party)
            written.ids += new_ids
            written.pieces += piece_texts(party.tokenizer, new_ids, prefix_ids=context)
            text = "".join(written.pieces)
            end = find_end(text) if find_end is not None else None
            if end is not None:
                written.keep(pieces_before(written.pieces, end))
                written.finish = "end"
                return written
            if stopped:
                written.finish = "stop"
                return written
            if tail_repetition(text):
                written.finish = "repetition"
                return written

    def _phase_span(self, state: SampleState, role: str, section: str, written: "Written") -> Span | None:
        """Record what `role` wrote in one phase as one span (none when it kept nothing)."""
        text = "".join(written.pieces)
        state.discarded += written.generated - len(written.ids)
        if not text:
            return None
        own = len(written.ids)
        student_tokens = own if role == STUDENT or self.shared_vocab else len(
            self.parties[STUDENT].tokenizer.encode(text, add_special_tokens=False))
        span = Span(role, section, text, student_tokens, own, written.generated, written.generated - own)
        state.spans.append(span)
        return span

    # -- the alternating loop (Algorithm 1, lines 7-20) ---------------------------------------

    async def _alternate(self, state: SampleState) -> str:
        section = "thinking" if self.has_thinking else "response"
        # The span the current model is building: its own tokens and their texts, kept so far.
        span_ids: list[int] = []
        span_pieces: list[str] = []
        span_generated = 0
        while True:
            party = self.parties[state.turn]
            context = state.ids[state.turn] + span_ids
            n = min(party.k, party.backend.max_context - len(context))
            # The open span counts in its own tokens: close to the student's count, and exact
            # once the span is closed.
            over_budget = state.response_tokens + len(span_ids) >= self.limits.max_tokens
            repeating = bool(span_pieces) and tail_repetition(state.thinking + "".join(span_pieces))
            if len(state.spans) >= self.limits.max_spans or over_budget or repeating or n <= 0:
                self._close_span(state, section, span_ids, span_pieces, span_generated, False)
                if repeating:
                    return "repetition"
                return "context" if n <= 0 else "length" if over_budget else "max_spans"
            generation = await self._generate(state, party, context, n)
            new_ids, stopped = _without_stop(generation, party)
            span_generated += len(generation.token_ids)
            pieces = piece_texts(party.tokenizer, new_ids, prefix_ids=context)
            # The end of the thinking section (or of a stop string) cuts the step short.
            usable, ends_here = self._until_end(party, span_pieces, pieces)
            ended = stopped or ends_here
            labels = await self._label(state, party, span_pieces, pieces[:usable])
            cut = cut_index(state.turn, labels)
            all_pieces = span_pieces + pieces[:usable]
            all_ids = span_ids + new_ids[:usable]
            if cut is None and not ended:
                span_ids, span_pieces = all_ids, all_pieces  # same model goes on
                party.backend.rollback(self._seq_id(state, state.turn), len(context) + len(new_ids))
                continue
            keep = len(all_pieces) if cut is None else len(span_pieces) + cut
            forced = False
            if cut is not None:
                if not self.shared_vocab:
                    keep = back_off_to_word_boundary(all_pieces, keep)
                if keep == 0 and state.empty_handovers >= MAX_EMPTY_HANDOVERS:
                    keep, forced = first_word_boundary_after(all_pieces, 0), True
            if state.trace is not None:
                state.trace.append({"role": state.turn, "span_start": len(span_pieces), "pieces": pieces[:usable],
                                    "labels": labels, "cut": cut, "keep": keep, "forced": forced, "ended": ended})
            self._close_span(state, section, all_ids[:keep], all_pieces[:keep], span_generated, forced)
            span_ids, span_pieces, span_generated = [], [], 0
            if self._repeats(state):
                return "repetition"
            if cut is None or keep == len(all_pieces):
                if ended:
                    return "thinking_done" if self.has_thinking else "stop"
            state.turn = OTHER[state.turn]

    def _until_end(self, party: Party, before: list[str], pieces: list[str]) -> tuple[int, bool]:
        """How many of `pieces` come before the end of the thinking section (or a stop string),
        and whether such an end was found in this step."""
        earlier = "".join(before)
        text = earlier + "".join(pieces)
        if self.has_thinking:
            end = party.format.find_thinking_end(text)
        else:
            found = [text.find(stop) for stop in party.format.stop_strings]
            found = [position for position in found if position >= 0]
            end = min(found) if found else None
        if end is None:
            return len(pieces), False
        # Keep the pieces that end at or before the marker; the marker's own tokens are dropped.
        position = len(earlier)
        for index, piece in enumerate(pieces):
            if position + len(piece) > end:
                return index, True
            position += len(piece)
        return len(pieces), True

    async def _generate(self, state: SampleState, party: Party, context: list[int], n: int,
                        temperature: float | None = None):
        sampling = SamplingParams(
            temperature=party.sampling.temperature if temperature is None else temperature,
            top_p=party.sampling.top_p,
            top_k=party.sampling.top_k,
            seed=sample_seed(self.seed, state.sample_id, party.role),
        )
        started = time.perf_counter()
        generation = await party.backend.generate(
            self._seq_id(state, party.role), context, n, sampling, party.stop_ids()
        )
        state.generate_s[party.role] += time.perf_counter() - started
        state.steps += 1
        state.generated += len(generation.token_ids)
        return generation

    async def _label(self, state: SampleState, party: Party, before: list[str], pieces: list[str]) -> list[bool]:
        if party.predictor is None or not pieces:  # no predictor: the model never hands over
            return [party.role == STUDENT] * len(pieces)
        started = time.perf_counter()
        context = state.thinking + state.answer + "".join(before)
        labels = await party.predictor.label(SpanQuery(context=context, pieces=tuple(pieces)))
        state.predict_s += time.perf_counter() - started
        if len(labels) != len(pieces):
            raise RuntimeError(f"predictor {party.predictor_name} returned {len(labels)} labels for {len(pieces)} tokens")
        return labels

    def _close_span(
        self, state: SampleState, section: str, kept_ids: list[int], kept_pieces: list[str], generated: int, forced: bool
    ) -> None:
        """Append the kept part of the current model's span, hand its text to the other model,
        and roll the generating model back to what it kept."""
        role = state.turn
        party, other = self.parties[role], self.parties[OTHER[role]]
        text = "".join(kept_pieces)
        state.ids[role] = state.ids[role] + kept_ids
        party.backend.rollback(self._seq_id(state, role), len(state.ids[role]))
        if text:
            handed = kept_ids if self.shared_vocab else other.tokenizer.encode(text, add_special_tokens=False)
            state.ids[other.role] = state.ids[other.role] + handed
        student_tokens = len(kept_ids) if role == STUDENT or self.shared_vocab else len(
            self.parties[STUDENT].tokenizer.encode(text, add_special_tokens=False)
        )
        discarded = generated - len(kept_ids)
        state.discarded += discarded
        if section == "answer":
            state.answer += text
        else:
            state.thinking += text
        state.empty_handovers = 0 if text else state.empty_handovers + 1
        if not text:
            return  # nothing kept: no span, its cost stays in the sample's totals
        last = state.spans[-1] if state.spans else None
        if last is not None and last.role == role and last.section == section:
            # Same author again because the other model's span came out empty: one span.
            last.text += text
            last.tokens_student += student_tokens
            last.tokens_own += len(kept_ids)
            last.generated += generated
            last.discarded += discarded
            last.forced = last.forced or forced
            return
        state.spans.append(Span(role, section, text, student_tokens, len(kept_ids), generated, discarded, forced))

    def _repeats(self, state: SampleState) -> bool:
        return tail_repetition(state.thinking + state.answer)

    # -- the final answer (Algorithm 1, lines 21-22) ----------------------------------------

    async def _write_answer(self, state: SampleState) -> str:
        student = self.parties[STUDENT]
        state.turn = STUDENT
        # The student's own end-of-thinking syntax, minus any newline the thinking already ends with.
        opener_text = student.format.answer_opener_after(state.thinking)
        opener = student.tokenizer.encode(opener_text, add_special_tokens=False)
        state.ids[STUDENT] = state.ids[STUDENT] + opener
        answer_ids: list[int] = []
        answer_pieces: list[str] = []
        finish = "length"
        generated = 0
        while len(answer_ids) < self.limits.max_answer_tokens:
            context = state.ids[STUDENT] + answer_ids
            n = min(self.limits.answer_chunk, self.limits.max_answer_tokens - len(answer_ids),
                    student.backend.max_context - len(context))
            if n <= 0:
                finish = "context"
                break
            generation = await self._generate(state, student, context, n)
            generated += len(generation.token_ids)
            new_ids, stopped = _without_stop(generation, student)
            answer_pieces += piece_texts(student.tokenizer, new_ids, prefix_ids=context)
            answer_ids += new_ids
            if stopped:
                finish = "stop"
                break
            if tail_repetition("".join(answer_pieces)):
                finish = "repetition"
                break
        self._close_span(state, "answer", answer_ids, answer_pieces, generated, False)
        return finish

    @staticmethod
    def _seq_id(state: SampleState, role: str) -> str:
        return f"{state.sample_id}/{role}"
