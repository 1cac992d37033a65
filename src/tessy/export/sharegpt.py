"""LLaMA-Factory's ShareGPT layout, with the ``dataset_info.json`` that registers it.

``train.jsonl`` / ``validation.jsonl`` hold ``{"conversations": [{"from": "human"|"gpt",
"value": ...}, ...], "system": str, "id": str, ...metadata}``: user turns are ``human``, assistant
turns ``gpt``, alternating from a human turn and ending with the response; a system turn (only as
the first turn) goes to the ``system`` column, as LLaMA-Factory expects. ``dataset_info.json``
registers ``<name>_train`` and ``<name>_validation`` with ``formatting: sharegpt``, the column
names and the role tags, so pointing LLaMA-Factory's ``dataset_dir`` at the folder and naming
``dataset: <name>_train`` (``eval_dataset: <name>_validation``) is all a user does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tessy.export.base import ExportFormat

TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
        "system_tag": "system"}


def to_sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    messages = row["messages"]
    system = ""
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    conversations = []
    for index, message in enumerate(messages):
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise ValueError(f"record {row['id']!r}: turn {index + 1} is {message['role']!r}, but the ShareGPT "
                             "layout needs user and assistant turns alternating (system only first)")
        conversations.append({"from": TAGS["user_tag"] if expected == "user" else TAGS["assistant_tag"],
                              "value": message["content"]})
    rest = {k: v for k, v in row.items() if k not in ("messages", "id")}
    return {"id": row["id"], "conversations": conversations, "system": system, **rest}


class ShareGpt(ExportFormat):
    name = "sharegpt"
    description = "LLaMA-Factory ShareGPT JSONL with its dataset_info.json entries"

    def write(self, splits: dict[str, list[dict[str, Any]]], folder: Path) -> list[str]:
        files, info = [], {}
        for split, rows in splits.items():
            name = f"{split}.jsonl"
            with open(folder / name, "w", encoding="utf-8", newline="\n") as f:
                for row in rows:
                    f.write(json.dumps(to_sharegpt(self.columns(row)), ensure_ascii=False) + "\n")
            files.append(name)
            info[f"{self.dataset_name}_{split}"] = {
                "file_name": name, "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system"}, "tags": dict(TAGS)}
        (folder / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        return files + ["dataset_info.json"]

    def load_snippet(self, folder: str) -> str:
        return (f"# LLaMA-Factory training config (YAML):\n"
                f"dataset_dir: {folder}\n"
                f"dataset: {self.dataset_name}_train\n"
                f"eval_dataset: {self.dataset_name}_validation\n"
                f"template: <the student's template>")
