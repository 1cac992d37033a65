"""Algorithm 1 of the paper: two models write one response together, span by span.

The student writes first. The model whose turn it is generates up to k tokens; its boundary
predictor labels every new token as style or capability; the span is cut before the first token
of the wrong kind for its role (teacher: style; student: capability), and the rest is thrown
away. A cut hands the turn to the other model; no cut lets the same model go on. When the thinking
section ends, the student writes the whole final answer. Families without a thinking section
alternate over the whole response until a model stops.

Where a cut may fall: only on a character boundary (also when both models share a vocabulary,
so their sequences never diverge inside a character); when the vocabularies differ, further back
to a word boundary, never forward, so no model continues from half a word. Two empty hand-overs
in a row force the model whose turn it is to keep at least one word (the span is `forced`), so
the models cannot pass the turn back and forth without progress.

Adaptive k: a backend that cannot stop a request part-way (`streams_tokens` false: a server
without streaming) is asked for the step's k tokens in smaller requests, about twice the role's
recent span length (`Engine.request_size`), until the cut is certain or all k are there. The step,
its verdicts and its cut are the same; only the tokens past the cut that are never asked for are
saved (and the draws of a server that seeds each request differ).

Stopping at the cut: each step streams its tokens (`Engine.generate` with `on_tokens`); the
pieces so far are labelled as they arrive, and the request is stopped as soon as the cut is
certain: the first wrong-kind token is there, the verdicts up to it can no longer change
(`BoundaryPredictor.final_count`), the character after the cut is known, and a forced span has
its word. The cut is then the one generating all the step's tokens would have given (for a
predictor whose `lookahead_chars` is truthful), so records do not depend on where a request
stopped; only `generated` and `discarded` shrink. A costly predictor (a model, not `cheap`
rules) is asked at the step's first and second token (an empty hand-over), then where the role's
recent turns ended (`Engine.typical_turn`), then each time the step's tokens have doubled; a
later step of the same turn first where the turn would typically end (at the step's end, when
the turn typically goes on past it: generate-then-cut), else halfway. A
predictor that cannot say (lookahead None), or a backend that cannot stream, gives the paper's
generate-then-cut.

One request per turn: over a streaming backend a step is fed from the open span's
`TurnRequest`, asked for all the tokens the turn may take (`Step.take`); a step without a cut
leaves it going for the next step, and the loop closes it at the cut, the section's end or the
budget. Each step still sees exactly its own k tokens, so verdicts and cuts are those of a
request per step.

Reading ahead: as a new sample starts, the teacher's backend reads the prompt in the background
(`Engine.warm`, where a server keeps it for the sample) while the student writes the first turn;
the teacher's first request waits for that and finds the prompt cached. Records do not change.

How a sample ends (`FINISH_REASONS`): "stop" (a model ended the response, or the thinking ended
and the student's answer stopped); "length" (the budget in `Limits`, never exceeded: each step
asks for at most what is left, and a span that still counts more is trimmed); "max_spans";
"repetition"; "context". A sample that ends inside its thinking keeps the thinking open.

Mid-trace resume: with `Engine.journal` set (`tessy.journal`, by the runner), each closed turn
(`turn_closed`) and each step that did not cut its open span is reported to it, and a sample
starts from the state it rebuilds (`Journal.resume`, `reopen_span`): the same sequences, spans,
open span, turn count and so the same per-turn seeds, so it goes on as it would have. The final
answer is not journaled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tessy.engine.decode import IncrementalDecoder, Pieces, fit
from tessy.engine.state import OTHER, STUDENT, SampleResult, SampleState
from tessy.engine.text import tail_repetition, word_boundary_after, word_boundary_at_or_before
from tessy.engine.turn_request import TurnRequest
from tessy.predictors.base import cut_index

if TYPE_CHECKING:
    from tessy.engine.pair import Engine

#: Consecutive empty hand-overs allowed before the current model must keep a word.
MAX_EMPTY_HANDOVERS = 2
THINKING_DONE = "thinking_done"


@dataclass
class OpenSpan:
    """The span the current model is building: its tokens so far, decoded as they come."""

    role: str
    decoder: IncrementalDecoder
    pieces: Pieces = field(default_factory=Pieces)
    generated: int = 0
    request: TurnRequest | None = None  # the streamed request serving the span's steps, if one is going on

    def handed_out(self) -> int | None:
        """Tokens the span's request has handed to steps, None where none is going on: not yet in
        `generated` nor in the sample's counters (`Engine.generate` counts a request as it ends)."""
        return self.request.handed_out if self.request is not None else None

    async def end_request(self) -> bool:
        """Stop the span's streamed request, if one is going on, and count what it generated;
        returns whether the model itself ended it."""
        if self.request is None:
            return False
        stopped, generated = await self.request.close()
        self.request = None
        self.generated += generated
        return stopped


async def run_cooperative(engine: "Engine", sample_id: str, messages: list[dict[str, str]]) -> SampleResult:
    started = time.perf_counter()
    state = engine.new_state(sample_id, messages)
    journal = engine.journal  # mid-trace resume (tessy.journal): the sample goes on from its last closed turn
    try:
        finish = journal.resume(engine, state, messages) if journal is not None else None
        if finish is None:
            if not state.turns:  # the teacher reads the prompt while the student writes the first turn
                engine.warm(state, OTHER[state.turn])
            finish = await alternate(engine, state, reopen_span(engine, state))
        if finish == THINKING_DONE:  # the final answer is not journaled: a restart writes it again
            written = await engine.write_answer(state, STUDENT)
            finish = "stop" if written.finish == "stop" else written.finish
    finally:
        engine.release(state)
        if journal is not None:
            journal.end(sample_id)
    result = engine.result(state, messages, finish, started)
    if state.resumed:  # the record says so; its counters already include what came before
        result.wall_s += state.resumed["wall_s"]
        result.extra = {**(result.extra or {}),
                        "resumed": {"turns": state.resumed["turns"], "tokens": state.resumed["tokens"]}}
    return result


def open_span(engine: "Engine", state: SampleState) -> OpenSpan:
    role = state.turn
    return OpenSpan(role, IncrementalDecoder(engine.parties[role].tokenizer, state.ids[role]))


def reopen_span(engine: "Engine", state: SampleState) -> OpenSpan | None:
    """The open span a journal rebuilt (`state.resumed["open"]`: its ids and tokens generated so
    far), as the loop had it after its last step without a cut; None if there is none."""
    rebuilt = (state.resumed or {}).pop("open", None)
    if rebuilt is None:
        return None
    span = open_span(engine, state)
    span.pieces.add(span.decoder, rebuilt["ids"])
    span.generated = rebuilt["generated"]
    return span


async def alternate(engine: "Engine", state: SampleState, span: OpenSpan | None = None) -> str:
    """Lines 7-20 of Algorithm 1: the models take turns until the thinking section (or, without
    one, the response) ends; returns THINKING_DONE or a finish reason. `span`: an open span to go
    on with (a resumed sample's), else the turn's model opens one."""
    section = "thinking" if engine.has_thinking else "response"
    budget = engine.limits.thinking_budget() if engine.has_thinking else engine.limits.max_tokens
    span = span if span is not None else open_span(engine, state)
    while True:
        try:
            finish = await run_turn(engine, state, section, budget, span)
        finally:
            if span.request is not None:  # an error or a cancellation: the open request goes too
                span.request.cancel()
        if finish is not None:
            return finish
        span = open_span(engine, state)


async def run_turn(engine: "Engine", state: SampleState, section: str, budget: int, span: OpenSpan) -> str | None:
    """The open span's model writes step by step until a cut hands the turn to the other model
    (None) or the alternation ends (its finish)."""
    while True:
        role = state.turn
        party = engine.parties[role]
        meter = engine.meter(role)
        left = budget - state.section_tokens(section) - meter(span.pieces, len(span.pieces))
        context = state.ids[role] + span.pieces.ids
        room = party.backend.max_context - len(context)
        repeating = len(span.pieces) > 0 and tail_repetition(state.section_text(section) + span.pieces.text)
        if len(state.spans) >= engine.limits.max_spans or left <= 0 or room <= 0 or repeating:
            await span.end_request()
            close(engine, state, section, span, len(span.pieces), budget)
            return turn_closed(engine, state, "repetition" if repeating else "length" if left <= 0
                               else "context" if room <= 0 else "max_spans")

        # One step: up to k new tokens, never more than the budget left, stopped once the cut is
        # certain; asked for in smaller requests where the backend cannot stop one (adaptive k).
        window = min(party.k, left, room)
        step = Step(engine, state, section, span, window)
        if party.backend.streams_tokens and engine.turn_requests:
            stopped = await step.take(min(room, 2 * left + window))
        else:
            stopped = await step.request()
        start = step.start
        # The end of the thinking section (or a stop string) ends the span; its marker is dropped.
        end, usable = step.end()
        ended = stopped or end is not None
        labels = await step.labels(usable)
        cut = cut_index(role, labels)
        if cut is None and not ended:
            if engine.journal is not None:  # the open span so far, written ahead too (long spans)
                engine.journal.step_kept(state, span)
            continue  # no cut: the same model goes on (its request, if it streams, too)
        await span.end_request()

        keep, forced = usable, False
        if cut is not None:
            keep, forced = cut_position(engine, state, span.pieces, start + cut, usable)
        if state.trace is not None:
            state.trace.append({"role": role, "span_start": start, "pieces": span.pieces.texts[start:], "labels": labels,
                                "cut": cut, "keep": keep, "forced": forced, "ended": ended})
        trimmed = close(engine, state, section, span, keep, budget, forced)
        if trimmed:
            return turn_closed(engine, state, "length")
        if tail_repetition(state.section_text(section)):
            return turn_closed(engine, state, "repetition")
        if cut is None:  # the model ended the section itself
            return turn_closed(engine, state, THINKING_DONE if engine.has_thinking else "stop")
        state.turn = OTHER[role]
        return turn_closed(engine, state, None)


def turn_closed(engine: "Engine", state: SampleState, finish: str | None) -> str | None:
    """A turn is closed (`finish`: how the alternation ends, None while it goes on): the journal,
    if any, writes it ahead, so a restart resumes here."""
    if engine.journal is not None:
        engine.journal.turn_closed(state, finish)
    return finish


class Step:
    """One request of the open span: its pieces as they arrive, their verdicts, and whether the
    cut is already certain (see the module docstring)."""

    def __init__(self, engine: "Engine", state: SampleState, section: str, span: OpenSpan, window: int):
        self.engine, self.state, self.span = engine, state, span
        self.start, self.window = len(span.pieces), window
        self.context = state.section_text(section) + span.pieces.text
        self._labelled: tuple[int, list[bool]] | None = None  # (usable, labels) last computed
        self.certain = False  # the cut was certain before the step's tokens were all there
        predictor = engine.parties[span.role].predictor
        self.label_every_arrival = predictor is None or predictor.cheap
        # Tokens this step must hold before a costly predictor is asked (again). A turn's first step:
        # 1 and 2 (a span cut to nothing is seen there), then about where this role's turns have
        # recently ended (a teacher whose turns outlast k is asked a third time only at the end),
        # then doubling. A later step of the turn (no cut yet) cannot hand over an empty span: it is
        # first asked where the turn would typically end if that falls inside it, only at its end if
        # the turn typically goes on past it, and halfway if the turn is already longer than usual.
        self._typical_turn = engine.typical_turn(span.role, window)
        self._next_check = 1
        if self.start:
            left = engine.typical_turn(span.role, window + self.start) - self.start
            self._next_check = left if left > 0 else max(1, window // 2)

    async def request(self) -> bool:
        """Fill this step with requests of its own (smaller ones where the backend cannot stop
        one and the role has adaptive k) until it holds its window, its cut is certain or the
        section ends; returns whether the model stopped."""
        engine, span = self.engine, self.span
        while True:
            received = len(span.pieces) - self.start
            size = engine.request_size(span.role, self.window - received)
            context = self.state.ids[span.role] + span.pieces.ids
            _, stopped, generated = await engine.generate(self.state, span.role, context, size, on_tokens=self.arrived)
            span.generated += generated
            if (stopped or self.certain or len(span.pieces) - self.start in (received, self.window)
                    or self.end()[0] is not None):
                return stopped

    async def take(self, most: int) -> bool:
        """Fill this step from the span's streamed request until the step holds its window, its
        cut is certain or the section ends; the request goes on into the next step unless the loop
        ends it. Where none is going on, one starts for `most` tokens: what the context has room
        for, at most twice the budget left (counted in the student's tokens) and a step more. The
        loop, not the request's length, keeps the turn within the budget, so a turn needs a second
        request only where the model's own tokens outnumber the student's twice over. Returns
        whether the model stopped."""
        engine, span = self.engine, self.span
        engine.request_size(span.role, self.window)  # counted per step: the k in effect
        fresh = False  # a request this step started has given nothing yet
        while (received := len(span.pieces) - self.start) < self.window:
            if span.request is None:
                if fresh or most <= received:
                    return False
                span.request = TurnRequest(engine, self.state, span.role, self.state.ids[span.role] + span.pieces.ids,
                                           most - received)
                fresh = True
            ids = await span.request.next()
            if ids is None:  # the request is over: the model stopped, or it gave all it was asked for
                if await span.end_request():
                    return True
                continue
            fresh = False
            room = self.window - received
            span.request.pending = ids[room:]  # past this step: the next step's
            if await self.arrived(ids[:room], False):
                return False
        return False

    def end(self) -> tuple[int | None, int]:
        """Where the section (or response) ends in the span's text, and the tokens before it."""
        pieces = self.span.pieces
        end = find_end(self.engine, self.span.role, pieces.text)
        return end, pieces.tokens_ending_by(end) if end is not None else len(pieces)

    async def labels(self, usable: int) -> list[bool]:
        """Verdicts for this step's pieces before `usable`."""
        if self._labelled is None or self._labelled[0] != usable:
            texts = self.span.pieces.texts[self.start : max(self.start, usable)]
            self._labelled = usable, await self.engine.label(self.state, self.span.role, self.context, texts)
        return self._labelled[1]

    async def arrived(self, ids: list[int], done: bool) -> bool:
        """`on_tokens` for `Engine.generate`: add the new pieces; True stops the request."""
        self.span.pieces.add(self.span.decoder, ids)
        if len(self.span.pieces) - self.start >= self.window:
            return False  # the step is complete: its verdicts are taken as they are
        end, usable = self.end()
        if end is not None:
            return True  # the model ended the section: nothing after the end is used
        received = len(self.span.pieces) - self.start
        if not self.label_every_arrival:
            if received < self._next_check:
                return False
            self._next_check = 2 * received if received < 2 else max(2 * received, self._typical_turn)
        self.certain = self.cut_is_certain(await self.labels(usable))
        return self.certain

    def cut_is_certain(self, labels: list[bool]) -> bool:
        """Whether more tokens can no longer change where this span is cut."""
        engine, state, pieces, role = self.engine, self.state, self.span.pieces, self.span.role
        cut = cut_index(role, labels)
        predictor = engine.parties[role].predictor
        if cut is None or predictor is None:
            return False
        if cut >= predictor.final_count(pieces.texts[self.start :], self.context):
            return False  # a verdict up to the cut may still change
        if not has_text_after(pieces, self.start + cut):
            return False  # the character after the cut decides word and character boundaries
        keep, forced = cut_position(engine, state, pieces, self.start + cut, len(pieces))
        if keep == 0 and state.empty_handovers >= MAX_EMPTY_HANDOVERS:
            return False  # a forced span's first word has not come yet
        if forced and not engine.shared_vocab:
            word = word_boundary_after(pieces, 0)
            return word < len(pieces) and has_text_after(pieces, word)
        return True


def has_text_after(pieces: Pieces, position: int) -> bool:
    """Whether some text follows the first `position` pieces (an incomplete character adds none)."""
    return any(pieces.texts[position:])


def find_end(engine: "Engine", role: str, text: str) -> int | None:
    """Where the thinking section (or, without one, the response at a stop string) ends in `text`."""
    chat_format = engine.parties[role].format
    if engine.has_thinking:
        return chat_format.find_thinking_end(text)
    found = [position for position in (text.find(stop) for stop in chat_format.stop_strings) if position >= 0]
    return min(found) if found else None


def cut_position(engine: "Engine", state: SampleState, pieces: Pieces, cut: int, usable: int) -> tuple[int, bool]:
    """Where the span is really cut, and whether it was forced: at or before `cut` on a
    character boundary (between different vocabularies, on a word boundary); after two empty
    hand-overs in a row, past the cut to keep at least one word (one character, same vocabulary)."""
    keep = pieces.char_boundary_at_or_before(cut)
    if not engine.shared_vocab:
        keep = word_boundary_at_or_before(pieces, keep)
    if keep > 0 or state.empty_handovers < MAX_EMPTY_HANDOVERS:
        return keep, False
    if engine.shared_vocab:
        forced = next((index + 1 for index, complete in enumerate(pieces.boundary) if complete), 0)
    else:
        forced = pieces.char_boundary_at_or_before(word_boundary_after(pieces, 0))
    forced = pieces.char_boundary_at_or_before(min(forced, usable))
    return forced, forced > 0


def close(engine: "Engine", state: SampleState, section: str, span: OpenSpan, keep: int, budget: int,
          forced: bool = False) -> bool:
    """Keep the first `keep` tokens of the open span (fewer if they would pass the budget), hand
    them to the other model and roll the writer back. Returns whether the budget trimmed it."""
    role, meter = span.role, engine.meter(span.role)
    left = budget - state.section_tokens(section)
    fitted = fit(span.pieces, keep, meter, left)
    engine.hand_over(state, role, span.pieces, fitted)
    engine.keep(state, role, section, span.pieces, fitted, span.generated, forced)
    state.empty_handovers = 0 if fitted else state.empty_handovers + 1
    state.turns += 1
    engine.note_turn(role, fitted)
    return fitted < keep and meter(span.pieces, keep) > left
