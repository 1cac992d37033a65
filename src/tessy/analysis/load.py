"""Reading runs for analysis: records grouped by method, aligned on the prompts they share, and
streamed back when their text is needed.

A RUN is a run's output folder or a `records.jsonl`. Records are grouped by their `method`
field; when two runs hold the same method, each group is labelled `method (folder)` so they
stay apart. Promises: `load_runs` never changes the records and keeps no record in memory, only
a `Row` of a few numbers per record (its line, token counts, teacher share, tokens per section);
`align` keeps only the prompt ids every group has (so every figure compares the same prompts)
unless asked not to; `iter_records` reads each file once more, in file order, and yields only the
kept records (the last line of an id written twice, as the grouping saw it), one at a time.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tessy.store import RECORDS_FILE, iter_jsonl


@dataclass(slots=True)
class Row:
    """What the figures need of one record, besides its text."""
    line: int  # 1-based line in the records file
    tokens: int  # all response tokens, student tokenizer
    teacher_tokens: int
    teacher_share: float
    sections: dict[str, int]  # student-tokenizer tokens per section (thinking, answer, response)


@dataclass
class MethodRecords:
    label: str  # method name, or "method (folder)" when several runs share a method
    method: str
    source: str
    path: Path = field(default_factory=Path)  # the records file
    rows: dict[str, Row] = field(default_factory=dict)  # id -> row, in the order figures list them
    models: dict[str, Any] = field(default_factory=dict)  # `models` of the group's first record


def records_path(run: str | Path) -> Path:
    path = Path(run)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.exists():
        raise FileNotFoundError(f"no records at {path}")
    return path


def section_tokens(record: dict[str, Any]) -> dict[str, int]:
    """Student-tokenizer tokens per section (thinking, answer, response) of one record."""
    out = {"thinking": 0, "answer": 0, "response": 0}
    for span in record["spans"]:
        out[span["section"]] = out.get(span["section"], 0) + span["tokens_student"]
    return out


def row_of(record: dict[str, Any], line: int) -> Row:
    totals = record["totals"]
    return Row(line, int(totals["tokens_student"]), int(totals["teacher_tokens_student"]),
               float(totals["teacher_share"]), section_tokens(record))


def load_runs(runs: list[str | Path]) -> list[MethodRecords]:
    groups: list[MethodRecords] = []
    for run in runs:
        path = records_path(run)
        by_method: dict[str, MethodRecords] = {}
        for line, record in iter_jsonl(path):
            method = record.get("method", "unknown")
            group = by_method.get(method)
            if group is None:
                group = by_method[method] = MethodRecords(method, method, str(path.parent), path,
                                                          models=record.get("models") or {})
            group.rows[record["id"]] = row_of(record, line)
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
    shared = set.intersection(*(set(group.rows) for group in groups))
    if not shared:
        raise ValueError("the runs share no prompt ids; analyze runs made from the same prompts "
                         "(or pass --all-records)")
    for group in groups:
        group.rows = {key: group.rows[key] for key in sorted(shared)}
    return sorted(shared)


def response_text(record: dict[str, Any]) -> str:
    return record["messages"][-1]["content"]


def kept_count(groups: list[MethodRecords]) -> int:
    return sum(len(group.rows) for group in groups)


def iter_records(groups: list[MethodRecords]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(group index, id, record) of every kept record, each file read once in file order; lines
    not kept are skipped without being parsed."""
    wanted: dict[Path, dict[int, list[tuple[int, str]]]] = {}
    for g, group in enumerate(groups):
        lines = wanted.setdefault(group.path, {})
        for record_id, row in group.rows.items():
            lines.setdefault(row.line, []).append((g, record_id))
    for path, lines in wanted.items():
        with open(path, "rb") as file:
            for number, raw in enumerate(file, start=1):
                owners = lines.get(number)
                if owners is None:
                    continue
                record = json.loads(raw.decode("utf-8"))
                for g, record_id in owners:
                    if record.get("id") != record_id:
                        raise ValueError(f"{path}: line {number} changed while it was being analysed")
                    yield g, record_id, record


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "response") -> Any:
    """A tqdm bar on stderr with the total and an ETA (a silent one when not enabled)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=not enabled)
