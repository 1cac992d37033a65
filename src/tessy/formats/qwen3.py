"""Qwen3 (thinking mode): `<think>\\n{thinking}\\n</think>\\n\\n{answer}<|im_end|>`.

Owns the `<think>`-tag family logic shared with DeepSeek-R1 (`ThinkTagFormat`) and the Qwen3
format itself. Promises:

- the prompt is the tokenizer's own chat template with `enable_thinking=True` and the generation
  prompt (`<|im_start|>assistant\\n`), followed by the opener `<think>\\n` (not doubled when a
  template already writes it); without a template, Qwen3's ChatML layout is written directly;
- `find_thinking_end` points at the `</think>` Qwen3 writes; the newline Qwen3 puts before it
  stays with the thinking text (Qwen's BPE often merges it with the previous character, as in
  ".\\n", so cutting before it would cut a token). `answer_opener` is "\\n</think>\\n\\n";
  `answer_opener_after(text)` drops its first newline when the thinking already ends with one;
- `assistant_content` is a fixed point of Qwen3's template: rendering [user, assistant(content)]
  reproduces the content unchanged. The template normalises an assistant turn to
  `<think>\\n` + reasoning.strip("\\n") + `\\n</think>\\n\\n` + answer.lstrip("\\n"), so
  `assistant_content` does the same. Caveat: Qwen3's template keeps reasoning only for assistant
  turns after the last user message; in a multi-turn history earlier turns lose their thinking.
"""

from __future__ import annotations

from typing import Any

from tessy.formats.base import ChatFormat, has_chat_template, render_chat_template

THINK_END = "</think>"


class ThinkTagFormat(ChatFormat):
    """A family whose thinking is wrapped in `<think>\\n ... \\n</think>\\n\\n`."""

    thinking_opener = "<think>\n"
    answer_opener = "\n</think>\n\n"

    def find_thinking_end(self, text: str) -> int | None:
        index = text.find(THINK_END)
        return None if index < 0 else index

    def _after_end_marker(self, rest: str) -> str:
        return rest.split(THINK_END, 1)[-1].lstrip("\n")

    def assistant_content(self, thinking: str, answer: str, thinking_done: bool = True) -> str:
        if not thinking_done:  # cut by the budget: left open, as it was written
            return self.thinking_opener + thinking.lstrip("\n")
        return self.thinking_opener + thinking.strip("\n") + self.answer_opener + answer.lstrip("\n")

    def _with_opener(self, text: str) -> str:
        """`text` ending with exactly one thinking opener."""
        if text.endswith(self.thinking_opener):
            return text
        if text.endswith(self.thinking_opener.rstrip("\n")):
            return text + "\n"
        return text + self.thinking_opener


class Qwen3Format(ThinkTagFormat):
    name = "qwen3"
    end_of_turn_tokens = ("<|im_end|>", "<|endoftext|>")

    def prompt_text(self, tokenizer: Any, messages: list[dict[str, str]]) -> str:
        if has_chat_template(tokenizer):
            text = render_chat_template(tokenizer, messages, enable_thinking=True)
        else:
            text = render_qwen3_chatml(messages)
        return self._with_opener(text)


def render_qwen3_chatml(messages: list[dict[str, str]]) -> str:
    """Qwen3's layout for a prompt, for tokenizers that ship no template: ChatML turns, no
    default system prompt, earlier assistant turns without their thinking."""
    parts = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and THINK_END in content:
            content = content.split(THINK_END)[-1].lstrip("\n")
        parts.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    return "".join(parts) + "<|im_start|>assistant\n"
