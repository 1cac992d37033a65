"""Token-level text helpers shared by the engine and the predictors.

- `piece_texts` decodes each generated token to the text it adds, so that the pieces join to
  exactly the decoded span. A token that ends in the middle of a UTF-8 character adds "" and the
  token that completes the character carries it. One preceding context token is decoded along,
  so tokenizers that drop a leading space at the start of a decode (SentencePiece) keep it.
- `is_word_boundary` / `back_off_to_word_boundary`: where a cut may fall when the two models'
  tokenizers differ, so that no model continues from half a word. Back-off only moves the cut
  earlier, never past it.
"""

from __future__ import annotations

from typing import Any, Sequence

_REPLACEMENT = "\ufffd"


def piece_texts(tokenizer: Any, token_ids: Sequence[int], prefix_ids: Sequence[int] = ()) -> list[str]:
    """The text each token of `token_ids` adds, decoded after the last token of `prefix_ids`."""
    anchor = list(prefix_ids[-1:])

    def stable(ids: list[int]) -> str:
        text = tokenizer.decode(anchor + ids, skip_special_tokens=False)
        return text.rstrip(_REPLACEMENT)  # an incomplete character is not text yet

    base = tokenizer.decode(anchor, skip_special_tokens=False) if anchor else ""
    full = tokenizer.decode(anchor + list(token_ids), skip_special_tokens=False)
    if not full.startswith(base):  # a decoder that rewrites the anchor: fall back to no anchor
        anchor, base = [], ""
        full = tokenizer.decode(list(token_ids), skip_special_tokens=False)
    pieces: list[str] = []
    previous = base
    for end in range(1, len(token_ids) + 1):
        current = full if end == len(token_ids) else stable(list(token_ids[:end]))
        if not current.startswith(previous):
            current = previous  # defer the text until it is stable
        pieces.append(current[len(previous):])
        previous = current
    return pieces


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def is_word_boundary(before: str, after: str) -> bool:
    """True when text may be split between `before` and `after` without cutting a word."""
    if not before or not after:
        return True
    return not (_is_word_char(before[-1]) and _is_word_char(after[0]))


def back_off_to_word_boundary(pieces: Sequence[str], cut: int) -> int:
    """The largest position <= `cut` at which `pieces` can be split on a word boundary.

    Position p splits the text into `pieces[:p]` and `pieces[p:]`; 0 is always allowed.
    Empty pieces (half characters) never start a kept tail.
    """
    position = cut
    while position > 0:
        before = "".join(pieces[:position])
        after = "".join(pieces[position:])
        if pieces[position - 1] != "" and is_word_boundary(before, after):
            return position
        position -= 1
    return 0


def first_word_boundary_after(pieces: Sequence[str], start: int) -> int:
    """The smallest position > `start` (at least 1) that splits `pieces` on a word boundary."""
    for position in range(max(start + 1, 1), len(pieces)):
        if pieces[position - 1] != "" and is_word_boundary("".join(pieces[:position]), "".join(pieces[position:])):
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
