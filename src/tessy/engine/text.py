"""Where text may be cut, and when it has started to loop.

- `word_boundary_at_or_before` / `word_boundary_after`: cut positions for a hand-over between
  models whose tokenizers differ, so that neither continues from half a word. A position counts
  only where the kept pieces end on a character boundary. Back-off only moves a cut earlier.
  `open_end=True` treats the end of the pieces as unknown text to come (a budget cut of a
  model that would have gone on), so the kept text must itself end with a non-word character.
  Han ideographs and kana are words of one character (those scripts put no spaces between words).
- `tail_repetition`: degenerate looping at the end of a text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tessy.engine.decode import Pieces


#: Scripts written without spaces between words (Han ideographs, kana): each character stands alone.
_UNSPACED = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))


def _is_word_char(char: str) -> bool:
    if not (char.isalnum() or char == "_"):
        return False
    code = ord(char)
    return not any(low <= code <= high for low, high in _UNSPACED)


def is_word_boundary(before: str, after: str) -> bool:
    """True when text may be split between `before` and `after` without cutting a word."""
    if not before or not after:
        return True
    return not (_is_word_char(before[-1]) and _is_word_char(after[0]))


def _splits_cleanly(pieces: "Pieces", position: int, open_end: bool) -> bool:
    if position == 0:
        return True
    if not pieces.on_char_boundary(position):
        return False
    before = pieces.text_before(position)
    after = "".join(pieces.texts[position:])
    if not after and open_end:
        return not _is_word_char(before[-1]) if before else True
    return is_word_boundary(before, after)


def word_boundary_at_or_before(pieces: "Pieces", cut: int, open_end: bool = False) -> int:
    """The largest position <= `cut` that splits `pieces` between words (0 always does)."""
    position = cut
    while position > 0 and not _splits_cleanly(pieces, position, open_end):
        position -= 1
    return position


def word_boundary_after(pieces: "Pieces", start: int) -> int:
    """The smallest position > `start` that splits `pieces` between words, else all of them."""
    for position in range(start + 1, len(pieces)):
        if _splits_cleanly(pieces, position, open_end=False):
            return position
    return len(pieces)


def tail_repetition(text: str, min_period: int = 4, max_period: int = 200, min_repeats: int = 4, min_chars: int = 64) -> bool:
    """True when `text` ends with one chunk repeated back to back (degenerate looping).

    A chunk of `period` characters counts when it repeats at least `min_repeats` times and the
    repeated run covers at least `min_chars` characters.
    """
    for period in range(min_period, max_period + 1):
        repeats = max(min_repeats, -(-min_chars // period))
        run = period * repeats
        if run > len(text):
            break
        tail = text[-period:]
        if text[-run:] == tail * repeats and tail.strip():
            return True
    return False
