"""The chat-format interface: how one model family writes a prompt, its thinking and its answer.

A format answers four questions for the engine, for one model family:

1. `prompt_text(tokenizer, messages)`: the exact text up to where the model starts writing,
   rendered through the tokenizer's own chat template wherever one exists, and ending with the
   thinking opener when the family has a thinking section (so both models write thinking text);
2. `find_thinking_end(text)`: where, in text this model generated, its thinking section ends;
3. `answer_opener`: what this family writes between the thinking text and the final answer,
   used when the thinking end is handed over from the other model;
4. `assistant_content(thinking, answer)`: the assistant message exactly as this family writes
   it, used for the record (always in the student's format).

Families without a thinking section (`has_thinking = False`) alternate over the whole response.
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
        """`prompt_text` tokenized without adding special tokens twice."""
        return tokenizer.encode(self.prompt_text(tokenizer, messages), add_special_tokens=False)

    @abstractmethod
    def find_thinking_end(self, text: str) -> int | None:
        """Character offset in `text` where the thinking section ends, or None."""

    def assistant_content(self, thinking: str, answer: str) -> str:
        """The assistant message as this family writes it (thinking included)."""
        if not self.has_thinking:
            return thinking + answer
        return self.thinking_opener + thinking + self.answer_opener + answer

    def stop_token_ids(self, tokenizer: Any) -> frozenset[int]:
        """Token ids that end a response: EOS plus the family's end-of-turn tokens."""
        ids = set()
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        for token in self.end_of_turn_tokens:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
                ids.add(token_id)
        return frozenset(ids)

    #: Special tokens that end an assistant turn in this family.
    end_of_turn_tokens: tuple[str, ...] = ()
