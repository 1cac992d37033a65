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
- ``thinking_unfinished``: the layout puts the thinking apart from the answer (a reasoning field,
  or prompt-completion) and the response's thinking never ended (`tessy.export.layouts`);
- ``chat_template``: with a template check given, the row does not survive the student's chat
  template as the trainer renders it (`tessy.export.template`);
- ``max_tokens``: with ``filters.max_tokens`` set, the rendered row is longer than that many
  student tokens (the trainer's maximum length), so a trainer would cut it (TRL keeps the start:
  the answer and the end of turn would be lost).

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
    #: Drop rows whose rendered conversation is longer than this many student tokens (None: no limit).
    max_tokens: int | None = None

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
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int)
                                            or self.max_tokens < 1):
            raise ValueError(f"max tokens {self.max_tokens!r} must be a whole number of at least 1")

    def describe(self) -> dict[str, Any]:
        return {"finish_reasons": list(self.finish_reasons), "methods": list(self.methods) if self.methods else "any",
                "teacher_share": list(self.teacher_share),
                "verification": list(self.verification) if self.verification else "any",
                "verifier": self.verifier or ("all" if self.verification else None),
                "max_tokens": self.max_tokens}


def split_of(record_id: str, validation_fraction: float, seed: int = 0) -> str:
    digest = hashlib.sha256(f"{seed}\0{record_id}".encode("utf-8")).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < validation_fraction else "train"


def make_row(record: dict, verdict: dict | None, layout=None) -> dict[str, Any] | str:
    """The exported row of `record` (its text columns laid out by `layout`, a
    `tessy.export.layouts.Layout`; by default the record's messages as they are), or the reason
    the layout cannot hold it."""
    fields = layout.fields(record) if layout is not None else {
        "messages": [{"role": m["role"], "content": m["content"]} for m in record["messages"]]}
    if isinstance(fields, str):
        return fields
    totals = record.get("totals") or {}
    return {
        "id": str(record["id"]),
        **fields,
        "method": record.get("method"),
        "finish_reason": record.get("finish_reason"),
        "teacher_share": float(totals.get("teacher_share") or 0.0),
        "tokens_student": int(totals.get("tokens_student") or 0),
        "verification": verdict.get("status") if verdict else None,
        "spans": [{k: s.get(k) for k in SPAN_FIELDS} for s in record.get("spans") or []],
    }


def select(runs: list, filters: Filters, template_check=None, layout=None,
           measure=None) -> tuple[list[tuple[dict, dict]], Counter]:
    """(kept (row, record) pairs, dropped counts by reason). `runs` are `tessy.export.runs.Run`s;
    `layout` lays the rows out (`make_row`); `template_check(record_id, fields, record)` returns
    None when the row survives the chat template, else a drop reason; `measure(fields, record)` is
    the row's length in student tokens (needed with ``filters.max_tokens``)."""
    if filters.max_tokens is not None and measure is None:
        raise ValueError("--max-tokens needs the student's tokenizer to count tokens")
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
            reason = _drop_reason(record, filters, verdicts.get(record_id))
            row = None if reason else make_row(record, verdicts.get(record_id), layout)
            if isinstance(row, str):
                reason = row
            elif row is not None:
                fields = {k: row[k] for k in ("messages", "prompt", "completion") if k in row}
                if template_check is not None:
                    reason = template_check(record_id, fields, record)
                if not reason and filters.max_tokens is not None and measure(fields, record) > filters.max_tokens:
                    reason = "max_tokens"
            if reason:
                dropped[reason] += 1
            else:
                kept.append((row, record))
    return kept, dropped


def _drop_reason(record: dict, filters: Filters, verdict: dict | None) -> str | None:
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
    return None
