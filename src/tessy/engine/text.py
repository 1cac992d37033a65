"""Plain-text rules: where a word ends, and when a text has started to loop.

- `is_word_char` / `is_word_boundary`: what splits text between words (a cut between models
  whose tokenizers differ must fall there; `tessy.engine.cuts` applies it to a span's pieces).
  Han ideographs and kana are words of one character (those scripts put no spaces between words).
- `tail_repetition`: degenerate looping at the end of a text.

Strings in, answers out: nothing here knows about tokens.
"""

from __future__ import annotations


#: Scripts written without spaces between words (Han ideographs, kana): each character stands alone.
_UNSPACED = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))


def is_word_char(char: str) -> bool:
    if not (char.isalnum() or char == "_"):
        return False
    code = ord(char)
    return not any(low <= code <= high for low, high in _UNSPACED)


def is_word_boundary(before: str, after: str) -> bool:
    """True when text may be split between `before` and `after` without cutting a word."""
    if not before or not after:
        return True
    return not (is_word_char(before[-1]) and is_word_char(after[0]))


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
