"""The real chat templates of Qwen3, DeepSeek-R1-Distill and GPT-OSS, on tokenizers built offline.

TRL ships the original chat templates of the models it recognises (``trl/chat_templates/``:
``qwen3.jinja`` "Original Qwen3 chat template", ``deepseek_r1_distill.jinja`` "shipped
byte-identically by every distill checkpoint", ``gptoss.jinja`` "Original GPT-OSS chat template"),
and compares a tokenizer's template against them byte for byte, so these are the templates the
trainers meet. They are read from the installed package, never copied here.

- `qwen3_real()`: the Qwen3 tokenizer of `tests.qwen3_tokenizer` (Qwen's real BPE and added
  tokens) with Qwen3's real template;
- `r1_real()`: the DeepSeek-R1-Distill-Qwen tokenizer of `tests.qwen3_tokenizer` (BOS added on
  encode) with R1-Distill's real template;
- `harmony_real()`: GPT-OSS's real template and harmony's special tokens (``<|start|>``,
  ``<|channel|>``, ``<|message|>``, ``<|end|>``, ``<|return|>``, ``<|call|>``, ...), all special as in
  GPT-OSS's tokenizer, with EOS ``<|return|>``. Its vocabulary is NOT GPT-OSS's: o200k_harmony is
  not available offline, so Qwen's BPE stands in under the harmony tokens (ids differ from GPT-OSS's;
  text, templates and special-token handling do not).

Each is a copy (the cached builders are never changed) and built once per process.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

#: GPT-OSS's added tokens that the harmony format uses, in o200k_harmony's order (all special).
HARMONY_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>",
                          "<|start|>", "<|end|>", "<|message|>", "<|call|>")


def trl_template(name: str) -> str:
    """The text of ``trl/chat_templates/<name>.jinja`` from the installed TRL."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


def _with_template(tokenizer, name: str):
    copied = copy.copy(tokenizer)
    copied.chat_template = trl_template(name)
    return copied


@functools.cache
def qwen3_real():
    from tests.qwen3_tokenizer import build_qwen3_tokenizer

    return _with_template(build_qwen3_tokenizer(), "qwen3")


@functools.cache
def r1_real():
    from tests.qwen3_tokenizer import build_r1_distill_tokenizer

    return _with_template(build_r1_distill_tokenizer(), "deepseek_r1_distill")


@functools.cache
def harmony_real():
    from transformers import PreTrainedTokenizerFast

    from tests.qwen3_tokenizer import _byte_level_bpe

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(HARMONY_SPECIAL_TOKENS, set()),
        bos_token="<|startoftext|>", eos_token="<|return|>", pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = trl_template("gptoss")
    return tokenizer
