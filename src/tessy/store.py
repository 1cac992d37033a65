"""A run's output folder: append-only, exactly-once JSONL, resumable. Knows nothing of record fields
beyond `id` (the schema is `tessy.records`).

The folder holds `records.jsonl` (one JSON line per finished item), `failures.jsonl`
(`{"id", "reason", "attempt", "time"}`), `rejects.jsonl` (`{"line", "id", "reason", "time"}`) and
`run.json` (`{"fingerprint", "config", "tessy_version", "created"}`).

Promises of `RunOutput` (the file operations are `tessy.durable`'s):
- Exactly once: a line is one `os.write` on an `O_APPEND` descriptor followed by `fsync`; a write
  that fails or comes up short is cut back off the file, so nothing of it lands later. An id
  already in `records.jsonl` is never written again (`write_record` returns False), also across
  reruns. A `.lock` file (`flock`) stops two processes from writing one folder; on a file system
  without locks the folder is refused with an error that says so (`durable.NoLocks`).
- Durable metadata: `run.json` is written to a temp file, fsynced, renamed over, and the folder
  fsynced, so a crash leaves the old file or the new one, never a torn one.
- Crash repair: a `kill -9` mid-write can leave a last line without its newline; on open that
  torn tail is truncated away (or, if it is a complete JSON object, its newline restored).
- Resume: done ids (with their `prompt_sha256`, when records carry one) and failed attempts are
  read back on open.
- One config per folder: opening with another fingerprint raises `RunMismatchError` unless
  `overwrite=True` (which deletes records, failures and rejects and starts afresh).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tessy import __version__, durable

log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
FAILURES_FILE = "failures.jsonl"
REJECTS_FILE = "rejects.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"


class RunMismatchError(RuntimeError):
    """The output folder was made by a run with another config."""


class RunLockedError(RuntimeError):
    """Another process is writing to the same output folder."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def config_fingerprint(config: dict, ignore: Iterable[str] = ()) -> str:
    """sha256 (first 16 hex) of the canonical JSON of `config` without the top-level keys in `ignore`."""
    skip = set(ignore)
    shaped = {key: value for key, value in config.items() if key not in skip}
    return hashlib.sha256(canonical_json(shaped).encode("utf-8")).hexdigest()[:16]


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each line; blank lines and a torn last line are skipped; a
    corrupt line elsewhere raises ValueError naming the file and line."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                if not raw.endswith(b"\n"):
                    log.warning("%s: ignoring a torn last line %d", path, number)
                    return
                raise ValueError(f"{path}: line {number} is not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: line {number} is not a JSON object")
            yield number, obj


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunOutput:
    """A run's output folder, opened for appending (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, fingerprint: str, config: dict, overwrite: bool = False,
                 validate: Callable[[dict], None] | None = None):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.validate = validate
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        try:
            self._lock_fd = durable.lock(self.folder / LOCK_FILE)
        except durable.LockHeld:
            raise RunLockedError(f"{self.folder} is in use by another tessy process; "
                                 "wait for it to finish or use another output folder") from None
        try:
            self._open(config, overwrite)
        except BaseException:
            self.close()
            raise

    def _open(self, config: dict, overwrite: bool) -> None:
        run_path = self.folder / RUN_FILE
        if run_path.exists() and not overwrite:
            try:
                old = json.loads(run_path.read_text(encoding="utf-8")).get("fingerprint")
            except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
                raise RunMismatchError(f"{run_path} is unreadable; use a new output folder or "
                                       "--overwrite to start afresh") from None
            if old != self.fingerprint:
                raise RunMismatchError(
                    f"output folder {self.folder} was made by another config (fingerprint {old}, "
                    f"this run's is {self.fingerprint}); use a new output folder, or "
                    "--overwrite to delete its records and start afresh")
        if overwrite:
            for name in (RECORDS_FILE, FAILURES_FILE, REJECTS_FILE):
                (self.folder / name).unlink(missing_ok=True)
        if overwrite or not run_path.exists():
            info = {"fingerprint": self.fingerprint, "config": config, "tessy_version": __version__,
                    "created": _now()}
            durable.write_atomic(run_path, json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n")
        self._done: dict[str, str | None] = {}  # id -> prompt_sha256 of its record
        self._attempts: dict[str, int] = {}
        self._rejects: set[tuple] = set()
        paths = {name: self.folder / name for name in (RECORDS_FILE, FAILURES_FILE, REJECTS_FILE)}
        for path in paths.values():
            durable.repair_tail(path)
        if paths[RECORDS_FILE].exists():
            for number, record in iter_jsonl(paths[RECORDS_FILE]):
                if record.get("id") in self._done:
                    log.warning("%s: id %r appears more than once (line %d)", paths[RECORDS_FILE],
                                record.get("id"), number)
                self._done[record.get("id")] = record.get("prompt_sha256")
        if paths[FAILURES_FILE].exists():
            for _, failure in iter_jsonl(paths[FAILURES_FILE]):
                sample_id = str(failure.get("id"))
                self._attempts[sample_id] = max(self._attempts.get(sample_id, 0), int(failure.get("attempt", 1)))
        if paths[REJECTS_FILE].exists():
            for _, reject in iter_jsonl(paths[REJECTS_FILE]):
                self._rejects.add((reject.get("line"), reject.get("id"), reject.get("reason")))
        for name, path in paths.items():
            self._fds[name] = durable.open_append(path)
        if self._done or self._attempts:
            log.info("%s: resuming: %d records done, %d ids failed before", self.folder, len(self._done),
                     len(self._attempts))

    # -- state

    @property
    def done_ids(self) -> frozenset[str]:
        return frozenset(self._done)

    def is_done(self, sample_id: str) -> bool:
        return sample_id in self._done

    def done_prompt_hash(self, sample_id: str) -> str | None:
        """The `prompt_sha256` of the record written for `sample_id` (None if none or not recorded)."""
        return self._done.get(sample_id)

    def failed_attempts(self, sample_id: str) -> int:
        """How many attempts at `sample_id` failed so far (across runs); 0 if none."""
        return self._attempts.get(sample_id, 0)

    @property
    def failed_ids(self) -> frozenset[str]:
        """Ids that failed and are not done: a rerun retries these."""
        return frozenset(i for i in self._attempts if i not in self._done)

    # -- appending

    def _append(self, name: str, obj: dict) -> None:
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        durable.append(self._fds[name], data, self.folder / name)

    def write_record(self, record: dict) -> bool:
        """Append `record` durably; return False (and write nothing) if its id is done."""
        if self.validate is not None:
            self.validate(record)
        with self._lock:
            if record["id"] in self._done:
                log.warning("record %r is already written; skipped", record["id"])
                return False
            self._append(RECORDS_FILE, record)
            self._done[record["id"]] = record.get("prompt_sha256")
            return True

    def write_failure(self, sample_id: str, reason: str, attempt: int) -> None:
        """Log that attempt number `attempt` (1-based, counted across runs) at `sample_id` failed."""
        with self._lock:
            self._append(FAILURES_FILE, {"id": sample_id, "reason": str(reason), "attempt": int(attempt),
                                         "time": _now()})
            self._attempts[sample_id] = max(self._attempts.get(sample_id, 0), int(attempt))

    def write_reject(self, line: int, reason: str, sample_id: str | None = None) -> bool:
        """Log an unusable input line; return False if the same reject is already logged."""
        key = (line, sample_id, reason)
        with self._lock:
            if key in self._rejects:
                return False
            self._append(REJECTS_FILE, {"line": line, "id": sample_id, "reason": reason, "time": _now()})
            self._rejects.add(key)
            return True

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def __enter__(self) -> "RunOutput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
