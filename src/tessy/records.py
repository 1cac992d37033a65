"""Records: the schema of one finished sample, and a run's append-only, exactly-once output folder.

A run's output folder holds:

- ``records.jsonl``  one JSON line per finished prompt (schema below), appended whole or not at all;
- ``failures.jsonl`` samples that raised: ``{"id", "reason", "attempt", "time"}``;
- ``rejects.jsonl``  input lines that could not be used: ``{"line", "id", "reason", "time"}``;
- ``run.json``       ``{"fingerprint", "config", "tessy_version", "created"}``.

Promises (what `RunOutput` guarantees):

- Exactly once: a record is one ``write`` of one line followed by flush + ``os.fsync``; an id
  already in ``records.jsonl`` is never written again (``write_record`` returns False), also
  across reruns. A ``.lock`` file (``flock``) stops two processes from writing one folder.
- Crash repair: a ``kill -9`` mid-write can leave a last line without its ``"\\n"``. On open that
  torn tail is truncated away (or, if it is a complete JSON object, its newline is restored) and
  logged, so the next append starts on a clean line. The same repair runs on the two logs.
- Resume: ``done_ids`` is read back on open; ``failed_attempts(id)`` says how many attempts a
  sample already used, so a rerun retries failed ids that are not done, with a bounded count.
- One config per folder: ``run.json`` holds the fingerprint of the fields that shape the data;
  opening the folder with another fingerprint raises `RunMismatchError` unless ``overwrite=True``
  (which starts the folder afresh: records, failures and rejects are deleted).

Record schema (the engine builds these dicts; `validate_record` checks them)::

    {"id": str, "method": str ("tessy", "teacher_only", ...),
     "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...,
                  {"role": "assistant", "content": str}],          # last turn: the response
     "spans": [{"role": "student"|"teacher", "section": "thinking"|"answer"|"response",
                "text": str,
                "tokens_student": int,   # span length in the student's tokenizer
                "tokens_own": int,       # span length in the generating model's tokenizer
                "generated": int,        # tokens that model generated for this span
                "discarded": int,        # of those, thrown away on cuts
                "forced": bool}],        # kept past the cut to end an empty hand-over loop
     "totals": {"spans": int, "tokens_student": int, "teacher_tokens_student": int,
                "teacher_share": float,  # teacher tokens / all tokens, both in student tokens
                "thinking_teacher_share": float | None, "generated": int, "discarded": int},
     "finish_reason": "stop"|"length"|"max_spans"|"repetition"|"context",
     "timings": {"wall_s": float, "predict_s": float,
                 "generate_s": {"teacher": float, "student": float}},  # roles that generated
     "models": {"teacher": {"model": str, "format": str, "predictor": str | None},
                "student": {...}},
     "config_fingerprint": str, "tessy_version": str}

Extra keys are allowed (forward compatibility); the listed ones are required.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from tessy import __version__

log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
FAILURES_FILE = "failures.jsonl"
REJECTS_FILE = "rejects.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"

SPAN_ROLES = ("student", "teacher")
SECTIONS = ("thinking", "answer", "response")
FINISH_REASONS = ("stop", "length", "max_spans", "repetition", "context")
MESSAGE_ROLES = ("system", "user", "assistant")

# Config keys that do not change the data (where it goes, how fast, how loud).
NON_DATA_FIELDS = frozenset({
    "output", "output_dir", "out", "overwrite", "resume", "concurrency", "max_concurrency",
    "workers", "num_workers", "batch_size", "log_level", "verbose", "quiet", "progress",
    "limit", "max_attempts", "timeout", "timeout_s", "request_timeout", "retries",
})


class RunMismatchError(RuntimeError):
    """The output folder was made by a run with another config."""


class RunLockedError(RuntimeError):
    """Another process is writing to the same output folder."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def config_fingerprint(config: dict, ignore: Iterable[str] = NON_DATA_FIELDS) -> str:
    """sha256 (first 16 hex) of the canonical JSON of the config's data-shaping fields.

    Top-level keys in ``ignore`` (output paths, concurrency, logging...) are left out, so
    changing them does not make an existing output folder unusable.
    """
    skip = set(ignore)
    shaped = {k: v for k, v in config.items() if k not in skip}
    return hashlib.sha256(_canonical(shaped).encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------- validation


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return (_is_int(x) or isinstance(x, float)) and math.isfinite(x)


def _need(cond: bool, field: str, what: str) -> None:
    if not cond:
        raise ValueError(f"record field {field!r}: {what}")


def validate_record(record: dict) -> None:
    """Raise ValueError naming the first bad field of ``record``; return None if it is valid."""
    _need(isinstance(record, dict), "<record>", "must be a dict")
    for key in ("id", "method", "messages", "spans", "totals", "finish_reason", "timings",
                "models", "config_fingerprint", "tessy_version"):
        _need(key in record, key, "missing")
    rid = record["id"]
    _need(isinstance(rid, str) and rid != "", "id", "must be a non-empty string")
    _need(isinstance(record["method"], str) and record["method"] != "", "method",
          "must be a non-empty string")

    msgs = record["messages"]
    _need(isinstance(msgs, list) and len(msgs) >= 2, "messages",
          "must be a list of at least a user turn and the assistant response")
    for i, m in enumerate(msgs):
        f = f"messages[{i}]"
        _need(isinstance(m, dict), f, "must be a dict")
        _need(m.get("role") in MESSAGE_ROLES, f"{f}.role", f"must be one of {MESSAGE_ROLES}")
        _need(isinstance(m.get("content"), str), f"{f}.content", "must be a string")
    _need(msgs[-1]["role"] == "assistant", f"messages[{len(msgs) - 1}].role",
          "the last turn must be the assistant response")
    _need(any(m["role"] == "user" for m in msgs[:-1]), "messages", "has no user turn")

    spans = record["spans"]
    _need(isinstance(spans, list), "spans", "must be a list")
    for i, s in enumerate(spans):
        f = f"spans[{i}]"
        _need(isinstance(s, dict), f, "must be a dict")
        _need(s.get("role") in SPAN_ROLES, f"{f}.role", f"must be one of {SPAN_ROLES}")
        _need(s.get("section") in SECTIONS, f"{f}.section", f"must be one of {SECTIONS}")
        _need(isinstance(s.get("text"), str), f"{f}.text", "must be a string")
        for k in ("tokens_student", "tokens_own", "generated", "discarded"):
            _need(_is_int(s.get(k)) and s[k] >= 0, f"{f}.{k}", "must be an int >= 0")
        _need(isinstance(s.get("forced"), bool), f"{f}.forced", "must be a bool")

    t = record["totals"]
    _need(isinstance(t, dict), "totals", "must be a dict")
    for k in ("spans", "tokens_student", "teacher_tokens_student", "generated", "discarded"):
        _need(_is_int(t.get(k)) and t[k] >= 0, f"totals.{k}", "must be an int >= 0")
    _need(_is_num(t.get("teacher_share")) and 0.0 <= t["teacher_share"] <= 1.0,
          "totals.teacher_share", "must be a number in [0, 1]")
    tts = t.get("thinking_teacher_share", "missing")
    _need(tts is None or (_is_num(tts) and 0.0 <= tts <= 1.0), "totals.thinking_teacher_share",
          "must be a number in [0, 1] or null")
    _need(t["spans"] == len(spans), "totals.spans",
          f"is {t['spans']} but there are {len(spans)} spans")
    tok = sum(s["tokens_student"] for s in spans)
    _need(t["tokens_student"] == tok, "totals.tokens_student",
          f"is {t['tokens_student']} but the spans sum to {tok}")
    ttok = sum(s["tokens_student"] for s in spans if s["role"] == "teacher")
    _need(t["teacher_tokens_student"] == ttok, "totals.teacher_tokens_student",
          f"is {t['teacher_tokens_student']} but the teacher spans sum to {ttok}")

    _need(record["finish_reason"] in FINISH_REASONS, "finish_reason",
          f"must be one of {FINISH_REASONS}")

    tm = record["timings"]
    _need(isinstance(tm, dict), "timings", "must be a dict")
    _need(_is_num(tm.get("wall_s")) and tm["wall_s"] >= 0, "timings.wall_s",
          "must be a number >= 0")
    _need(_is_num(tm.get("predict_s")) and tm["predict_s"] >= 0, "timings.predict_s",
          "must be a number >= 0")
    g = tm.get("generate_s")
    _need(isinstance(g, dict), "timings.generate_s", "must be a dict")
    for role, secs in g.items():  # a single-model method may time only one role
        _need(role in SPAN_ROLES, f"timings.generate_s.{role}",
              f"unknown role; expected one of {SPAN_ROLES}")
        _need(_is_num(secs) and secs >= 0, f"timings.generate_s.{role}", "must be a number >= 0")

    models = record["models"]
    _need(isinstance(models, dict) and models, "models", "must be a non-empty dict")
    for role, m in models.items():
        f = f"models.{role}"
        _need(role in SPAN_ROLES, f, f"unknown role; expected one of {SPAN_ROLES}")
        _need(isinstance(m, dict), f, "must be a dict")
        _need(isinstance(m.get("model"), str) and m["model"] != "", f"{f}.model",
              "must be a non-empty string")
        _need(isinstance(m.get("format"), str), f"{f}.format", "must be a string")
        _need(m.get("predictor") is None or isinstance(m.get("predictor"), str), f"{f}.predictor",
              "must be a string or null")
    for role in {s["role"] for s in spans}:
        _need(role in models, f"models.{role}", "missing, but a span was written by it")

    _need(isinstance(record["config_fingerprint"], str), "config_fingerprint", "must be a string")
    _need(isinstance(record["tessy_version"], str), "tessy_version", "must be a string")


# ---------------------------------------------------------------------------- reading


def _repair_tail(path: Path) -> None:
    """Make ``path`` end on a newline: drop (or, if complete, close) a torn last line."""
    if not path.exists():
        return
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Find the start of the last line by scanning back in blocks.
        pos, start = size, 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                start = pos + nl + 1
                break
        f.seek(start)
        tail = f.read()
        try:
            complete = isinstance(json.loads(tail.decode("utf-8")), dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            complete = False
        if complete:
            f.seek(size)
            f.write(b"\n")
            log.warning("%s: last line had no newline but is complete; newline restored", path)
        else:
            f.truncate(start)
            log.warning("%s: removed a torn last line (%d bytes, line started at byte %d), "
                        "left by a crash mid-write", path, size - start, start)
        f.flush()
        os.fsync(f.fileno())


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object); skip blank lines and a torn last line; raise on corruption."""
    with open(path, "rb") as f:
        lineno = 0
        for raw in f:
            lineno += 1
            if not raw.strip():
                continue
            torn = not raw.endswith(b"\n")
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                if torn:
                    log.warning("%s: ignoring a torn last line %d", path, lineno)
                    return
                raise ValueError(f"{path}: line {lineno} is not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: line {lineno} is not a JSON object")
            yield lineno, obj


def read_records(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the records of a ``records.jsonl`` (or a run folder holding one).

    A torn last line (a crash mid-write) is skipped; a corrupt line elsewhere raises ValueError.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RECORDS_FILE
    for _, obj in _iter_jsonl(p):
        yield obj


def summarize(records: Iterable[dict]) -> dict:
    """Statistics of a set of records, computed from the records alone."""
    n = 0
    shares: list[float] = []
    think_shares: list[float] = []
    tokens = teacher_tokens = spans = generated = discarded = 0
    wall = 0.0
    finish: Counter[str] = Counter()
    methods: Counter[str] = Counter()
    for r in records:
        n += 1
        t = r.get("totals", {})
        shares.append(float(t.get("teacher_share", 0.0)))
        if t.get("thinking_teacher_share") is not None:
            think_shares.append(float(t["thinking_teacher_share"]))
        tokens += t.get("tokens_student", 0)
        teacher_tokens += t.get("teacher_tokens_student", 0)
        spans += t.get("spans", 0)
        generated += t.get("generated", 0)
        discarded += t.get("discarded", 0)
        wall += float(r.get("timings", {}).get("wall_s", 0.0))
        finish[r.get("finish_reason", "?")] += 1
        methods[r.get("method", "?")] += 1

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return {
        "count": n,
        "mean_teacher_share": mean(shares),
        "overall_teacher_share": teacher_tokens / tokens if tokens else None,
        "mean_thinking_teacher_share": mean(think_shares),
        "tokens_student": tokens,
        "teacher_tokens_student": teacher_tokens,
        "mean_tokens_student": tokens / n if n else None,
        "mean_spans": spans / n if n else None,
        "generated": generated,
        "discarded": discarded,
        "mean_wall_s": wall / n if n else None,
        "finish_reasons": dict(finish.most_common()),
        "methods": dict(methods.most_common()),
    }


# ---------------------------------------------------------------------------- writing


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunOutput:
    """A run's output folder, opened for appending. See the module docstring for the promises."""

    def __init__(self, folder: str | os.PathLike, fingerprint: str, config: dict,
                 overwrite: bool = False):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lock_fd = self._acquire_folder_lock()
        try:
            self._open(config, overwrite)
        except BaseException:
            self._release_folder_lock()
            raise

    # -- opening

    def _acquire_folder_lock(self) -> int | None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process guard
            return None
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise RunLockedError(f"{self.folder} is in use by another tessy process; "
                                 "wait for it to finish or use another output folder") from None
        return fd

    def _release_folder_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _open(self, config: dict, overwrite: bool) -> None:
        run_path = self.folder / RUN_FILE
        if run_path.exists() and not overwrite:
            try:
                existing = json.loads(run_path.read_text(encoding="utf-8"))
                old = existing.get("fingerprint")
            except (json.JSONDecodeError, AttributeError):
                raise RunMismatchError(f"{run_path} is unreadable; use a new output folder or "
                                       "overwrite=True to start afresh") from None
            if old != self.fingerprint:
                raise RunMismatchError(
                    f"output folder {self.folder} was made by another config (fingerprint {old}, "
                    f"this run's is {self.fingerprint}); use a new output folder, or "
                    "overwrite=True (--overwrite) to delete its records and start afresh")
        if overwrite:
            for name in (RECORDS_FILE, FAILURES_FILE, REJECTS_FILE):
                (self.folder / name).unlink(missing_ok=True)
        if overwrite or not run_path.exists():
            meta = {"fingerprint": self.fingerprint, "config": config,
                    "tessy_version": __version__, "created": _now()}
            tmp = run_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str) + "\n",
                           encoding="utf-8")
            os.replace(tmp, run_path)

        self._done: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._rejects: set[tuple] = set()
        paths = {n: self.folder / n for n in (RECORDS_FILE, FAILURES_FILE, REJECTS_FILE)}
        for p in paths.values():
            _repair_tail(p)
        if paths[RECORDS_FILE].exists():
            for lineno, rec in _iter_jsonl(paths[RECORDS_FILE]):
                rid = rec.get("id")
                if rid in self._done:
                    log.warning("%s: id %r appears more than once (line %d)",
                                paths[RECORDS_FILE], rid, lineno)
                self._done.add(rid)
        if paths[FAILURES_FILE].exists():
            for _, fl in _iter_jsonl(paths[FAILURES_FILE]):
                rid, att = str(fl.get("id")), fl.get("attempt", 1)
                self._attempts[rid] = max(self._attempts.get(rid, 0), int(att))
        if paths[REJECTS_FILE].exists():
            for _, rj in _iter_jsonl(paths[REJECTS_FILE]):
                self._rejects.add((rj.get("line"), rj.get("id"), rj.get("reason")))
        self._files = {n: open(p, "ab") for n, p in paths.items()}
        if self._done or self._attempts:
            log.info("%s: resuming: %d records done, %d ids failed before", self.folder,
                     len(self._done), len(self._attempts))

    # -- state

    @property
    def done_ids(self) -> frozenset[str]:
        return frozenset(self._done)

    def is_done(self, id: str) -> bool:
        return id in self._done

    def failed_attempts(self, id: str) -> int:
        """How many attempts at ``id`` failed so far (across runs); 0 if none."""
        return self._attempts.get(id, 0)

    @property
    def failed_ids(self) -> frozenset[str]:
        """Ids that failed and are not done: a rerun retries these."""
        return frozenset(i for i in self._attempts if i not in self._done)

    # -- appending

    def _append(self, name: str, obj: dict) -> None:
        f = self._files[name]
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        start = f.seek(0, os.SEEK_END)
        try:
            f.write(data)  # one write of the whole line
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            try:  # a failed write (disk full...) must not leave half a line behind
                f.truncate(start)
            except Exception:
                log.exception("%s: could not undo a failed write", self.folder / name)
            raise

    def write_record(self, record: dict, validate: bool = True) -> bool:
        """Append ``record`` durably; return False (and write nothing) if its id is done."""
        if validate:
            validate_record(record)
        with self._lock:
            if record["id"] in self._done:
                log.warning("record %r is already written; skipped", record["id"])
                return False
            self._append(RECORDS_FILE, record)
            self._done.add(record["id"])
            return True

    def write_failure(self, id: str, reason: str, attempt: int) -> None:
        """Log that attempt number ``attempt`` (1-based, counted across runs) at ``id`` failed."""
        with self._lock:
            self._append(FAILURES_FILE, {"id": id, "reason": str(reason), "attempt": int(attempt),
                                         "time": _now()})
            self._attempts[id] = max(self._attempts.get(id, 0), int(attempt))

    def write_reject(self, line: int, reason: str, id: str | None = None) -> bool:
        """Log an unusable input line; return False if the same reject is already logged."""
        key = (line, id, reason)
        with self._lock:
            if key in self._rejects:
                return False
            self._append(REJECTS_FILE, {"line": line, "id": id, "reason": reason, "time": _now()})
            self._rejects.add(key)
            return True

    def close(self) -> None:
        for f in getattr(self, "_files", {}).values():
            f.close()
        self._files = {}
        self._release_folder_lock()

    def __enter__(self) -> RunOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
