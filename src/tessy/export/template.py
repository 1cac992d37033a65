"""Does a row survive the student's own chat template? (the SFT trainer will render it so)

`round_trip_problem(tokenizer, messages, expected)` renders the prompt turns with the generation
prompt and the whole conversation with the tokenizer's own `apply_chat_template`, and returns None
when the whole rendering is exactly: the rendered prompt, then `expected` (the response as the
student wrote it, i.e. the record's assistant text; by default the last turn's content), then only
special tokens and whitespace (the end-of-turn marker), and no text field of the assistant turn
(``content``, ``reasoning_content``, ``thinking``) holds one of the tokenizer's special tokens (a
trainer would tokenize an ``<|im_end|>`` inside the text as the real end of the turn). Otherwise it
returns a sentence saying where the two differ. A template that moves, strips or rewrites the
thinking section (Qwen3's with a ``<think>`` never closed, R1-Distill's always, any template given
the thinking in a field it does not read) fails here, so the trainer would have learned something
other than the record's text.

`completion_problem(tokenizer, prompt, completion, end_of_turn)` checks a prompt-completion row the
way TRL tokenizes one (each text through the tokenizer, special tokens added): the prompt's tokens
are a prefix of the prompt + completion's, BOS is not doubled, the completion ends with the
end-of-turn token, and its text holds no other special token.

`TemplateCheck` applies the right check to each exported row and counts the problems by kind
(`summary()`: one line with the reason and the count). `rendered_length` is the row's length in
student tokens as the trainer sees it (for ``--max-tokens``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

TEXT_FIELDS = ("content", "reasoning_content", "thinking")


def special_tokens(tokenizer: Any) -> list[str]:
    """Every special token of the tokenizer (named ones and added special ones), longest first."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            found.add(str(token.content))
    return sorted((t for t in found if t), key=lambda t: (-len(t), t))


def _first_difference(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _problem(tokenizer: Any, messages: list[dict[str, Any]], expected: str | None = None) -> tuple[str, str] | None:
    """(kind, detail) of why the conversation does not round-trip, or None."""
    specials = special_tokens(tokenizer)
    last = messages[-1]
    for field in TEXT_FIELDS:
        value = last.get(field)
        inside = [token for token in specials if isinstance(value, str) and token in value]
        if inside:
            return ("the assistant turn contains a special token, which would end or break the turn",
                    f": {inside[0]!r} in {field}")
    prompt_turns = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    try:
        prompt = tokenizer.apply_chat_template(prompt_turns, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as exc:  # a template's raise_exception (GPT-OSS refuses channel tags in content)
        message = str(exc).splitlines()[0][:200] if str(exc) else repr(exc)
        return "the chat template refuses the conversation", f": {message}"
    if not full.startswith(prompt):
        return ("the conversation's rendering does not start with the prompt's",
                f" (they differ at character {_first_difference(prompt, full)})")
    rest = full[len(prompt):]
    content = last["content"] if expected is None else expected
    if not rest.startswith(content):
        at = _first_difference(content, rest)
        return ("the template rewrites the assistant turn",
                f" at character {at}: {content[max(0, at - 20):at + 20]!r} became {rest[max(0, at - 20):at + 20]!r}")
    tail = rest[len(content):]
    for token in specials:
        tail = tail.replace(token, "")
    if tail.strip():
        return "the template adds text after the assistant turn", f": {rest[len(content):][:40]!r}"
    return None


def round_trip_problem(tokenizer: Any, messages: list[dict[str, Any]], expected: str | None = None) -> str | None:
    found = _problem(tokenizer, messages, expected)
    return None if found is None else found[0] + found[1]


def _completion_problem(tokenizer: Any, prompt: str, completion: str, end_of_turn: str,
                        texts: tuple[str, ...] | None = None) -> tuple[str, str] | None:
    if not end_of_turn or not completion.endswith(end_of_turn):
        return "the completion does not end with the end-of-turn token", f" {end_of_turn!r}"
    # The family's own markers (harmony's channel tokens) belong in the completion; the texts the
    # models wrote between them (thinking, answer; by default the whole completion) must hold none.
    texts = (completion[: len(completion) - len(end_of_turn)],) if texts is None else texts
    inside = [token for token in special_tokens(tokenizer) if any(token in text for text in texts)]
    if inside:
        return "the response's text contains a special token, which would end or break the turn", f": {inside[0]!r}"
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    full_ids = list(tokenizer(prompt + completion)["input_ids"])
    if full_ids[: len(prompt_ids)] != prompt_ids:
        at = _first_difference(prompt_ids, full_ids)  # type: ignore[arg-type]
        return ("the prompt's tokens are not a prefix of the prompt + completion's (a token spans the boundary)",
                f" at token {at}")
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and full_ids[:2] == [bos, bos]:
        return "the tokenized row starts with BOS twice", ""
    eos = tokenizer.convert_tokens_to_ids(end_of_turn)
    if isinstance(eos, int) and full_ids[-1:] != [eos]:
        return "the end-of-turn token is not one token at the end", f" ({end_of_turn!r})"
    return None


def completion_problem(tokenizer: Any, prompt: str, completion: str, end_of_turn: str,
                       texts: tuple[str, ...] | None = None) -> str | None:
    found = _completion_problem(tokenizer, prompt, completion, end_of_turn, texts)
    return None if found is None else found[0] + found[1]


class TemplateCheck:
    """The check `select` runs on each row: `check(record_id, fields, record)` is None when the
    row's text survives the trainer's rendering, else the drop reason ``chat_template``; the
    problems are counted by kind, with the first record and detail of each. `layout` (a
    `tessy.export.layouts.Layout`) gives the end-of-turn text and the student's format, which
    tells the model-written texts of a completion from the family's markers."""

    def __init__(self, tokenizer: Any, layout: Any = None) -> None:
        self.tokenizer = tokenizer
        self.layout = layout
        self.problems: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def __call__(self, record_id: str, fields: dict[str, Any], record: dict) -> str | None:
        if "prompt" in fields:
            from tessy.export.layouts import split_response

            fmt, content = self.layout.fmt, record["messages"][-1]["content"]
            texts = split_response(fmt, content) if fmt is not None and fmt.has_thinking else (content,)
            found = _completion_problem(self.tokenizer, fields["prompt"], fields["completion"],
                                        self.layout.end_of_turn, tuple(texts or (content,)))
        else:
            found = _problem(self.tokenizer, fields["messages"], record["messages"][-1]["content"])
        if found is None:
            return None
        kind, detail = found
        self.problems[kind] += 1
        self.examples.setdefault(kind, f"{record_id}{detail}")
        return "chat_template"

    def counts(self) -> dict[str, int]:
        return dict(self.problems.most_common())

    def summary(self) -> str | None:
        """One line: how many rows were dropped and why (None when none were)."""
        if not self.problems:
            return None
        total = sum(self.problems.values())
        reasons = "; ".join(f"{n} because {kind} (first: {self.examples[kind]})"
                            for kind, n in self.problems.most_common())
        hint = ""
        layout = self.layout
        if layout is not None and layout.kind == "messages":
            harmony_text = getattr(layout.fmt, "name", None) == "harmony" and layout.reasoning_field == "content"
            hint = ("; a harmony student's thinking belongs in --reasoning-field thinking" if harmony_text
                    else "; --layout prompt-completion keeps the text as the student wrote it")
        return f"--check-template dropped {total} row{'s' if total != 1 else ''}: {reasons}{hint}"


def rendered_length(tokenizer: Any, fields: dict[str, Any], fmt: Any, response: str) -> int:
    """The row's length in the student's tokens, as a trainer tokenizes it: a conversation through
    the chat template (no special tokens added), a prompt-completion pair as one text (special
    tokens added). Without a usable chat template: the format's own prompt, then `response` (the
    record's assistant text) after the thinking opener the prompt ends with."""
    if "prompt" in fields:
        return len(tokenizer(fields["prompt"] + fields["completion"])["input_ids"])
    messages = fields["messages"]
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            return len(tokenizer.encode(text, add_special_tokens=False))
        except Exception:  # a template that refuses the row: count it as the format writes it
            pass
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    opener = fmt.thinking_opener if fmt.has_thinking else ""
    if opener and response.startswith(opener):
        response = response[len(opener):]
    return len(fmt.prompt_ids(tokenizer, prompt)) + len(tokenizer.encode(response, add_special_tokens=False))
