"""The export-format interface: how one trainer's data layout is written from exported rows.

A format gets the rows of each split (``{"train": [...], "validation": [...]}``; a split with no
rows is left out) and a folder that already exists and is empty, writes its files there and
returns their paths relative to the folder. It must be deterministic: the same rows give the same
bytes. Implementations are peer modules (`messages_jsonl`, `parquet`, `hf_datasets`, `sharegpt`)
registered in `tessy.export.FORMATS`.

A row (built by `tessy.export.select.make_row`; its text columns follow the export's
`tessy.export.layouts.Layout`)::

    {"id": str,
     "messages": [{"role", "content"}, ...],   # layout "messages": prompt turns + the response, whose
                                                # thinking may sit in "reasoning_content" / "thinking"
     # or, layout "prompt-completion": "prompt": str, "completion": str
     "method": str, "finish_reason": str, "teacher_share": float, "tokens_student": int,
     "verification": "pass"|"fail"|"error"|None, "spans": [{role, section, text, ...}, ...]}

Every row of one export has the same columns, so the Arrow schema (`arrow_schema`) is fixed by the
layout: the same layout gives the same schema in every export, and files of such exports concatenate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar


class ExportFormat(ABC):
    name: ClassVar[str]
    #: One line for the dataset card and ``--help``.
    description: ClassVar[str]

    def __init__(self, dataset_name: str = "tessy", spans: bool = True, layout: str = "messages",
                 reasoning_field: str = "content"):
        self.dataset_name = dataset_name
        self.spans = spans
        #: "messages" or "prompt-completion" (`tessy.export.layouts.LAYOUTS`).
        self.layout = layout
        #: Where a message's thinking is: "content" (in the text), "reasoning_content" or "thinking".
        self.reasoning_field = reasoning_field

    @property
    def text_columns(self) -> tuple[str, ...]:
        return ("prompt", "completion") if self.layout == "prompt-completion" else ("messages",)

    def columns(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row as written (without ``spans`` when they are left out)."""
        return row if self.spans else {k: v for k, v in row.items() if k != "spans"}

    def table(self, rows: list[dict[str, Any]]):
        """The rows as an Arrow table with this export's fixed schema."""
        return arrow_table(rows, self.spans, self.layout, self.reasoning_field)

    def trainer_note(self) -> str:
        """What SFTTrainer reads from these columns (for the load snippets)."""
        if self.layout == "prompt-completion":
            return ('# trl.SFTTrainer reads "prompt" and "completion" as text (loss on the completion only); '
                    'the prompt is already rendered with the chat template')
        where = "" if self.reasoning_field == "content" else f' (thinking in "{self.reasoning_field}")'
        return f'# trl.SFTTrainer(model=..., train_dataset=data["train"], ...) reads the "messages" column{where}'

    @abstractmethod
    def write(self, splits: dict[str, list[dict[str, Any]]], folder: Path) -> list[str]:
        """Write the splits into `folder`; return the files written, relative to it."""

    def card_configs(self, files: list[str]) -> list[dict[str, Any]] | None:
        """The dataset card's ``configs`` (so `datasets.load_dataset(folder)` finds the splits)."""
        return None

    @abstractmethod
    def load_snippet(self, folder: str) -> str:
        """Python (or a config) that loads this export, for the dataset card."""


def arrow_schema(spans: bool = True, layout: str = "messages", reasoning_field: str = "content"):
    """The Arrow schema of exported rows (Parquet and datasets folders share it)."""
    import pyarrow as pa

    message_fields = [("role", pa.string()), ("content", pa.string())]
    if reasoning_field != "content":
        message_fields.append((reasoning_field, pa.string()))  # null in the prompt turns
    message = pa.struct(message_fields)
    span = pa.struct([("role", pa.string()), ("section", pa.string()), ("text", pa.string()),
                      ("tokens_student", pa.int64()), ("tokens_own", pa.int64()), ("generated", pa.int64()),
                      ("discarded", pa.int64()), ("forced", pa.bool_())])
    text = ([("prompt", pa.string()), ("completion", pa.string())] if layout == "prompt-completion"
            else [("messages", pa.list_(message))])
    fields = [("id", pa.string()), *text, ("method", pa.string()),
              ("finish_reason", pa.string()), ("teacher_share", pa.float64()), ("tokens_student", pa.int64()),
              ("verification", pa.string())]
    if spans:
        fields.append(("spans", pa.list_(span)))
    return pa.schema(fields)


def arrow_table(rows: list[dict[str, Any]], spans: bool = True, layout: str = "messages",
                reasoning_field: str = "content"):
    import pyarrow as pa

    schema = arrow_schema(spans, layout, reasoning_field)
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)
