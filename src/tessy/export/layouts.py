"""How an exported row carries the response so that the student's trainer learns exactly its text.

A record's assistant turn is the raw text the student's chat format writes (Qwen3's
``<think>\\n...\\n</think>\\n\\nanswer``, harmony's analysis and final channels). Trainers take it in
one of these layouts (`Layout`):

- ``messages`` with ``reasoning_field="content"``: the raw text in ``content`` (Qwen3 and
  families without thinking; Qwen3's template reproduces it unchanged);
- ``messages`` with ``reasoning_field="reasoning_content"`` or ``"thinking"``: the thinking in that
  field and only the final answer in ``content`` (``thinking`` is what GPT-OSS's template and TRL's
  harmony format read, ``reasoning_content`` what Qwen3's template and vLLM's parsers use);
- ``prompt-completion``: ``prompt`` is the conversation rendered through the chat template with
  the generation prompt (the text the student continued, thinking opener included) and
  ``completion`` the generated text after it, with the end-of-turn token. For templates that strip
  the thinking from assistant turns (DeepSeek-R1-Distill's), the only layout a trainer learns the
  thinking from. The prompt leaves out the BOS text when the tokenizer adds BOS on encode (R1's
  does), so a trainer that tokenizes the text does not get two.

`choose(student_format, layout, reasoning_field, to)` resolves "auto": prompt-completion for
deepseek-r1, else messages; ``thinking`` for harmony, else ``content``; the ShareGPT export takes
the raw text only. `Layout.fields(record)` gives the row's columns for one record, or a drop reason
(``thinking_unfinished``: the thinking never ended, so there is no answer to put apart; a trainer
would be taught to close it). Records are only read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LAYOUTS = ("messages", "prompt-completion")
REASONING_FIELDS = ("content", "reasoning_content", "thinking")
UNFINISHED = "thinking_unfinished"


def choose(student_format: str | None, layout: str = "auto", reasoning_field: str = "auto",
           to: str = "messages") -> tuple[str, str]:
    """The (layout, reasoning field) an export uses; "auto" picks the student format's default."""
    if layout not in (*LAYOUTS, "auto"):
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)} (or auto)")
    if reasoning_field not in (*REASONING_FIELDS, "auto"):
        raise ValueError(f"unknown reasoning field {reasoning_field!r}; choose one of {', '.join(REASONING_FIELDS)} "
                         "(or auto)")
    if to == "sharegpt":
        if layout == "prompt-completion" or reasoning_field not in ("auto", "content"):
            raise ValueError("the sharegpt export writes the response as text in the turn's value: use --layout "
                             "messages and --reasoning-field content with it, or export --to messages/parquet/hf")
        return "messages", "content"
    if layout == "auto":
        layout = "prompt-completion" if student_format == "deepseek-r1" and reasoning_field == "auto" else "messages"
    if layout == "prompt-completion":
        if reasoning_field not in ("auto", "content"):
            raise ValueError(f"--reasoning-field {reasoning_field} applies to the messages layout; prompt-completion "
                             "writes the thinking in the completion text")
        return layout, "content"
    if reasoning_field == "auto":
        reasoning_field = "thinking" if student_format == "harmony" else "content"
    return layout, reasoning_field


def student_format_of(records: list[dict], raw_text: bool = False) -> str | None:
    """The chat format the records' student writes in (None when they do not say). One per export,
    unless the rows carry the raw text (`raw_text`: messages with the thinking in content), which
    needs none (then None when they differ)."""
    names = {str(((r.get("models") or {}).get("student") or {}).get("format")) for r in records
             if ((r.get("models") or {}).get("student") or {}).get("format")}
    if len(names) > 1:
        if raw_text:
            return None
        raise ValueError(f"the runs' students write in different chat formats ({', '.join(sorted(names))}): "
                         "export them separately (or with --layout messages --reasoning-field content)")
    return names.pop() if names else None


def _adds_bos(tokenizer: Any, fmt: Any) -> str | None:
    """The BOS text a tokenizer puts before the text on encode (a rendered prompt must not repeat it)."""
    if tokenizer is None:  # R1's tokenizers add BOS on encode; the other families' do not
        from tessy.formats.deepseek_r1 import BOS

        return BOS if fmt.name == "deepseek-r1" else None
    from tessy.formats.base import encode_prefix

    bos = getattr(tokenizer, "bos_token", None)
    if bos and tokenizer.bos_token_id is not None and encode_prefix(tokenizer) == [tokenizer.bos_token_id]:
        return bos
    return None


@dataclass
class Layout:
    """One export's layout: `kind` (``LAYOUTS``), `reasoning_field` (``REASONING_FIELDS``), the
    student's chat format, and the tokenizer that renders prompt-completion prompts (None: the
    format writes its family's layout itself)."""

    kind: str = "messages"
    reasoning_field: str = "content"
    fmt: Any = None
    tokenizer: Any = None

    @property
    def splits_thinking(self) -> bool:
        return (self.kind == "messages" and self.reasoning_field != "content" and self.fmt is not None
                and self.fmt.has_thinking)

    @property
    def end_of_turn(self) -> str:
        """The text that ends a completion: the tokenizer's EOS, else the family's end-of-turn token."""
        eos = getattr(self.tokenizer, "eos_token", None) if self.tokenizer is not None else None
        if eos:
            return eos
        tokens = getattr(self.fmt, "end_of_turn_tokens", ()) or ()
        return tokens[0] if tokens else ""

    def describe(self) -> dict[str, Any]:
        return {"layout": self.kind, "reasoning_field": self.reasoning_field if self.kind == "messages" else None,
                "student_format": getattr(self.fmt, "name", None)}

    def fields(self, record: dict) -> dict[str, Any] | str:
        """``{"messages": [...]}`` or ``{"prompt": str, "completion": str}`` for `record`, or a drop reason."""
        turns = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        prompt, content = turns[:-1], turns[-1]["content"]
        if self.kind == "prompt-completion":
            return self._prompt_completion(prompt, content)
        if not self.splits_thinking:
            return {"messages": turns}
        parts = split_response(self.fmt, content)
        if parts is None:
            return UNFINISHED
        thinking, answer = parts
        return {"messages": prompt + [{"role": "assistant", "content": answer, self.reasoning_field: thinking}]}

    def _prompt_completion(self, prompt: list[dict], content: str) -> dict[str, str] | str:
        fmt = self.fmt
        text = fmt.prompt_text(self.tokenizer, prompt)
        bos = _adds_bos(self.tokenizer, fmt)
        if bos and text.startswith(bos):
            text = text[len(bos):]
        opener = fmt.thinking_opener if fmt.has_thinking else ""
        completion = content
        if opener and text.endswith(opener) and content.startswith(opener):
            completion = content[len(opener):]
        if fmt.has_thinking and fmt.split_thinking(completion) is None:
            return UNFINISHED
        return {"prompt": text, "completion": completion + self.end_of_turn}


def split_response(fmt: Any, content: str) -> tuple[str, str] | None:
    """(thinking, answer) of a response the format wrote, as a chat template takes them back, or
    None when the thinking never ended. Think-tag families' templates strip the newlines around
    the thinking and before the answer; the parts are given so normalised."""
    from tessy.formats.qwen3 import ThinkTagFormat

    if not content.startswith(fmt.thinking_opener):
        return None
    parts = fmt.split_thinking(content[len(fmt.thinking_opener):])
    if parts is None:
        return None
    thinking, answer = parts
    if isinstance(fmt, ThinkTagFormat):
        thinking, answer = thinking.strip("\n"), answer.lstrip("\n")
    return thinking, answer
