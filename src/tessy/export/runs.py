"""Reading run folders for export and verification: records, run.json, and what identifies a response.

`load_run(path)` accepts a run folder or its ``records.jsonl`` and returns a `Run` (folder, records in
file order, the run.json config). A missing folder or records file is a FileNotFoundError naming it;
a corrupt line is the ValueError `read_records` raises (it names the file and line).

`response_hash(record)` is a short hash of the record's messages: a verdict or an export row
refers to exactly the response it was computed from, so a verdict of a replaced run (same id,
new text after ``--overwrite``) is never applied to the new text.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessy.store import RECORDS_FILE, RUN_FILE


def _read_records(path: Path):
    # The records module owns the reader (torn-tail tolerance, line numbers in errors).
    try:
        from tessy.records import read_records
    except ImportError:  # moved by a refactor
        from tessy.store import read_records  # type: ignore[no-redef]
    return read_records(path)


@dataclass
class Run:
    folder: Path
    records: list[dict] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)  # run.json, {} when absent

    @property
    def config(self) -> dict[str, Any]:
        return self.info.get("config", {}) or {}

    @property
    def name(self) -> str:
        return self.folder.name


def run_folder(path: str | Path) -> Path:
    """The run folder of a run folder or of its records.jsonl."""
    p = Path(path)
    if p.is_file() or p.name == RECORDS_FILE:
        p = p.parent
    if not p.is_dir():
        raise FileNotFoundError(f"no run folder at {path}")
    if not (p / RECORDS_FILE).is_file():
        raise FileNotFoundError(f"no {RECORDS_FILE} in {p}")
    return p


def load_run(path: str | Path) -> Run:
    folder = run_folder(path)
    info: dict[str, Any] = {}
    run_json = folder / RUN_FILE
    if run_json.is_file():
        try:
            info = json.loads(run_json.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{run_json}: not valid JSON ({exc})") from exc
    records = list(_read_records(folder / RECORDS_FILE))
    for index, record in enumerate(records, 1):
        for key in ("id", "messages"):
            if key not in record:
                raise ValueError(f"{folder / RECORDS_FILE}: record {index} has no {key!r}")
    return Run(folder, records, info)


def response_hash(record: dict) -> str:
    text = json.dumps(record.get("messages"), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def response_text(record: dict) -> str:
    """The assistant content of the last turn (thinking included)."""
    messages = record.get("messages") or []
    if not messages or messages[-1].get("role") != "assistant":
        return ""
    return messages[-1].get("content") or ""


def answer_text(record: dict) -> str:
    """The final answer of a record, without its thinking.

    For a student format without a thinking section (``plain``: what reads as thinking is part of
    the visible response) the whole response. Otherwise from the spans' provenance: the
    ``answer`` spans; a response whose thinking never ended has no answer (""). Without spans,
    the text after the last ``</think>``."""
    student_format = ((record.get("models") or {}).get("student") or {}).get("format")
    if student_format == "plain":
        return response_text(record)
    spans = record.get("spans") or []
    sections = {s.get("section") for s in spans}
    if spans:
        if "answer" in sections:
            return "".join(s.get("text", "") for s in spans if s.get("section") == "answer")
        if "thinking" in sections:
            return ""
        return response_text(record)
    content = response_text(record)
    if "</think>" in content:
        return content.rsplit("</think>", 1)[1]
    return "" if "<think>" in content else content
