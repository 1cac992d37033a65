"""A Hugging Face `datasets` folder (`DatasetDict.save_to_disk`), read back by `load_from_disk`.

One split per row set (``train``, ``validation``), with the Arrow schema of
`tessy.export.base.arrow_schema`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tessy.export.base import ExportFormat, arrow_table


def _fingerprint(split: str, rows: list[dict[str, Any]]) -> str:
    # A content hash instead of datasets' random one, so the same rows give the same files.
    text = json.dumps([split, rows], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class HfDatasets(ExportFormat):
    name = "hf"
    description = "a Hugging Face datasets folder (DatasetDict.save_to_disk)"

    def write(self, splits: dict[str, list[dict[str, Any]]], folder: Path) -> list[str]:
        from datasets import Dataset, DatasetDict
        from datasets.table import InMemoryTable

        data = DatasetDict({split: Dataset(InMemoryTable(arrow_table(rows, self.spans)), split=split,
                                           fingerprint=_fingerprint(split, rows))
                            for split, rows in splits.items()})
        data.save_to_disk(str(folder))
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    def load_snippet(self, folder: str) -> str:
        return f'from datasets import load_from_disk\ndata = load_from_disk("{folder}")'
