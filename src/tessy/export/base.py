"""The export-format interface: how one trainer's data layout is written from exported rows.

A format gets the rows of each split (``{"train": [...], "validation": [...]}``; a split with no
rows is left out) and a folder that already exists and is empty, writes its files there and
returns their paths relative to the folder. It must be deterministic: the same rows give the same
bytes. Implementations are peer modules (`messages_jsonl`, `parquet`, `hf_datasets`, `sharegpt`)
registered in `tessy.export.FORMATS`.

A row (built by `tessy.export.select.make_row`)::

    {"id": str, "messages": [{"role", "content"}, ...],   # prompt turns + the assistant response
     "method": str, "finish_reason": str, "teacher_share": float, "tokens_student": int,
     "verification": "pass"|"fail"|"error"|None, "spans": [{role, section, text, ...}, ...]}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar


class ExportFormat(ABC):
    name: ClassVar[str]
    #: One line for the dataset card and ``--help``.
    description: ClassVar[str]

    def __init__(self, dataset_name: str = "tessy", spans: bool = True):
        self.dataset_name = dataset_name
        self.spans = spans

    def columns(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row as written (without ``spans`` when they are left out)."""
        return row if self.spans else {k: v for k, v in row.items() if k != "spans"}

    @abstractmethod
    def write(self, splits: dict[str, list[dict[str, Any]]], folder: Path) -> list[str]:
        """Write the splits into `folder`; return the files written, relative to it."""

    def card_configs(self, files: list[str]) -> list[dict[str, Any]] | None:
        """The dataset card's ``configs`` (so `datasets.load_dataset(folder)` finds the splits)."""
        return None

    @abstractmethod
    def load_snippet(self, folder: str) -> str:
        """Python (or a config) that loads this export, for the dataset card."""


def arrow_schema(spans: bool = True):
    """The Arrow schema of exported rows (Parquet and datasets folders share it)."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    span = pa.struct([("role", pa.string()), ("section", pa.string()), ("text", pa.string()),
                      ("tokens_student", pa.int64()), ("tokens_own", pa.int64()), ("generated", pa.int64()),
                      ("discarded", pa.int64()), ("forced", pa.bool_())])
    fields = [("id", pa.string()), ("messages", pa.list_(message)), ("method", pa.string()),
              ("finish_reason", pa.string()), ("teacher_share", pa.float64()), ("tokens_student", pa.int64()),
              ("verification", pa.string())]
    if spans:
        fields.append(("spans", pa.list_(span)))
    return pa.schema(fields)


def arrow_table(rows: list[dict[str, Any]], spans: bool = True):
    import pyarrow as pa

    schema = arrow_schema(spans)
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)
