"""Algorithm 1 of the paper: two models write one response together, span by span (`cooperate`).

The student writes first. The model whose turn it is generates up to k tokens; its boundary
predictor labels every new token as style or capability; the span is cut before the first token
of the wrong kind for its role (teacher: style; student: capability), the cut backs off to a
character boundary (a word boundary when the vocabularies differ; `tessy.engine.cuts`), and the
rest is thrown away. A cut hands the turn to the other model; no cut lets the same model go on.
When the thinking section ends, the student writes the whole final answer. Families without a
thinking section alternate over the whole response until a model stops.

How a sample ends (`FINISH_REASONS`): "stop" (a model ended the response, or the thinking ended
and the student's answer stopped); "length" (the budget in `Limits`, never exceeded: each step
asks for at most what is left, and a span that still counts more is trimmed); "max_spans";
"repetition"; "context". A sample that ends inside its thinking keeps the thinking open.

Owns the loop and `Engine`, the `Pair` it runs on with what the loop adds: the speed layer
(`engine.steps`, `tessy.engine.speed`: how a step's tokens are got, never where it is cut), the
run-wide turn lengths it learns from (`engine.learned`) and the loop's observer
(`engine.observer`, `tessy.engine.observer`: the journal, for mid-trace resume). A resumed
sample starts from the state the observer rebuilds (the same sequences, spans, open span, turn
count and so per-turn seeds), so it goes on as it would have. The final answer is not journaled.
"""

from __future__ import annotations

import time

from tessy.engine.cuts import cut_position
from tessy.engine.decode import IncrementalDecoder, fit
from tessy.engine.learned import TurnLengths
from tessy.engine.observer import LoopObserver
from tessy.engine.pair import Pair
from tessy.engine.speed import StepSource, Speedups
from tessy.engine.state import OTHER, STUDENT, Limits, OpenSpan, Party, SampleResult, SampleState
from tessy.engine.text import tail_repetition
from tessy.predictors.base import cut_index

THINKING_DONE = "thinking_done"


class Engine(Pair):
    """A `Pair` that runs Algorithm 1 (`run`), with its speed layer (`speedups`: which speed-ups
    are on), the turn lengths the run learns and the loop's observer (None: no listener)."""

    def __init__(self, student: Party, teacher: Party, limits: Limits | None = None, seed: int = 0,
                 trace: bool = False, speedups: Speedups | None = None, observer: LoopObserver | None = None):
        super().__init__(student, teacher, limits, seed, trace)
        self.learned = TurnLengths(tuple(self.parties))
        self.steps = StepSource(self, speedups or Speedups(), self.learned)
        self.observer = observer or LoopObserver()

    async def run(self, sample_id: str, messages: list[dict[str, str]]) -> SampleResult:
        """Algorithm 1 for one sample (`cooperate`)."""
        return await cooperate(self, sample_id, messages)

    def k_used(self) -> dict[str, float]:
        """Mean tokens asked for per cooperative request or step, per role (the k in effect)."""
        return self.learned.k_used()


async def cooperate(engine: Engine, sample_id: str, messages: list[dict[str, str]]) -> SampleResult:
    """Algorithm 1 for one sample (the paper's line numbers in the comments)."""
    started = time.perf_counter()
    state = engine.new_state(sample_id, messages)  # lines 4-6: y = [], the student (state.turn) starts
    section = "thinking" if engine.has_thinking else "response"
    budget = engine.limits.thinking_budget() if engine.has_thinking else engine.limits.max_tokens
    steps, observer = engine.steps, engine.observer
    span: OpenSpan | None = None
    try:
        finish = observer.resume(engine, state, messages)  # a journaled sample goes on where it was
        if finish is None and not state.turns:  # the teacher reads the prompt while the student writes
            steps.read_ahead(state, OTHER[state.turn])
        span = reopen_span(engine, state)
        while finish is None:  # line 7: until the thinking (or, without one, the response) ends
            role, party, meter = state.turn, engine.parties[state.turn], engine.meter(state.turn)
            if span is None:
                span = open_span(engine, state)
            left = budget - state.section_tokens(section) - meter(span.pieces, len(span.pieces))
            room = party.backend.max_context - len(state.ids[role]) - len(span.pieces)
            repeating = len(span.pieces) > 0 and tail_repetition(state.section_text(section) + span.pieces.text)
            if len(state.spans) >= engine.limits.max_spans or left <= 0 or room <= 0 or repeating:
                # The sample ends before its models do: the open span is kept as it is.
                finish = ("repetition" if repeating else "length" if left <= 0 else "context" if room <= 0
                          else "max_spans")
                await steps.end_turn(span)
                keep, forced, cut = len(span.pieces), False, None
            else:
                # Line 8: generate up to k new tokens, never more than the budget or context left.
                step = await steps.step(state, section, span, min(party.k, left, room), left, room)
                # The end of the thinking (or a stop string) ends the span; its marker is dropped.
                end = engine.find_end(role, span.pieces.text)
                usable = len(span.pieces) if end is None else span.pieces.tokens_ending_by(end)
                labels = await step.labels(usable)  # line 9: label every new token, style or capability
                cut = cut_index(role, labels)  # before the first token of the wrong kind for this role
                if cut is None and end is None and not step.stopped:
                    observer.step_kept(state, span)
                    continue  # no cut: the same model goes on
                await steps.end_turn(span)
                keep, forced = usable, False
                if cut is not None:  # line 10: truncate, backed off to a character (or word) boundary
                    keep, forced = cut_position(span.pieces, step.start + cut, usable, engine.shared_vocab,
                                                state.empty_handovers)
                if state.trace is not None:
                    state.trace.append({"role": role, "span_start": step.start, "pieces": span.pieces.texts[step.start:],
                                        "labels": labels, "cut": cut, "keep": keep, "forced": forced,
                                        "ended": end is not None or step.stopped})
            # Line 11: append the span to y: kept by its model (within the budget), handed to the other.
            allowed = budget - state.section_tokens(section)
            kept = fit(span.pieces, keep, meter, allowed)
            engine.hand_over(state, role, span.pieces, kept)
            engine.commit(state, role, section, span.pieces, kept, span.generated, forced)
            state.empty_handovers = 0 if kept else state.empty_handovers + 1
            state.turns += 1
            steps.learn(role, kept)
            if finish is None:
                if kept < keep and meter(span.pieces, keep) > allowed:
                    finish = "length"  # the budget trimmed the span
                elif tail_repetition(state.section_text(section)):
                    finish = "repetition"
                elif cut is None:  # the model ended the section itself
                    finish = THINKING_DONE if engine.has_thinking else "stop"
                else:  # lines 12-19: a cut hands the turn to the other model
                    state.turn = OTHER[role]
            observer.turn_closed(state, finish)
            span = None
        if finish == THINKING_DONE:  # lines 21-22: the student writes the whole final answer
            written = await engine.write_answer(state, STUDENT)
            finish = "stop" if written.finish == "stop" else written.finish
    finally:
        if span is not None:  # an error or a cancellation: the open span's request goes too
            steps.drop(span)
        engine.release(state)
        observer.sample_left(sample_id)
    result = engine.result(state, messages, finish, started)
    if state.resumed:  # the record says so; its counters already include what came before
        result.wall_s += state.resumed["wall_s"]
        result.extra = {**(result.extra or {}),
                        "resumed": {"turns": state.resumed["turns"], "tokens": state.resumed["tokens"]}}
    return result


def open_span(engine: Pair, state: SampleState) -> OpenSpan:
    """A new span for the model whose turn it is, decoded after its sequence so far."""
    role = state.turn
    return OpenSpan(role, IncrementalDecoder(engine.parties[role].tokenizer, state.ids[role]))


def reopen_span(engine: Pair, state: SampleState) -> OpenSpan | None:
    """The open span an observer rebuilt (`state.resumed["open"]`: its ids and tokens generated so
    far), as the loop had it after its last step without a cut; None if there is none."""
    rebuilt = (state.resumed or {}).pop("open", None)
    if rebuilt is None:
        return None
    span = open_span(engine, state)
    span.pieces.add(span.decoder, rebuilt["ids"])
    span.generated = rebuilt["generated"]
    return span
