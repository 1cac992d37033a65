"""Does a conversation survive the student's own chat template? (the SFT trainer will render it so)

`round_trip_problem(tokenizer, messages)` renders the prompt turns with the generation prompt and
the whole conversation with the tokenizer's own `apply_chat_template`, and returns None when the
whole rendering is exactly: the rendered prompt, then the assistant content unchanged, then only
special tokens and whitespace (the end-of-turn marker), and the content holds none of the
tokenizer's special tokens (a trainer would tokenize an ``<|im_end|>`` inside the text as the real
end of the turn). Otherwise it returns a sentence saying where the two differ. A template that moves, strips or rewrites the thinking section (as Qwen3's
does with a response whose ``<think>`` was never closed) fails here, so the trainer would have
learned something other than the record's text.
"""

from __future__ import annotations

from typing import Any


def _first_difference(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def round_trip_problem(tokenizer: Any, messages: list[dict[str, str]]) -> str | None:
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    specials = sorted(getattr(tokenizer, "all_special_tokens", []) or [], key=len, reverse=True)
    inside = [token for token in specials if token in turns[-1]["content"]]
    if inside:
        return f"the assistant turn contains the special token {inside[0]!r}, which would end or break the turn"
    prompt = tokenizer.apply_chat_template(turns[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(turns, tokenize=False)
    if not full.startswith(prompt):
        at = _first_difference(prompt, full)
        return f"the conversation's rendering does not start with the prompt's (they differ at character {at})"
    rest = full[len(prompt):]
    content = turns[-1]["content"]
    if not rest.startswith(content):
        at = _first_difference(content, rest)
        return (f"the template rewrites the assistant turn at character {at}: "
                f"{content[max(0, at - 20):at + 20]!r} became {rest[max(0, at - 20):at + 20]!r}")
    tail = rest[len(content):]
    for token in specials:
        tail = tail.replace(token, "")
    if tail.strip():
        return f"the template adds text after the assistant turn: {rest[len(content):][:40]!r}"
    return None


def checker(tokenizer: Any):
    """A `template_check` for `select`."""
    return lambda messages: round_trip_problem(tokenizer, messages)
