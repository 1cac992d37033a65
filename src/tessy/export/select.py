"""Which records an export keeps, the rows it writes, and the train/validation split.

`Filters` holds the user's choices; `select(runs, filters)` walks the records of every run in
order and returns the kept `rows` and a `Counter` of the dropped ones by reason. A record is
dropped for the FIRST of these that applies (so every record is counted once):

- ``no_response``: the last turn is not a non-empty assistant turn;
- ``method``: its method is not one of ``filters.methods`` (when given);
- ``finish_reason=<reason>``: its finish reason is not kept (default: only ``stop``; a response
  cut by the token budget, the span budget, the context or a repetition is not a whole answer);
- ``teacher_share``: its teacher-token share is outside ``[min, max]`` (inclusive);
- ``verification=<status>``: its verdict (``pass``, ``fail``, ``error``, or ``unverified`` when it
  has none) is not one of ``filters.verification`` (when given);
- ``chat_template``: with a tokenizer given, the conversation does not round-trip through its
  chat template (`tessy.export.template`).

An id seen in two runs is an error (the export would hold two answers to one prompt under one
id): export those runs separately or filter by method. `split_of(id)` puts an id in
``validation`` when a hash of the seed and the id falls below the fraction: the same id lands in
the same split in every export with the same seed, whatever else is exported with it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

FINISH_REASONS = ("stop", "length", "max_spans", "repetition", "context")
VERIFICATION_STATUSES = ("pass", "fail", "error", "unverified")
SPAN_FIELDS = ("role", "section", "text", "tokens_student", "tokens_own", "generated", "discarded", "forced")


@dataclass
class Filters:
    finish_reasons: tuple[str, ...] = ("stop",)
    methods: tuple[str, ...] | None = None
    teacher_share: tuple[float, float] = (0.0, 1.0)
    verification: tuple[str, ...] | None = None
    verifier: str | None = None  # which verdict file (None: all of the run's)

    def __post_init__(self) -> None:
        unknown = set(self.finish_reasons) - set(FINISH_REASONS)
        if unknown:
            raise ValueError(f"unknown finish reason(s) {sorted(unknown)}; choose from {', '.join(FINISH_REASONS)}")
        if self.verification is not None:
            unknown = set(self.verification) - set(VERIFICATION_STATUSES)
            if unknown:
                raise ValueError(f"unknown verification status(es) {sorted(unknown)}; "
                                 f"choose from {', '.join(VERIFICATION_STATUSES)}")
        low, high = self.teacher_share
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"teacher share range {low}:{high} must satisfy 0 <= min <= max <= 1")

    def describe(self) -> dict[str, Any]:
        return {"finish_reasons": list(self.finish_reasons), "methods": list(self.methods) if self.methods else "any",
                "teacher_share": list(self.teacher_share),
                "verification": list(self.verification) if self.verification else "any",
                "verifier": self.verifier or ("all" if self.verification else None)}


def split_of(record_id: str, validation_fraction: float, seed: int = 0) -> str:
    digest = hashlib.sha256(f"{seed}\0{record_id}".encode("utf-8")).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction else "train"


def make_row(record: dict, verdict: dict | None) -> dict[str, Any]:
    totals = record.get("totals") or {}
    return {
        "id": str(record["id"]),
        "messages": [{"role": m["role"], "content": m["content"]} for m in record["messages"]],
        "method": record.get("method"),
        "finish_reason": record.get("finish_reason"),
        "teacher_share": float(totals.get("teacher_share") or 0.0),
        "tokens_student": int(totals.get("tokens_student") or 0),
        "verification": verdict.get("status") if verdict else None,
        "spans": [{k: s.get(k) for k in SPAN_FIELDS} for s in record.get("spans") or []],
    }


def select(runs: list, filters: Filters, template_check=None) -> tuple[list[tuple[dict, dict]], Counter]:
    """(kept (row, record) pairs, dropped counts by reason). `runs` are `tessy.export.runs.Run`s;
    `template_check(messages)` returns None when the conversation round-trips, else why not."""
    kept: list[tuple[dict, dict]] = []
    dropped: Counter[str] = Counter()
    seen: dict[str, str] = {}
    for run in runs:
        verdicts: dict[str, dict] = {}
        if filters.verification is not None:
            from tessy.verify import record_verdicts

            verdicts, _ = record_verdicts(run, filters.verifier)
        for record in run.records:
            record_id = str(record["id"])
            if record_id in seen:
                raise ValueError(f"id {record_id!r} is in both {seen[record_id]} and {run.folder}: export them "
                                 "separately, or keep one method with --method")
            seen[record_id] = str(run.folder)
            reason = _drop_reason(record, filters, verdicts.get(record_id), template_check)
            if reason:
                dropped[reason] += 1
            else:
                kept.append((make_row(record, verdicts.get(record_id)), record))
    return kept, dropped


def _drop_reason(record: dict, filters: Filters, verdict: dict | None, template_check) -> str | None:
    messages = record.get("messages") or []
    if not messages or messages[-1].get("role") != "assistant" or not (messages[-1].get("content") or "").strip():
        return "no_response"
    if filters.methods and record.get("method") not in filters.methods:
        return "method"
    if record.get("finish_reason") not in filters.finish_reasons:
        return f"finish_reason={record.get('finish_reason')}"
    share = float((record.get("totals") or {}).get("teacher_share") or 0.0)
    if not filters.teacher_share[0] <= share <= filters.teacher_share[1]:
        return "teacher_share"
    if filters.verification is not None:
        status = verdict.get("status") if verdict else "unverified"
        if status not in filters.verification:
            return f"verification={status}"
    if template_check is not None:
        problem = template_check(messages)
        if problem:
            return "chat_template"
    return None
