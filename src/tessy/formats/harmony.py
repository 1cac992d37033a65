"""Harmony, the GPT-OSS format: the thinking is the `analysis` channel, the answer the `final` one.

A response reads `<|channel|>analysis<|message|>{thinking}<|end|>`
`<|start|>assistant<|channel|>final<|message|>{answer}<|return|>`, following the prompt's
`<|start|>assistant`. Promises:

- the prompt is the tokenizer's own template when it is a harmony template (one that writes
  `<|channel|>`, with `reasoning_effort` passed in); otherwise it is written here, minimal but
  well formed: a system message (identity, knowledge cutoff, optional current date, reasoning
  effort, valid channels), a developer message `# Instructions\\n\\n...` carrying the
  conversation's system prompts, user turns, earlier assistant turns as their `final` channel
  only (harmony drops past analysis), then `<|start|>assistant<|channel|>analysis<|message|>`;
- `find_thinking_end` is the first harmony control token after the analysis text (`<|end|>`,
  or a channel switch written without it, or the end of the response);
- `assistant_content` is the raw harmony text of the two assistant messages (analysis, then
  final) without the leading `<|start|>assistant` and the closing `<|return|>`;
- stop ids: `<|return|>` (EOS), `<|call|>`, `<|endoftext|>`; the same two markers as stop strings
  for text-only backends.
"""

from __future__ import annotations

import re
from typing import Any

from tessy.formats.base import ChatFormat, has_chat_template, render_chat_template

START_ASSISTANT = "<|start|>assistant"
FINAL = "<|channel|>final<|message|>"
CONTROL_TOKENS = ("<|end|>", "<|start|>", "<|channel|>", "<|return|>", "<|call|>")
_END_MARKER = re.compile(r"^(?:<\|end\|>)?(?:<\|start\|>assistant)?(?:<\|channel\|>final[^<]*)?(?:<\|message\|>)?")
REASONING_EFFORTS = ("low", "medium", "high")


class HarmonyFormat(ChatFormat):
    name = "harmony"
    thinking_opener = "<|channel|>analysis<|message|>"
    answer_opener = "<|end|>" + START_ASSISTANT + FINAL
    stop_strings = ("<|return|>", "<|call|>")
    end_of_turn_tokens = ("<|return|>", "<|call|>", "<|endoftext|>")

    def __init__(self, reasoning_effort: str = "medium", knowledge_cutoff: str = "2024-06",
                 current_date: str | None = None) -> None:
        if reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(f"reasoning_effort must be one of {REASONING_EFFORTS}, not {reasoning_effort!r}")
        self.reasoning_effort = reasoning_effort
        self.knowledge_cutoff = knowledge_cutoff
        self.current_date = current_date

    def prompt_text(self, tokenizer: Any, messages: list[dict[str, str]]) -> str:
        if has_chat_template(tokenizer) and "<|channel|>" in str(tokenizer.chat_template):
            text = render_chat_template(tokenizer, messages, reasoning_effort=self.reasoning_effort)
        else:
            text = self.render(messages)
        if text.endswith(self.thinking_opener):
            return text
        if not text.endswith(START_ASSISTANT):
            text += START_ASSISTANT
        return text + self.thinking_opener

    def render(self, messages: list[dict[str, str]]) -> str:
        """The conversation in harmony, ending with the generation prompt `<|start|>assistant`."""
        date = f"Current date: {self.current_date}\n" if self.current_date else ""
        system = (
            "You are ChatGPT, a large language model trained by OpenAI.\n"
            f"Knowledge cutoff: {self.knowledge_cutoff}\n{date}\n"
            f"Reasoning: {self.reasoning_effort}\n\n"
            "# Valid channels: analysis, commentary, final. Channel must be included for every message."
        )
        parts = [f"<|start|>system<|message|>{system}<|end|>"]
        instructions = [m.get("content") or "" for m in messages if m["role"] in ("system", "developer")]
        if instructions:
            parts.append("<|start|>developer<|message|># Instructions\n\n" + "\n\n".join(instructions) + "<|end|>")
        for message in messages:
            content = message.get("content") or ""
            if message["role"] == "user":
                parts.append(f"<|start|>user<|message|>{content}<|end|>")
            elif message["role"] == "assistant":
                answer = content.split(FINAL)[-1].removesuffix("<|return|>").removesuffix("<|end|>")
                parts.append(f"{START_ASSISTANT}{FINAL}{answer}<|end|>")
        parts.append(START_ASSISTANT)
        return "".join(parts)

    def find_thinking_end(self, text: str) -> int | None:
        found = [i for i in (text.find(token) for token in CONTROL_TOKENS) if i >= 0]
        return min(found) if found else None

    def _after_end_marker(self, rest: str) -> str:
        return _END_MARKER.sub("", rest, count=1)
