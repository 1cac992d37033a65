"""The chat-format interface: how one model family writes a prompt, its thinking and its answer.

A format answers four questions for the engine, for one model family:

1. `prompt_text(tokenizer, messages)`: the exact text up to where the model starts writing,
   rendered through the tokenizer's own chat template wherever one exists, and ending with the
   thinking opener when the family has a thinking section (so both models write thinking text);
2. `find_thinking_end(text)`: where, in text this model generated, its thinking section ends;
3. `answer_opener`: what this family writes between the thinking text and the final answer,
   used when the thinking end is handed over from the other model;
4. `assistant_content(thinking, answer, thinking_done)`: the assistant message exactly as this
   family writes it, used for the record (always in the student's format). Thinking that did
   not end (the budget cut it) stays open: no end marker, no answer.

Families without a thinking section (`has_thinking = False`) alternate over the whole response.

Helpers built on these: `prompt_ids` (the prompt tokenized with the tokenizer's BOS exactly once),
`split_thinking(text)` (thinking and answer of generated text), `answer_opener_after(text)` (the
opener to append after handed-over thinking text, without repeating its trailing newline).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class ChatFormat(ABC):
    name: str
    #: Whether responses have a thinking section followed by a final answer.
    has_thinking: bool = True
    #: Text placed right after the generation prompt so that the model writes thinking text.
    thinking_opener: str = ""
    #: Text that ends the thinking section and opens the answer, in this family's own syntax.
    answer_opener: str = ""
    #: Strings that end a response in this family besides the tokenizer's stop tokens.
    stop_strings: tuple[str, ...] = ()

    @abstractmethod
    def prompt_text(self, tokenizer: Any, messages: list[dict[str, str]]) -> str:
        """The full text the model continues: chat template + generation prompt + opener."""

    def prompt_ids(self, tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
        """`prompt_text` tokenized, starting with the tokenizer's BOS exactly once.

        A template that writes `bos_token` itself already has it in the text; a tokenizer that
        adds BOS on encode (Gemma) gets it prepended when the text lacks it (no template)."""
        ids = tokenizer.encode(self.prompt_text(tokenizer, messages), add_special_tokens=False)
        prefix = encode_prefix(tokenizer)
        if prefix and ids[: len(prefix)] != prefix:
            ids = prefix + ids
        return ids

    @abstractmethod
    def find_thinking_end(self, text: str) -> int | None:
        """Character offset in `text` where the thinking section ends, or None.

        `text[offset:]` starts with the end marker itself (`</think>`, `<|end|>`), so a token
        that ends before the marker is never cut; `text[:offset]` may end with whitespace the
        family writes before the marker, which `assistant_content` normalises."""

    def split_thinking(self, text: str) -> tuple[str, str] | None:
        """(thinking, answer so far) of generated text whose thinking has ended, else None.

        The end marker and the whitespace the family writes after it (`answer_opener`) belong
        to neither part."""
        end = self.find_thinking_end(text)
        if end is None:
            return None
        rest = text[end:]
        if rest.startswith(self.answer_opener):
            return text[:end], rest[len(self.answer_opener) :]
        return text[:end], self._after_end_marker(rest)

    def answer_opener_after(self, text: str) -> str:
        """What to append to thinking `text` to open the answer: `answer_opener` less the
        leading whitespace of it that `text` already ends with (Qwen3 thinking that ends with
        "\\n" continues with "</think>\\n\\n", not a second newline)."""
        opener = self.answer_opener
        lead = len(opener) - len(opener.lstrip())
        for size in range(lead, 0, -1):
            if text.endswith(opener[:size]):
                return opener[size:]
        return opener

    def _after_end_marker(self, rest: str) -> str:
        """`rest` (which starts with the end marker, but not the full `answer_opener`) without
        the marker and the family's separator after it."""
        return rest

    def assistant_content(self, thinking: str, answer: str, thinking_done: bool = True) -> str:
        """The assistant message as this family writes it (thinking included); thinking that
        did not end is left open."""
        if not self.has_thinking:
            return thinking + answer
        if not thinking_done:
            return self.thinking_opener + thinking
        return self.thinking_opener + thinking + self.answer_opener + answer

    def stop_token_ids(self, tokenizer: Any) -> frozenset[int]:
        """Token ids that end a response: EOS plus the family's end-of-turn tokens."""
        ids = set()
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        for token in self.end_of_turn_tokens:
            if token_in_vocab(tokenizer, token):
                ids.add(int(tokenizer.convert_tokens_to_ids(token)))
        return frozenset(ids)

    #: Special tokens that end an assistant turn in this family.
    end_of_turn_tokens: tuple[str, ...] = ()


def has_chat_template(tokenizer: Any) -> bool:
    return bool(tokenizer is not None and getattr(tokenizer, "chat_template", None))


def render_chat_template(tokenizer: Any, messages: list[dict[str, str]], **template_kwargs: Any) -> str:
    """The tokenizer's own chat template with the generation prompt, as text."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **template_kwargs
    )
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected text")
    return text


def encode_prefix(tokenizer: Any) -> list[int]:
    """The special ids the tokenizer puts before the text on a plain `encode` (BOS or nothing)."""
    with_special = tokenizer.encode("a", add_special_tokens=True)
    without = tokenizer.encode("a", add_special_tokens=False)
    for start in range(len(with_special) - len(without) + 1):
        if list(with_special[start : start + len(without)]) == list(without):
            return list(with_special[:start])
    return []


def token_in_vocab(tokenizer: Any, token: str) -> bool:
    """Whether `token` is one token of the tokenizer's vocabulary (added tokens included)."""
    if tokenizer is None:
        return False
    token_id = tokenizer.convert_tokens_to_ids(token)
    # A missing token maps to the unknown id (or None); the round trip tells them apart, also
    # where the unknown token is a real one (SmolLM2's `<|endoftext|>`).
    return isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == token
