"""Reading runs for analysis: records grouped by method, aligned on the prompts they share.

A RUN is a run's output folder or a `records.jsonl`. Records are grouped by their `method`
field; when two runs hold the same method, each group is labelled `method (folder)` so they
stay apart. Promises: `load_runs` never changes the records; `align` keeps only the prompt ids
every group has (so every figure compares the same prompts) unless asked not to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessy.records import read_records


@dataclass
class MethodRecords:
    label: str  # method name, or "method (folder)" when several runs share a method
    method: str
    source: str
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> record


def records_path(run: str | Path) -> Path:
    path = Path(run)
    if path.is_dir():
        path = path / "records.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no records at {path}")
    return path


def load_runs(runs: list[str | Path]) -> list[MethodRecords]:
    groups: list[MethodRecords] = []
    for run in runs:
        path = records_path(run)
        by_method: dict[str, MethodRecords] = {}
        for record in read_records(path):
            method = record.get("method", "unknown")
            group = by_method.setdefault(method, MethodRecords(method, method, str(path.parent)))
            group.records[record["id"]] = record
        groups.extend(by_method.values())
    counts: dict[str, int] = {}
    for group in groups:
        counts[group.method] = counts.get(group.method, 0) + 1
    for group in groups:
        if counts[group.method] > 1:
            group.label = f"{group.method} ({Path(group.source).name})"
    if not groups:
        raise ValueError("the runs hold no records")
    return groups


def align(groups: list[MethodRecords]) -> list[str]:
    """Keep only the ids every group has; return them (sorted). Raises if none are shared."""
    shared = set.intersection(*(set(group.records) for group in groups))
    if not shared:
        raise ValueError("the runs share no prompt ids; analyze runs made from the same prompts "
                         "(or pass --all-records)")
    for group in groups:
        group.records = {key: group.records[key] for key in sorted(shared)}
    return sorted(shared)


def response_text(record: dict[str, Any]) -> str:
    return record["messages"][-1]["content"]


def section_tokens(record: dict[str, Any]) -> dict[str, int]:
    """Student-tokenizer tokens per section (thinking, answer, response) of one record."""
    out = {"thinking": 0, "answer": 0, "response": 0}
    for span in record["spans"]:
        out[span["section"]] = out.get(span["section"], 0) + span["tokens_student"]
    return out
