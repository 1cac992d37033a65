"""The speed layer: how a step of Algorithm 1 gets its tokens and verdicts, as cheaply as it can.

The cooperative loop (`tessy.engine.cooperative`) asks `StepSource.step` for a step: up to k new
tokens of the model whose turn it is, added to its open span, and then the step's verdicts
(`Step.labels`). Everything here only makes that cheaper; where a span is cut is the loop's.
Each speed-up is one switch of `Speedups` (from `SynthesizeConfig.speed`, all on by default):

- `stop_at_cut`: a step streams its tokens (`Pair.generate` with `on_tokens`); the pieces so far
  are labelled as they arrive and the request is stopped once the cut is certain: the first
  wrong-kind token is there, the verdicts up to it can no longer change
  (`BoundaryPredictor.final_count`), the character after the cut is known, and a forced span
  has its word (`Step.cut_is_certain`); or once the section ends. A predictor that cannot say
  (lookahead None) or a backend that cannot stream gives the paper's generate-then-cut.
- adaptive k (per model, `Party.adaptive_k`; with `stop_at_cut`): a backend that cannot stop a
  request part-way is asked for the step's k tokens in smaller requests, about twice the role's
  recent span length (`TurnLengths.request_size`), until the cut is certain or all k are there.
- `turn_requests`: over a streaming backend a step is fed from the open span's `TurnRequest`,
  asked for all the tokens the turn may take; a step without a cut leaves it going for the next
  step, and the loop ends it (`end_turn`) at the cut, the section's end or the budget. Each step
  still sees exactly its own k tokens.
- `predictor_schedule`: a costly predictor (a model, not `cheap` rules) is asked at the step's
  first and second token (an empty hand-over), then where the role's recent turns ended
  (`TurnLengths.typical_turn`), then each time the step's tokens have doubled; a later step of
  the same turn first where the turn would typically end (at the step's end when the turn
  typically goes on past it), else halfway. Off: it is asked at every arrival, like a cheap one.
- `read_ahead`: as a sample starts, the teacher's backend reads the prompt in the background
  (`Pair.warm`, where a server keeps it for the sample) while the student writes the first turn.

With every switch off (`PAPER`) a step is the paper's: one request for its k tokens, labelled
once, cut afterwards.

Promise (tests/test_speed.py): the switches change no cut, so records are the same, switch by
switch, wherever a model's draws depend only on its sequence and position (greedy, the
in-process backend's seeded draws, a scripted backend) and the predictor's lookahead is
truthful; only the tokens generated and discarded past the cuts, and the requests made
(`steps`), shrink. A server that seeds each request draws afresh for each new request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tessy.engine.cuts import MAX_EMPTY_HANDOVERS, cut_position, has_text_after, word_boundary_after
from tessy.engine.learned import TurnLengths
from tessy.engine.state import OpenSpan, SampleState
from tessy.engine.turn_request import StreamedRequest, TurnRequest
from tessy.predictors.base import cut_index

if TYPE_CHECKING:
    from tessy.engine.pair import Pair


@dataclass(frozen=True)
class Speedups:
    """Which speed-ups are on (see the module docstring); none of them changes a record."""

    stop_at_cut: bool = True
    turn_requests: bool = True
    predictor_schedule: bool = True
    read_ahead: bool = True


#: The paper's schedule: each step generates all its k tokens, then is labelled and cut.
PAPER = Speedups(stop_at_cut=False, turn_requests=False, predictor_schedule=False, read_ahead=False)


class StepSource:
    """What the loop calls for tokens: `read_ahead`, `step`, `end_turn`, `drop`, `learn`."""

    def __init__(self, pair: "Pair", speedups: Speedups, learned: TurnLengths):
        self.pair, self.speedups, self.learned = pair, speedups, learned

    def read_ahead(self, state: SampleState, role: str) -> None:
        """A sample starts: `role` (the one that writes second) may read its prompt meanwhile."""
        if self.speedups.read_ahead:
            self.pair.warm(state, role)

    async def step(self, state: SampleState, section: str, span: OpenSpan, window: int, left: int, room: int) -> "Step":
        """Add up to `window` new tokens of `span`'s model to it (fewer where the section ends or,
        with `stop_at_cut`, once its cut is certain). `left`: the budget left, counted in the
        student's tokens; `room`: what the model's context has room for."""
        step = Step(self, state, section, span, window)
        backend = self.pair.parties[span.role].backend
        if backend.streams_tokens and self.speedups.turn_requests:
            step.stopped = await step.take(min(room, 2 * left + window))
        elif self.speedups.stop_at_cut:
            step.stopped = await step.request()
        else:
            step.stopped = await step.whole()
        return step

    async def end_turn(self, span: OpenSpan) -> None:
        """The span's turn is over: stop its streamed request, if one is going on."""
        await span.end_request()

    def drop(self, span: OpenSpan) -> None:
        """The sample is ending on an error or a cancellation: the span's request goes too."""
        if span.request is not None:
            span.request.cancel()

    def learn(self, role: str, kept: int) -> None:
        """A turn of `role` ended with `kept` tokens (adaptive k and the schedule learn from it)."""
        self.learned.note_turn(role, kept)

    def streamed(self, state: SampleState, role: str, context: list[int], n: int) -> StreamedRequest:
        """`role` continuing `context` by at most `n` tokens, streamed to the `on_tokens` it is given."""
        return lambda on_tokens: self.pair.generate(state, role, context, n, on_tokens=on_tokens)


class Step:
    """One step of the open span: its pieces as they arrive, their verdicts, and whether the cut
    is already certain (see the module docstring)."""

    def __init__(self, source: StepSource, state: SampleState, section: str, span: OpenSpan, window: int):
        self.source, self.pair, self.state, self.span = source, source.pair, state, span
        self.start, self.window = len(span.pieces), window
        self.stopped = False  # the model ended its response in this step
        self.context = state.section_text(section) + span.pieces.text
        self._labelled: tuple[int, list[bool]] | None = None  # (usable, labels) last computed
        self.certain = False  # the cut was certain before the step's tokens were all there
        predictor = self.pair.parties[span.role].predictor
        self.label_every_arrival = predictor is None or predictor.cheap or not source.speedups.predictor_schedule
        # Tokens this step must hold before a costly predictor is asked (again). A turn's first step:
        # 1 and 2 (a span cut to nothing is seen there), then about where this role's turns have
        # recently ended (a teacher whose turns outlast k is asked a third time only at the end),
        # then doubling. A later step of the turn (no cut yet) cannot hand over an empty span: it is
        # first asked where the turn would typically end if that falls inside it, only at its end if
        # the turn typically goes on past it, and halfway if the turn is already longer than usual.
        learned = source.learned
        self._typical_turn = learned.typical_turn(span.role, window)
        self._next_check = 1
        if self.start:
            left = learned.typical_turn(span.role, window + self.start) - self.start
            self._next_check = left if left > 0 else max(1, window // 2)

    async def whole(self) -> bool:
        """The paper's step: one request for the whole window; returns whether the model stopped."""
        span, role = self.span, self.span.role
        size = self.source.learned.request_size(role, self.window, adaptive=False)
        ids, stopped, generated = await self.pair.generate(self.state, role, self.state.ids[role] + span.pieces.ids,
                                                           size)
        span.generated += generated
        span.pieces.add(span.decoder, ids)
        return stopped

    async def request(self) -> bool:
        """Fill this step with requests of its own (smaller ones where the backend cannot stop
        one and the role has adaptive k) until it holds its window, its cut is certain or the
        section ends; returns whether the model stopped."""
        span, party = self.span, self.pair.parties[self.span.role]
        adaptive = party.adaptive_k and not party.backend.streams_tokens
        while True:
            received = len(span.pieces) - self.start
            size = self.source.learned.request_size(span.role, self.window - received, adaptive)
            context = self.state.ids[span.role] + span.pieces.ids
            _, stopped, generated = await self.pair.generate(self.state, span.role, context, size,
                                                             on_tokens=self.arrived)
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
        span = self.span
        self.source.learned.request_size(span.role, self.window, adaptive=False)  # counted per step: the k in effect
        fresh = False  # a request this step started has given nothing yet
        while (received := len(span.pieces) - self.start) < self.window:
            if span.request is None:
                if fresh or most <= received:
                    return False
                context = self.state.ids[span.role] + span.pieces.ids
                span.request = TurnRequest(self.source.streamed(self.state, span.role, context, most - received))
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
        end = self.pair.find_end(self.span.role, pieces.text)
        return end, pieces.tokens_ending_by(end) if end is not None else len(pieces)

    async def labels(self, usable: int) -> list[bool]:
        """Verdicts for this step's pieces before `usable` (asked of the predictor once per `usable`)."""
        if self._labelled is None or self._labelled[0] != usable:
            texts = self.span.pieces.texts[self.start : max(self.start, usable)]
            self._labelled = usable, await self.pair.label(self.state, self.span.role, self.context, texts)
        return self._labelled[1]

    async def arrived(self, ids: list[int], done: bool) -> bool:
        """`on_tokens` for `Pair.generate`: add the new pieces; True stops the request."""
        self.span.pieces.add(self.span.decoder, ids)
        if not self.source.speedups.stop_at_cut or len(self.span.pieces) - self.start >= self.window:
            return False  # the step's tokens are all wanted, or all there: its verdicts are taken as they are
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
        pair, state, pieces, role = self.pair, self.state, self.span.pieces, self.span.role
        cut = cut_index(role, labels)
        predictor = pair.parties[role].predictor
        if cut is None or predictor is None:
            return False
        if cut >= predictor.final_count(pieces.texts[self.start :], self.context):
            return False  # a verdict up to the cut may still change
        if not has_text_after(pieces, self.start + cut):
            return False  # the character after the cut decides word and character boundaries
        keep, forced = cut_position(pieces, self.start + cut, len(pieces), pair.shared_vocab, state.empty_handovers)
        if keep == 0 and state.empty_handovers >= MAX_EMPTY_HANDOVERS:
            return False  # a forced span's first word has not come yet
        if forced and not pair.shared_vocab:
            word = word_boundary_after(pieces, 0)
            return word < len(pieces) and has_text_after(pieces, word)
        return True
