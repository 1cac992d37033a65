"""Conversational ``messages`` JSONL, as TRL's SFTTrainer (and most trainers) read it.

``train.jsonl`` and ``validation.jsonl``: one row per line, keys in a fixed order, UTF-8 as is.
`datasets.load_dataset("json", data_files=...)`, or `load_dataset(folder)` through the dataset
card's ``configs``, gives a dataset whose ``messages`` column SFTTrainer renders with the model's
chat template (or, in the prompt-completion layout, whose ``prompt`` and ``completion`` text
columns it tokenizes as they are).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tessy.export.base import ExportFormat


class MessagesJsonl(ExportFormat):
    name = "messages"
    description = "conversational `messages` JSONL (TRL SFTTrainer), one file per split"

    def write(self, splits: dict[str, list[dict[str, Any]]], folder: Path) -> list[str]:
        files = []
        for split, rows in splits.items():
            name = f"{split}.jsonl"
            with open(folder / name, "w", encoding="utf-8", newline="\n") as f:
                for row in rows:
                    f.write(json.dumps(self.columns(row), ensure_ascii=False) + "\n")
            files.append(name)
        return files

    def card_configs(self, files: list[str]) -> list[dict[str, Any]]:
        return [{"config_name": "default",
                 "data_files": [{"split": Path(f).stem, "path": f} for f in files]}]

    def load_snippet(self, folder: str) -> str:
        return (f'from datasets import load_dataset\n'
                f'data = load_dataset("json", data_files={{"train": "{folder}/train.jsonl", '
                f'"validation": "{folder}/validation.jsonl"}})\n' + self.trainer_note())
