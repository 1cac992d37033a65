"""Verdict side files: one append-only JSONL per verifier in the run folder, never the records.

``RUN/verdicts-<verifier>.jsonl`` holds one line per judged response::

    {"id": str, "response_hash": str, "verifier": str, "status": "pass"|"fail"|"error",
     "score": float, "answer": str|null, "expected": str|null, "detail": str, "time": str}

Promises, as for records (the file operations are `tessy.durable`'s): a line is one write
followed by fsync, so a verdict is there whole or not at all; a torn last line (a crash
mid-write) is repaired on open (truncated, or its newline restored when it is a complete JSON
object); a ``.verdicts-<verifier>.lock`` (flock) stops two processes from writing one file; a
(id, response_hash) already judged is never judged again (`pending` leaves it out), so a rerun
after a crash does only what is left. ``response_hash`` ties the verdict to the exact response
it judged: after a run is redone with new text, the old verdicts no longer apply and the new
responses are judged afresh. When one (id, hash) has several lines (``--redo-errors`` appends a
newer one), the last wins.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from tessy import durable

PREFIX = "verdicts-"


def verdict_path(run_folder: Path, verifier: str) -> Path:
    return Path(run_folder) / f"{PREFIX}{verifier}.jsonl"


def verdict_files(run_folder: Path) -> dict[str, Path]:
    """Verifier name -> its side file, for every verdict file in the run folder."""
    return {p.name[len(PREFIX):-len(".jsonl")]: p for p in sorted(Path(run_folder).glob(f"{PREFIX}*.jsonl"))}


def iter_verdicts(path: Path) -> Iterator[dict[str, Any]]:
    """The lines of a verdict file; a torn last line is skipped, a corrupt line elsewhere raises."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if lineno == len(lines):  # no newline after it: torn by a crash
                continue
            raise ValueError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or "id" not in obj or "status" not in obj:
            raise ValueError(f"{path}: line {lineno} is not a verdict (needs 'id' and 'status')")
        yield obj


def load_verdicts(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(id, response_hash) -> the latest verdict for it."""
    return {(str(v["id"]), str(v.get("response_hash", ""))): v for v in iter_verdicts(path)}


class VerdictWriter:
    """The side file of one verifier, opened for appending (a context manager)."""

    def __init__(self, run_folder: Path, verifier: str):
        self.path = verdict_path(run_folder, verifier)
        self.verifier = verifier
        self._lock_path = Path(run_folder) / f".{PREFIX}{verifier}.lock"
        self._lock: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> "VerdictWriter":
        try:
            self._lock = durable.lock(self._lock_path)
        except durable.LockHeld as exc:
            raise RuntimeError(f"{self.path} is being written by another process") from exc
        try:
            durable.repair_tail(self.path)
            self.done = load_verdicts(self.path)
            self._fd = durable.open_append(self.path)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock is not None:
            os.close(self._lock)  # closing releases the flock
            self._lock = None

    def write(self, record_id: str, response_hash: str, verdict: dict[str, Any]) -> dict[str, Any]:
        line = {"id": record_id, "response_hash": response_hash, "verifier": self.verifier, **verdict,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        durable.append(self._fd, (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"), self.path)
        self.done[(record_id, response_hash)] = line
        return line
