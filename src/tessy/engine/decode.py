"""Turning a model's token ids into text, and the one chunked "write until" primitive.

Owns two things every method uses:

- `IncrementalDecoder`: a model's new tokens, one at a time, as the text each one adds. A token
  that ends inside a multi-byte character adds "" and is marked as not on a character boundary;
  the token that completes the character carries all of it. So the pieces of a span always join
  to whole characters, U+FFFD never appears from a split character, and a cut can be placed only
  where `boundary[i]` is true. The decoder works on a short window of the ids before the new
  ones, so tokenizers that drop a leading space at the start of a decode (SentencePiece) keep it,
  and the cost per token does not grow with the sequence.
- `write_until`: one model continues its sequence in chunks until a stop token, an end found in
  its text (end of thinking, a stop string), the token budget, the context limit or repetition.
  The budget is counted by a `meter` (in the student's tokens) and is never exceeded: the chunk
  size is clipped to what is left, and text that still overshoots (another tokenizer counts more
  tokens) is trimmed back to a character boundary that fits. Every baseline phase and the final
  answer of TESSY are written with it; the cooperative loop uses the decoder directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from tessy.engine.text import tail_repetition

_REPLACEMENT = "\ufffd"
#: Context ids decoded along with the first new token (leading spaces, merges across the edge).
_WINDOW = 6


class IncrementalDecoder:
    """The text each pushed token adds after `context_ids` (see the module docstring).

    `context_ids` must end on a character boundary (every prompt, kept span and hand-over does).
    """

    def __init__(self, tokenizer: Any, context_ids: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self._ids = list(context_ids[-_WINDOW:])
        self._prefix = 0  # the window decoded before the unread tokens
        self._read = len(self._ids)  # ids before this have been given out as text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> tuple[str, bool]:
        """(text this token adds, whether the text now ends on a character boundary)."""
        self._ids.append(int(token_id))
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if after.endswith(_REPLACEMENT) or not after.startswith(before):
            return "", False  # an incomplete character: it comes with the token that completes it
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :], True

    @property
    def pending(self) -> bool:
        """Whether pushed tokens hold bytes of a character not yet complete."""
        return self._read < len(self._ids)


@dataclass
class Pieces:
    """A model's own new tokens with the text each adds (`IncrementalDecoder`)."""

    ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    boundary: list[bool] = field(default_factory=list)  # after ids[:i+1], text ends on a char boundary

    def add(self, decoder: IncrementalDecoder, new_ids: Sequence[int]) -> None:
        """Push `new_ids` through `decoder` and append them with the text each adds."""
        for token_id in new_ids:
            text, complete = decoder.push(token_id)
            self.ids.append(int(token_id))
            self.texts.append(text)
            self.boundary.append(complete)

    def truncate(self, count: int) -> None:
        """Drop every piece after the first `count`."""
        del self.ids[count:], self.texts[count:], self.boundary[count:]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def text_before(self, count: int) -> str:
        return "".join(self.texts[:count])

    def on_char_boundary(self, position: int) -> bool:
        """Whether the first `position` tokens end on a character boundary (0 always does)."""
        return position == 0 or self.boundary[position - 1]

    def char_boundary_at_or_before(self, position: int) -> int:
        while position > 0 and not self.boundary[position - 1]:
            position -= 1
        return position

    def tokens_ending_by(self, offset: int) -> int:
        """How many tokens end at or before character `offset` of `text`."""
        position = 0
        for index, piece in enumerate(self.texts):
            if position + len(piece) > offset or (not self.boundary[index] and position + len(piece) == offset):
                return index
            position += len(piece)
        return len(self.texts)


def decode_pieces(tokenizer: Any, ids: Sequence[int], context_ids: Sequence[int] = ()) -> list[str]:
    """The text each of `ids` adds after `context_ids` (an incomplete character: "" until completed)."""
    pieces = Pieces()
    pieces.add(IncrementalDecoder(tokenizer, context_ids), ids)
    return pieces.texts


#: Counts text (the first `n` tokens of some pieces) in the tokens a budget is measured in.
Meter = Callable[[Pieces, int], int]


def fit(pieces: Pieces, count: int, meter: Meter, budget: int) -> int:
    """The largest `n <= count` on a character boundary with `meter(pieces, n) <= budget`."""
    top = n = pieces.char_boundary_at_or_before(count)
    while n > 0 and (used := meter(pieces, n)) > budget:
        # Step back in proportion to the overshoot (another tokenizer may count many per token).
        n = pieces.char_boundary_at_or_before(min(n - 1, n * budget // used))
    while n < top:  # the proportional step may undershoot: grow back while it still fits
        after = next(i + 1 for i in range(n, top) if pieces.boundary[i])
        if meter(pieces, after) > budget:
            break
        n = after
    return n


@dataclass
class Written:
    """What one model wrote in one phase (`write_until`)."""

    pieces: Pieces = field(default_factory=Pieces)
    finish: str = "length"  # "stop", "end" (find_end matched), "length", "context", "repetition"
    generated: int = 0  # tokens generated, those dropped afterwards included

    @property
    def ids(self) -> list[int]:
        return self.pieces.ids

    @property
    def text(self) -> str:
        return self.pieces.text


#: A generate call: (context ids, n) -> (new ids without a stop token, whether it stopped, generated count).
GenerateFn = Callable[[list[int], int], Awaitable[tuple[list[int], bool, int]]]


async def write_until(generate: GenerateFn, backend: Any, context: list[int], *, budget: int, meter: Meter,
                      chunk: int, find_end: Callable[[str], int | None] | None = None,
                      repetition_context: str = "") -> Written:
    """Continue `context` until a stop token ("stop"), `find_end(text)` gives an offset ("end":
    only tokens that end at or before it are kept), `budget` counted by `meter` ("length"), the
    context limit ("context") or a repeating tail ("repetition"). What is kept always ends on a
    character boundary and never counts more than `budget`."""
    written = Written()
    decoder = IncrementalDecoder(backend.tokenizer, context)
    pieces = written.pieces
    while True:
        used = meter(pieces, len(pieces)) if len(pieces) else 0
        max_context = backend.max_context  # a server may lower it when it refuses a request
        room = max_context - len(context) - len(pieces)
        n = min(chunk, budget - used, room)
        if n <= 0:
            written.finish = "length" if budget - used <= 0 else "context"
            break
        new_ids, stopped, generated = await generate(context + pieces.ids, n)
        written.generated += generated
        pieces.add(decoder, new_ids)
        text = pieces.text
        end = find_end(text) if find_end is not None else None
        if end is not None:
            pieces.truncate(pieces.tokens_ending_by(end))
            written.finish = "end"
            break
        if stopped:
            written.finish = "stop"
            break
        if tail_repetition(repetition_context + text):
            written.finish = "repetition"
            break
        if not new_ids and backend.max_context >= max_context:
            raise RuntimeError(f"{backend.model_name} returned no tokens and no stop for a request of {n}")
    # Never end inside a character, never past the budget.
    kept = fit(pieces, len(pieces), meter, budget)
    if kept < len(pieces):
        pieces.truncate(kept)
        if written.finish in ("stop", "end"):
            written.finish = "length"
    return written
