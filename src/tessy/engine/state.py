"""The small, explicit state of the engine: the pair, the limits, one sample, one result.

- `Party`: one model of the pair (backend, chat format, boundary predictor, k, sampling).
- `Limits`: the budgets, with the one budget rule every method follows (see `Limits`).
- `SampleState`: what one sample carries between steps: whose turn, each model's token ids,
  the spans so far, counters. `OpenSpan`: the span the current model is building.
  `SampleResult`: what a finished sample hands to the record.
- `FINISH_REASONS`: the only ways a sample ends.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tessy.backends.base import Backend, SamplingParams
from tessy.engine.decode import IncrementalDecoder, Pieces
from tessy.formats.base import ChatFormat
from tessy.predictors.base import BoundaryPredictor

if TYPE_CHECKING:
    from tessy.engine.turn_request import TurnRequest

STUDENT, TEACHER = "student", "teacher"
ROLES = (STUDENT, TEACHER)
OTHER = {STUDENT: TEACHER, TEACHER: STUDENT}

FinishReason = Literal["stop", "length", "max_spans", "repetition", "context"]
#: How a sample ends. Only "stop" is a complete response: the model ended it itself. The others
#: are truncations (budget, span budget, detected looping, context limit); a response truncated
#: inside its thinking keeps the thinking open (no end-of-thinking marker is written for it).
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "max_spans", "repetition", "context")
SECTIONS = ("thinking", "answer", "response")


class PromptTooLong(ValueError):
    """The rendered prompt does not fit a model's context."""


class PairError(ValueError):
    """The two models cannot write one response together."""


@dataclass
class Party:
    """One model of the pair, with everything the loop needs to drive it."""

    role: str
    backend: Backend
    format: ChatFormat
    predictor: BoundaryPredictor | None
    k: int = 20
    adaptive_k: bool = True  # ask a backend that cannot stream for fewer tokens per request (see cooperative)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    predictor_name: str = "lexicon"
    #: Messages this model sees before every prompt (`tessy.voices`); records keep the plain prompt.
    preamble: list[dict[str, str]] = field(default_factory=list)

    @property
    def tokenizer(self) -> Any:
        return self.backend.tokenizer

    def stop_ids(self) -> frozenset[int]:
        return self.format.stop_token_ids(self.tokenizer)


@dataclass
class Limits:
    """Budgets, in the student's tokens, the same for every method.

    The budget rule: a record's response never holds more than `max_tokens` tokens as the
    student's tokenizer counts them (the sum of its spans' `tokens_student`; the end-of-thinking
    marker is not counted). For families with a thinking section, the thinking gets
    `max_tokens - max_answer_tokens` and the final answer `max_answer_tokens`; for families
    without one, the whole response gets `max_tokens`.
    """

    max_tokens: int = 2048
    max_answer_tokens: int = 512
    max_spans: int = 400
    answer_chunk: int = 128  # tokens per request when one model writes a whole section

    def check(self, has_thinking: bool) -> None:
        if self.max_tokens < 1 or self.max_answer_tokens < 1 or self.max_spans < 1 or self.answer_chunk < 1:
            raise ValueError(f"limits must be at least 1: {self}")
        if has_thinking and self.max_answer_tokens >= self.max_tokens:
            raise ValueError(
                f"max_answer_tokens ({self.max_answer_tokens}) must be less than max_tokens ({self.max_tokens}): "
                "for models with a thinking section the thinking gets max_tokens - max_answer_tokens")

    def thinking_budget(self) -> int:
        return self.max_tokens - self.max_answer_tokens


@dataclass
class Span:
    """A stretch of the response written by one model, as the record stores it."""

    role: str
    section: str  # "thinking", "answer" or "response" (families without thinking)
    text: str
    tokens_student: int  # length in the student's tokens
    tokens_own: int  # length in the writing model's own tokens
    generated: int  # tokens that model generated for it
    discarded: int  # of those, thrown away on cuts
    forced: bool = False  # kept past the cut to end a run of empty hand-overs

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SampleState:
    """Everything one sample carries between steps."""

    sample_id: str
    turn: str = STUDENT
    ids: dict[str, list[int]] = field(default_factory=dict)  # each model's full sequence, own tokens
    spans: list[Span] = field(default_factory=list)
    thinking_done: bool = False  # the thinking section ended (so the record closes it)
    empty_handovers: int = 0
    turns: int = 0  # spans closed so far, empty ones included (each turn draws with its own seed)
    steps: int = 0
    generated: int = 0
    generate_s: dict[str, float] = field(default_factory=dict)
    predict_s: float = 0.0
    trace: list[dict[str, Any]] | None = None  # per-step verdicts, when the engine traces
    #: Rebuilt from a journal (`tessy.journal`): {"turns", "tokens", "wall_s"} done before; else None.
    resumed: dict[str, Any] | None = None
    #: role -> its backend reading the prompt ahead (`Pair.warm`), awaited before its first request.
    warming: dict[str, Any] = field(default_factory=dict)

    def section_text(self, *sections: str) -> str:
        return "".join(span.text for span in self.spans if span.section in sections)

    def section_tokens(self, *sections: str) -> int:
        return sum(span.tokens_student for span in self.spans if span.section in sections)

    def add_span(self, span: Span) -> None:
        """Append `span`, merged into the last one when the same model wrote both in one section
        (the other model's turn in between came out empty), so roles strictly alternate."""
        last = self.spans[-1] if self.spans else None
        if last is None or (last.role, last.section) != (span.role, span.section):
            self.spans.append(span)
            return
        last.text += span.text
        last.tokens_student += span.tokens_student
        last.tokens_own += span.tokens_own
        last.generated += span.generated
        last.discarded += span.discarded
        last.forced = last.forced or span.forced


@dataclass
class OpenSpan:
    """The span the current model is building: its tokens so far, decoded as they come."""

    role: str
    decoder: IncrementalDecoder
    pieces: Pieces = field(default_factory=Pieces)
    generated: int = 0  # tokens generated for it by requests that have ended
    #: The streamed request serving the span's steps, if one is going on (`tessy.engine.speed`).
    request: "TurnRequest | None" = None

    def handed_out(self) -> int | None:
        """Tokens the span's request has handed to steps, None where none is going on: not yet in
        `generated` nor in the sample's counters (`Pair.generate` counts a request as it ends)."""
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

    @property
    def tokens_student(self) -> int:
        return sum(span.tokens_student for span in self.spans)


def sample_seed(base_seed: int, sample_id: str, role: str, turn: int = 0) -> int:
    """The seed of one sample's role in one turn (a retried turn draws afresh)."""
    key = f"{base_seed}:{sample_id}:{role}" + (f":{turn}" if turn else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "little")
