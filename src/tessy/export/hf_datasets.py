"""A Hugging Face `datasets` folder (`DatasetDict.save_to_disk`), read back by `load_from_disk`.

One split per row set (``train``, ``validation``), with the Arrow schema of
`tessy.export.base.arrow_schema`. `datasets`' own progress bars ("Saving the dataset ...") are
turned off while it saves (and back on after, if they were on), so they never show in the
output of `tessy export`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from tessy.export.base import ExportFormat


def _fingerprint(split: str, rows: list[dict[str, Any]]) -> str:
    # A content hash instead of datasets' random one, so the same rows give the same files.
    text = json.dumps([split, rows], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@contextlib.contextmanager
def quiet_datasets():
    """`datasets` without its progress bars for the duration (restored after)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


class HfDatasets(ExportFormat):
    name = "hf"
    description = "a Hugging Face datasets folder (DatasetDict.save_to_disk)"

    def write(self, splits: dict[str, list[dict[str, Any]]], folder: Path) -> list[str]:
        from datasets import Dataset, DatasetDict
        from datasets.table import InMemoryTable

        data = DatasetDict({split: Dataset(InMemoryTable(self.table(rows)), split=split,
                                           fingerprint=_fingerprint(split, rows))
                            for split, rows in splits.items()})
        with quiet_datasets():
            data.save_to_disk(str(folder))
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    def load_snippet(self, folder: str) -> str:
        return f'from datasets import load_from_disk\ndata = load_from_disk("{folder}")\n' + self.trainer_note()
