"""Annotator answers: parsing the phrases an annotator lists, and locating them in the segment.

Owns the text side of annotation, with no annotator, model or file in sight; `annotate.py` calls
it for every answer.

Promises:

- `parse_answer(raw)` returns the non-empty string phrases of the first usable array in the
  answer, tolerant of code fences, text around the array, a ``{"spans": [...]}`` object (its one
  list value), single quotes (Python literals) and trailing commas; non-string items are
  dropped. An answer with no such array raises `AnswerError` (a ValueError) quoting its start.
- `locate_spans(text, phrases)` returns the character spans found (sorted, overlapping ones
  merged) and the phrases not found. Each phrase is looked up in order after the previous one's
  end: exactly (first on word boundaries, so "so" is not found inside "also"), then tolerant of
  whitespace, quote style and case; then anywhere not overlapping a span already found.
"""

from __future__ import annotations

import ast
import json
import re

# -- parsing ---------------------------------------------------------------------------------


class AnswerError(ValueError):
    """An annotator answer holds no usable array of phrases."""


_FENCE_RE = re.compile(r"```[\w+-]*\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA_RE = re.compile(r",\s*([\]}])")


def parse_answer(raw: str) -> list[str]:
    """The phrases listed in an annotator's answer (see the module doc); raises AnswerError."""
    if not isinstance(raw, str) or not raw.strip():
        raise AnswerError("empty answer")
    candidates = [m.group(1) for m in _FENCE_RE.finditer(raw)] + [raw]
    for candidate in candidates:
        found = _first_array(candidate)
        if found is not None:
            return [item for item in found if isinstance(item, str) and item.strip()]
    snippet = raw.strip().replace("\n", " ")
    raise AnswerError(f"no JSON array of strings in the answer: {snippet[:120]!r}")


def _first_array(text: str) -> list | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        start = match.start()
        value = None
        for fixed in (text[start:], _TRAILING_COMMA_RE.sub(r"\1", text[start:])):
            try:
                value, _ = decoder.raw_decode(fixed)
                break
            except json.JSONDecodeError:
                value = _literal(fixed)
                if value is not None:
                    break
        if isinstance(value, dict):  # {"spans": [...]}: the one list value
            lists = [v for v in value.values() if isinstance(v, list)]
            value = lists[0] if len(lists) == 1 else None
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) or v is None for v in value):
            return value
    return None


def _literal(text: str):
    """A Python literal (single-quoted strings) at the start of `text`, or None."""
    opener = text[0]
    closer = "]" if opener == "[" else "}"
    end = text.find(closer)
    while end >= 0:
        try:
            return ast.literal_eval(text[: end + 1])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            end = text.find(closer, end + 1)
    return None


# -- locating --------------------------------------------------------------------------------

_QUOTES = {"'": "['’‘]", "’": "['’‘]", "‘": "['’‘]", '"': "[\"“”]", "“": "[\"“”]", "”": "[\"“”]"}


def _patterns(phrase: str) -> list[re.Pattern[str]]:
    """Ways to find `phrase`, strictest first."""
    exact = re.escape(phrase)
    before = r"(?<!\w)" if phrase[:1].isalnum() or phrase[:1] == "_" else ""
    after = r"(?!\w)" if phrase[-1:].isalnum() or phrase[-1:] == "_" else ""
    words = [
        "".join(_QUOTES.get(ch, re.escape(ch)) for ch in word) for word in phrase.split()
    ]
    loose = r"\s+".join(words)
    return [
        re.compile(before + exact + after),
        re.compile(exact),
        re.compile(before + loose + after, re.IGNORECASE),
        re.compile(loose, re.IGNORECASE),
    ]


def locate_spans(text: str, phrases: list[str]) -> tuple[list[tuple[int, int]], list[str]]:
    """Character spans of `phrases` in `text` (sorted, merged where they overlap) and the
    phrases not found; see the module doc for the search order."""
    found: list[tuple[int, int]] = []
    missing: list[str] = []
    cursor = 0
    for phrase in phrases:
        if not phrase.strip():
            continue
        patterns = _patterns(phrase.strip())
        span = None
        for pattern in patterns:  # in order: after the previous phrase
            m = pattern.search(text, cursor)
            if m and m.end() > m.start():
                span = m.span()
                cursor = m.end()
                break
        if span is None:  # out of order: anywhere that is still free
            for pattern in patterns:
                span = next((m.span() for m in pattern.finditer(text)
                             if m.end() > m.start() and all(m.end() <= a or m.start() >= b for a, b in found)), None)
                if span is not None:
                    break
        if span is None:
            missing.append(phrase)
        else:
            found.append(span)
    return _merge(found), missing


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
