"""Plain: a family without a thinking section (`has_thinking = False`), used by the small CPU pair.

The two models alternate over the whole response. Promises:

- with a chat template (SmolLM2-135M-Instruct's ChatML) the prompt is that template with the
  generation prompt, nothing added;
- without one (Gemma-3-270m base) the prompt is this documented fallback: one paragraph per
  message, `System: ...`, `User: ...`, `Assistant: ...`, separated by blank lines, ending with
  `\\n\\nAssistant:` (no trailing space; the model writes the space itself). `stop_strings`
  then end the response when the model starts a new turn (`\\nUser:` or `\\nAssistant:`);
- `prompt_ids` starts with the tokenizer's BOS exactly once (see `ChatFormat.prompt_ids`);
- stop ids: EOS plus whichever of the usual end-of-turn tokens the vocabulary has.
"""

from __future__ import annotations

from typing import Any

from tessy.formats.base import ChatFormat, has_chat_template, render_chat_template

FALLBACK_STOP_STRINGS = ("\nUser:", "\nAssistant:")


class PlainFormat(ChatFormat):
    name = "plain"
    has_thinking = False
    end_of_turn_tokens = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")

    def __init__(self, tokenizer: Any = None) -> None:
        # The fallback's turn markers are plain text, so they need stop strings; a template's
        # turns end with a special token, which the stop ids already catch.
        self.stop_strings = () if has_chat_template(tokenizer) else FALLBACK_STOP_STRINGS

    def prompt_text(self, tokenizer: Any, messages: list[dict[str, str]]) -> str:
        if has_chat_template(tokenizer):
            return render_chat_template(tokenizer, messages)
        return render_fallback(messages)

    def find_thinking_end(self, text: str) -> int | None:
        return None


def render_fallback(messages: list[dict[str, str]]) -> str:
    """`Role: content` paragraphs and the open `Assistant:` turn."""
    turns = [f"{m['role'].capitalize()}: {m.get('content') or ''}" for m in messages]
    return "\n\n".join(turns + ["Assistant:"])
