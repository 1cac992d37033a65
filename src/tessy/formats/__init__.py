"""Chat formats per model family (`base.ChatFormat`): qwen3, deepseek-r1, harmony (GPT-OSS) and
plain (no thinking section).

`get_format(name, tokenizer)` returns a format by name; "auto" detects it from the tokenizer:
a harmony template or `<|channel|>` token -> harmony; `<think>` (in a template that mentions
thinking, or in the vocabulary when there is no template) -> deepseek-r1 when `<｜Assistant｜>`
is there too, else qwen3; anything else -> plain.
"""

from __future__ import annotations

from typing import Any

from tessy.formats.base import ChatFormat, token_in_vocab
from tessy.formats.deepseek_r1 import DeepSeekR1Format
from tessy.formats.harmony import HarmonyFormat
from tessy.formats.plain import PlainFormat
from tessy.formats.qwen3 import Qwen3Format

FORMATS = {"qwen3": Qwen3Format, "deepseek-r1": DeepSeekR1Format, "harmony": HarmonyFormat, "plain": PlainFormat}
CHOICES = (*FORMATS, "auto")
ALIASES = {"deepseek_r1": "deepseek-r1", "r1": "deepseek-r1", "gpt-oss": "harmony"}

__all__ = ["ALIASES", "CHOICES", "ChatFormat", "DeepSeekR1Format", "HarmonyFormat", "PlainFormat", "Qwen3Format",
           "detect_format", "get_format"]


def get_format(name: str, tokenizer: Any = None) -> ChatFormat:
    """The format called `name` (one of `CHOICES`); "auto" needs the tokenizer."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key == "auto":
        key = detect_format(tokenizer)
    if key not in FORMATS:
        raise ValueError(f"unknown chat format {name!r}; choose one of: {', '.join(CHOICES)}")
    if key == "plain":
        return PlainFormat(tokenizer)
    return FORMATS[key]()


def detect_format(tokenizer: Any) -> str:
    """The format name for a tokenizer, from its chat template and special tokens."""
    if tokenizer is None:
        raise ValueError("chat format 'auto' needs the model's tokenizer; name a format instead: "
                         + ", ".join(FORMATS))
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):  # named templates
        template = "\n".join(str(t) for t in template.values())
    if "<|channel|>" in template or token_in_vocab(tokenizer, "<|channel|>"):
        return "harmony"
    thinks = "<think>" in template if template else token_in_vocab(tokenizer, "<think>")
    if thinks:
        if "<｜Assistant｜>" in template or token_in_vocab(tokenizer, "<｜Assistant｜>"):
            return "deepseek-r1"
        return "qwen3"
    return "plain"
