"""Parquet: ``train.parquet`` and ``validation.parquet`` with a fixed Arrow schema.

The schema (`tessy.export.base.arrow_schema`) is the same in every export, so files of several
exports concatenate; written with zstd compression and without per-run metadata, so the same rows
give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tessy.export.base import ExportFormat


class Parquet(ExportFormat):
    name = "parquet"
    description = "Parquet, one file per split"

    def write(self, splits: dict[str, list[dict[str, Any]]], folder: Path) -> list[str]:
        import pyarrow.parquet as pq

        files = []
        for split, rows in splits.items():
            name = f"{split}.parquet"
            pq.write_table(self.table(rows), folder / name, compression="zstd")
            files.append(name)
        return files

    def card_configs(self, files: list[str]) -> list[dict[str, Any]]:
        return [{"config_name": "default",
                 "data_files": [{"split": Path(f).stem, "path": f} for f in files]}]

    def load_snippet(self, folder: str) -> str:
        return (f'from datasets import load_dataset\n'
                f'data = load_dataset("parquet", data_files={{"train": "{folder}/train.parquet", '
                f'"validation": "{folder}/validation.parquet"}})\n' + self.trainer_note())
