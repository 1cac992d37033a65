"""DeepSeek-R1 and its distilled models: `<｜User｜>{q}<｜Assistant｜><think>\\n{thinking}\\n</think>\\n\\n{answer}`.

Promises:

- the prompt is the tokenizer's own chat template when it has one (the R1 template already ends
  with `<｜Assistant｜><think>\\n`; older ones end at `<｜Assistant｜>`, and the opener is added
  once); without a template the R1 layout is written here: BOS, the system prompts joined by
  blank lines, `<｜User｜>` turns, earlier `<｜Assistant｜>` turns without their thinking and
  closed by `<｜end▁of▁sentence｜>`, then `<｜Assistant｜><think>\\n`;
- the end of thinking and the assistant content work as for Qwen3 (`ThinkTagFormat`): R1 writes
  `\\n</think>\\n\\n` between thinking and answer. R1's template drops the thinking of every
  assistant turn in a history, so no template rendering keeps it; the record keeps R1's own
  generated text.
- stop ids: EOS plus `<｜end▁of▁sentence｜>`.
"""

from __future__ import annotations

from typing import Any

from tessy.formats.base import has_chat_template, render_chat_template, token_in_vocab
from tessy.formats.qwen3 import THINK_END, ThinkTagFormat

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"


class DeepSeekR1Format(ThinkTagFormat):
    name = "deepseek-r1"
    end_of_turn_tokens = (EOS,)

    def prompt_text(self, tokenizer: Any, messages: list[dict[str, str]]) -> str:
        if has_chat_template(tokenizer):
            text = render_chat_template(tokenizer, messages, enable_thinking=True)
        else:
            text = render_r1(messages, bos=_bos_text(tokenizer))
        return self._with_opener(text)


def _bos_text(tokenizer: Any) -> str:
    if tokenizer is None or token_in_vocab(tokenizer, BOS):
        return BOS
    return getattr(tokenizer, "bos_token", None) or ""


def render_r1(messages: list[dict[str, str]], bos: str = BOS) -> str:
    """R1's prompt layout, ending with the generation prompt `<｜Assistant｜>` (no opener)."""
    system = "\n\n".join(m.get("content") or "" for m in messages if m["role"] == "system")
    parts = [bos, system]
    for message in messages:
        content = message.get("content") or ""
        if message["role"] == "user":
            parts.append(USER + content)
        elif message["role"] == "assistant":
            parts.append(ASSISTANT + content.split(THINK_END)[-1] + EOS)
    parts.append(ASSISTANT)
    return "".join(parts)
