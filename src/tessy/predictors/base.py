"""The boundary-predictor interface: where must a freshly generated span be cut?

A predictor labels every token of a new span as style (tone, hesitation, transition,
narration) or capability (the reasoning itself), given the text that precedes the span.
Every token gets a verdict, the first one included. The cut follows from the labels and the
role of the model that wrote the span (paper §2.2, Eq. 5):

- a teacher span keeps its capability tokens and is cut before its first style token;
- a student span keeps its style tokens and is cut before its first capability token.

Implementations may batch: `label` is awaited concurrently by many samples, and a predictor is
free to gather the waiting queries and label them together.

When a verdict is final (`final_count`): a piece's verdict may still change when more text
follows it (a rule that needs the next word, a classifier token that is not complete). A
predictor says how far later text can reach back, so the engine can stop generating as soon as
the verdicts up to the first wrong-kind token can no longer change. `lookahead_chars` is that
reach in non-whitespace characters after a piece (0: a verdict depends only on the text up to
its piece; None, the default: unknown, so no verdict is final before the model's request ends
and generation is never stopped early). A predictor that can tell sooner overrides `final_count`,
which also gets the context the pieces follow (the lexicon does: see its module doc).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class SpanQuery:
    """A new span to label: `pieces[i]` is the decoded text of its i-th token, in the
    tokenization of the model that generated it; `context` is the response text before it.
    `key` names the sample it belongs to (empty: none): a predictor may keep what it read of a
    sample's text for the sample's next query (`BoundaryPredictor.forget` ends that)."""

    context: str
    pieces: tuple[str, ...]
    key: str = ""


class BoundaryPredictor(ABC):
    """Labels tokens of a span as style (True) or capability (False)."""

    name: str = "predictor"
    #: Non-whitespace characters after a piece that can still change its verdict (None: unknown).
    lookahead_chars: int | None = None
    #: Whether a call costs next to nothing (rules, not a model). A streamed step labels its
    #: tokens at every arrival with a cheap predictor; a costly one is asked a few times per step
    #: (`tessy.engine.speed.Step.arrived`), about log2(k) calls at most, not k.
    cheap: bool = False

    @abstractmethod
    async def label(self, query: SpanQuery) -> list[bool]:
        """Return one `is_style` verdict per piece of `query`."""

    def final_count(self, pieces: Sequence[str], context: str = "") -> int:
        """How many leading `pieces` have verdicts that no text after them can change (labelled
        with the same `context`, alone or with more pieces after them)."""
        if self.lookahead_chars is None:
            return 0
        reach = self.lookahead_chars
        return count_final(pieces, lambda after: sum(not c.isspace() for c in after) >= reach)

    def forget(self, key: str) -> None:
        """The sample `key` has ended: drop whatever was kept for it (nothing, by default)."""

    async def aclose(self) -> None:
        """Free resources (threads, models)."""


def cut_index(role: str, is_style: list[bool]) -> int | None:
    """Index of the first token the span must drop, or None when the whole span is kept.

    Teacher spans stop before their first style token; student spans before their first
    capability token.
    """
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', not {role!r}")
    wanted_style = role == "student"
    for index, style in enumerate(is_style):
        if style != wanted_style:
            return index
    return None


def piece_bounds(pieces: tuple[str, ...] | list[str], offset: int = 0) -> list[tuple[int, int]]:
    """Character range `[start, end)` of each piece in `"".join(pieces)`, shifted by `offset`.

    Pieces are decoded one token at a time, so a character split across tokens decodes as
    U+FFFD in each; predictors work on the joined pieces, never on a re-decoded text.
    """
    bounds = []
    pos = offset
    for piece in pieces:
        bounds.append((pos, pos + len(piece)))
        pos += len(piece)
    return bounds


def fill_whitespace_verdicts(verdicts: list[bool | None]) -> list[bool]:
    """Give whitespace-only pieces (verdict None) a label: that of the preceding piece of the
    span; for leading whitespace, that of the first non-whitespace piece; for an all-whitespace
    span, capability (False)."""
    first = next((v for v in verdicts if v is not None), False)
    filled: list[bool] = []
    previous = first
    for verdict in verdicts:
        previous = previous if verdict is None else verdict
        filled.append(previous)
    return filled


def count_final(pieces: Sequence[str], settled: Callable[[str], bool], from_first_char: bool = False) -> int:
    """How many leading pieces have final verdicts. A piece with text is final when
    `settled(text after it)` holds, the text measured after the piece (or, `from_first_char`,
    after its first non-whitespace character: a predictor that labels a piece by that character);
    a whitespace piece takes its verdict from a neighbour (`fill_whitespace_verdicts`), so it is
    final when that neighbour is."""
    text = "".join(pieces)
    flags: list[bool | None] = []
    for (start, end), piece in zip(piece_bounds(pieces), pieces):
        if not piece.strip():
            flags.append(None)
            continue
        anchor = start + len(piece) - len(piece.lstrip()) + 1 if from_first_char else end
        flags.append(settled(text[anchor:]))
    first = next((flag for flag in flags if flag is not None), False)
    count, previous = 0, first
    for flag in flags:
        previous = previous if flag is None else flag
        if not previous:
            break
        count += 1
    return count
