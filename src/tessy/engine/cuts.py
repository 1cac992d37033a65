"""Where a span may be cut: the cut rule of Algorithm 1 applied to a span's pieces.

Owns the back-off of a predictor's cut to a place no model minds continuing from:

- a cut falls only on a character boundary (also when both models share a vocabulary, so their
  sequences never diverge inside a character);
- when the vocabularies differ, further back to a word boundary (`word_boundary_at_or_before`),
  never forward, so no model continues from half a word;
- after `MAX_EMPTY_HANDOVERS` empty hand-overs in a row the model whose turn it is keeps at least
  one word (one character, same vocabulary) past its cut: the span is `forced`, so the models
  cannot pass the turn back and forth without progress.

`open_end=True` treats the end of the pieces as unknown text to come (a budget cut of a model
that would have gone on), so the kept text must itself end with a non-word character.
Pure functions of the pieces: the loop and the speed layer (which asks whether a cut is
already certain) get the same answer.
"""

from __future__ import annotations

from tessy.engine.decode import Pieces
from tessy.engine.text import is_word_boundary, is_word_char

#: Consecutive empty hand-overs allowed before the current model must keep a word.
MAX_EMPTY_HANDOVERS = 2


def _splits_cleanly(pieces: Pieces, position: int, open_end: bool) -> bool:
    if position == 0:
        return True
    if not pieces.on_char_boundary(position):
        return False
    before = pieces.text_before(position)
    after = "".join(pieces.texts[position:])
    if not after and open_end:
        return not is_word_char(before[-1]) if before else True
    return is_word_boundary(before, after)


def word_boundary_at_or_before(pieces: Pieces, cut: int, open_end: bool = False) -> int:
    """The largest position <= `cut` that splits `pieces` between words (0 always does)."""
    position = cut
    while position > 0 and not _splits_cleanly(pieces, position, open_end):
        position -= 1
    return position


def word_boundary_after(pieces: Pieces, start: int) -> int:
    """The smallest position > `start` that splits `pieces` between words, else all of them."""
    for position in range(start + 1, len(pieces)):
        if _splits_cleanly(pieces, position, open_end=False):
            return position
    return len(pieces)


def cut_position(pieces: Pieces, cut: int, usable: int, shared_vocab: bool, empty_handovers: int) -> tuple[int, bool]:
    """Where the span is really cut, and whether it was forced: at or before `cut` on a
    character boundary (between different vocabularies, on a word boundary); after
    `MAX_EMPTY_HANDOVERS` empty hand-overs in a row, past the cut to keep at least one word (one
    character, same vocabulary), never past the `usable` pieces."""
    keep = pieces.char_boundary_at_or_before(cut)
    if not shared_vocab:
        keep = word_boundary_at_or_before(pieces, keep)
    if keep > 0 or empty_handovers < MAX_EMPTY_HANDOVERS:
        return keep, False
    if shared_vocab:
        forced = next((index + 1 for index, complete in enumerate(pieces.boundary) if complete), 0)
    else:
        forced = pieces.char_boundary_at_or_before(word_boundary_after(pieces, 0))
    forced = pieces.char_boundary_at_or_before(min(forced, usable))
    return forced, forced > 0


def has_text_after(pieces: Pieces, position: int) -> bool:
    """Whether some text follows the first `position` pieces (an incomplete character adds none)."""
    return any(pieces.texts[position:])
