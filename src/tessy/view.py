"""View: one self-contained HTML page showing who wrote what, like the paper's Table 4.

`write_view` turns a records.jsonl (see `tessy.records`) into one page that opens from file://
with nothing else: a run summary, an index of the records shown (id, method, teacher share,
finish reason, length; filter, sort, 100 rows at a time) and one record at a time: its prompt,
its response with teacher and student spans in two colours (thinking and answer sections boxed
and labelled separately), and a line of numbers (spans, teacher share, tokens, finish reason, wall
time). Each record's body is embedded as JSON and rendered only when it is shown, so the page
opens in about the same time for ten records as for ten thousand (`tessy.view_page` owns the
page's CSS and script).

Promises:

- every piece of model or user text reaches the page as data (JSON with ``<`` written as
  ``\\u003c``, so no text can close a script) and is put on screen with ``textContent``, never as
  markup; whitespace and newlines are kept (``white-space: pre-wrap``);
- which records are shown: ``method`` (names), then ``ids`` (in the order given), then
  ``sample`` (N drawn at random with ``seed``, kept in file order), then ``limit`` (the first N),
  then ``order`` (a sort key); an unknown method or id, or a sample larger than the records to
  draw from, raises ValueError with one line saying so;
- memory stays small in the size of the records file: a first pass keeps each record's offset
  and numbers, a second reads the bodies of the records shown, one at a time, into the page;
- `write_view` never fails on a bad line: a line that is not JSON, not an object, or a record it
  cannot render (a hand-edited field of the wrong type) is skipped with a warning naming its
  line, and the rest is rendered; the page is written to a temporary file and renamed.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from tessy import durable
from tessy.records import summarize
from tessy.store import RECORDS_FILE
from tessy.view_page import CSS, INDEX_HTML, LEGEND, STUDENT_COLOUR, TEACHER_COLOUR, script

log = logging.getLogger(__name__)

__all__ = ["TEACHER_COLOUR", "STUDENT_COLOUR", "compact", "read_renderable", "select", "render_html",
           "write_view"]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def _real(x: object) -> float | None:
    """A share or a time: a finite number, or None (TypeError for anything else)."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"expected a number, got {type(x).__name__} {x!r}")
    return float(x) if math.isfinite(x) else None


def _count(x: object) -> int | float | str | None:
    """A count as shown: a number as it is, anything else as text ('?' on the page when absent)."""
    if x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)):
        return x
    return str(x)


def compact(record: dict) -> dict:
    """The body the page renders for `record` (its fields: `tessy.view_page`); raises on a field of
    the wrong shape (a hand-edited record)."""
    t = record.get("totals", {})
    msgs = record.get("messages", [])
    last_is_answer = bool(msgs) and msgs[-1].get("role") == "assistant"
    prompt = [[str(m.get("role", "")), str(m.get("content", ""))] for m in (msgs[:-1] if last_is_answer else msgs)]
    sections: list[list] = []
    for s in record.get("spans") or []:
        section = str(s.get("section", "response"))
        if not sections or sections[-1][0] != section:
            sections.append([section, []])
        sections[-1][1].append([str(s.get("role", "student")), str(s.get("text", "")), _count(s.get("tokens_student")),
                                _count(s.get("tokens_own")), _count(s.get("generated")), _count(s.get("discarded")),
                                1 if s.get("forced") else 0])
    return {"id": str(record.get("id", "?")), "method": str(record.get("method", "?")),
            "finish": str(record.get("finish_reason", "?")), "wall": _real(record.get("timings", {}).get("wall_s")),
            "t": [_count(t.get("spans", sum(len(s[1]) for s in sections))), _real(t.get("teacher_share")),
                  _real(t.get("thinking_teacher_share")), _count(t.get("tokens_student")),
                  _count(t.get("teacher_tokens_student")), _count(t.get("generated")), _count(t.get("discarded"))],
            "prompt": prompt, "sections": sections,
            "response": str(msgs[-1].get("content", "")) if last_is_answer and not sections else None}


def _light(record: dict) -> dict:
    """What the summary, the index and a sort key need of a record (its text left out)."""
    return {"id": record.get("id"), "method": record.get("method"), "totals": record.get("totals", {}),
            "timings": {"wall_s": record.get("timings", {}).get("wall_s", 0.0)},
            "finish_reason": record.get("finish_reason"), "models": record.get("models", {})}


def _index_row(position: int, light: dict) -> list:
    totals = light["totals"]
    return [position, str(light.get("id", "?")), str(light.get("method", "?")), _real(totals.get("teacher_share")),
            str(light.get("finish_reason", "?")), _count(totals.get("tokens_student"))]


def _model_rows(r: dict) -> list[tuple[str, str]]:
    models = r.get("models", {})
    rows = []
    for role in ("teacher", "student"):
        if role in models:
            m = models[role]
            rows.append((role, f"{m.get('model', '?')} (format {m.get('format', '?')}, "
                               f"predictor {m.get('predictor') or '–'})"))
    return rows


def _unrenderable(r: object) -> str | None:
    """Why record `r` cannot be shown (it is not an object, or a field has the wrong shape), or None."""
    if not isinstance(r, dict):
        return f"expected a JSON object, got {type(r).__name__}"
    try:
        compact(r)
        _index_row(0, _light(r))
        _model_rows(r)
        summary = summarize([r])
        _pct(summary["mean_teacher_share"]), _num(summary["mean_tokens_student"]), _num(summary["mean_wall_s"])
    except Exception as exc:  # a hand-edited record: any field may be of any type
        return f"cannot be shown ({type(exc).__name__}: {exc})"
    return None


def _scan(path: Path, warn: Callable[[str], None]) -> Iterator[tuple[int, dict]]:
    """(byte offset of its line, record) for each record of `path` that can be shown."""
    with open(path, "rb") as f:
        offset = 0
        for n, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                warn(f"{path} line {n}: skipped, not a JSON record ({exc})")
                continue
            problem = _unrenderable(record)
            if problem:
                warn(f"{path} line {n}: skipped, {problem}")
                continue
            yield start, record


def read_renderable(path: str | os.PathLike,
                    warn: Callable[[str], None] | None = None) -> Iterator[dict]:
    """The records of a records.jsonl that can be shown, in order; each line that cannot (not
    JSON, not an object, a field of the wrong type) is skipped with ``warn("FILE line N: ...")``."""
    for _, record in _scan(Path(path), warn or log.warning):
        yield record


def _names(values: str | Sequence[str] | None) -> list[str]:
    """'a,b' or ['a', 'b,c'] -> ['a', 'b', 'c'] (blanks dropped, first occurrence kept)."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return list(dict.fromkeys(v.strip() for item in items for v in str(item).split(",") if v.strip()))


def select(items: Sequence[Any], light: Callable[[Any], dict] = lambda x: x, limit: int | None = None,
           sample: int | None = None, ids: str | Sequence[str] | None = None,
           method: str | Sequence[str] | None = None, seed: int = 0) -> list:
    """The items to show, by the rules in the module docstring; ``light(item)`` gives an item's
    record (or its `_light` numbers). ValueError with one line for an unknown method or id, or a
    sample larger than what it draws from."""
    chosen = list(items)
    methods = _names(method)
    if methods:
        present: dict[str, int] = {}
        for item in chosen:
            name = str(light(item).get("method"))
            present[name] = present.get(name, 0) + 1
        unknown = [m for m in methods if m not in present]
        if unknown:
            have = ", ".join(f"{k} ({v})" for k, v in present.items()) or "none: no records"
            raise ValueError(f"no records of method {', '.join(map(repr, unknown))}; the methods here: {have}")
        chosen = [item for item in chosen if str(light(item).get("method")) in methods]
    wanted = _names(ids)
    if wanted:
        by_id: dict[str, Any] = {}
        for item in chosen:
            by_id.setdefault(str(light(item).get("id")), item)
        missing = [i for i in wanted if i not in by_id]
        if missing:
            shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            among = f"the {len(chosen)} records" + (f" of method {', '.join(methods)}" if methods else "")
            raise ValueError(f"unknown id{'s' if len(missing) > 1 else ''} {shown}: not among {among}")
        chosen = [by_id[i] for i in wanted]
    if sample is not None:
        if sample < 1:
            raise ValueError(f"sample must be at least 1, got {sample}")
        if sample > len(chosen):
            after = " (after the method and id filters)" if methods or wanted else ""
            raise ValueError(f"cannot sample {sample} records: there are only {len(chosen)}{after}")
        picks = sorted(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [chosen[i] for i in picks]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        chosen = chosen[:limit]
    return chosen


def _json(obj: object) -> str:
    """JSON safe inside a script element: no '<' at all, so nothing in it can end the element."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def _page(write: Callable[[str], None], title: str, lights: list[dict], bodies: Iterable[dict]) -> None:
    """Write the page for records whose numbers are `lights` and bodies (`compact`) `bodies`."""
    s = summarize(lights)
    rows = [("samples", s["count"]),
            ("mean teacher share", _pct(s["mean_teacher_share"])),
            ("overall teacher share (tokens)", _pct(s["overall_teacher_share"])),
            ("mean thinking teacher share", _pct(s["mean_thinking_teacher_share"])),
            ("mean tokens (student tokenizer)", _num(s["mean_tokens_student"])),
            ("mean spans", _num(s["mean_spans"])),
            ("generated / discarded tokens", f"{s['generated']} / {s['discarded']}"),
            ("mean wall time", f"{_num(s['mean_wall_s'], '{:.2f}')} s"),
            ("finish reasons", ", ".join(f"{k}: {v}" for k, v in s["finish_reasons"].items())),
            ("methods", ", ".join(f"{k}: {v}" for k, v in s["methods"].items()))]
    rows += _model_rows(lights[0]) if lights else []
    summary = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    write(f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
          f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
          f"<h1>{_e(title)}</h1>\n{LEGEND}\n<table class=\"summary\">{summary}</table>\n{INDEX_HTML}"
          f'<script type="application/json" id="tessy-index">'
          f"{_json([_index_row(i, light) for i, light in enumerate(lights)])}</script>\n")
    app = f"<script>\n{script()}</script>\n"
    for i, body in enumerate(bodies):
        write(f'<script type="application/json" id="r{i}">{_json(body)}</script>\n')
        if i == 0:  # the first record is on screen while the rest of the file still loads
            write(app)
    if not lights:
        write(app)
    write("</body>\n</html>\n")


def render_html(records: Iterable[dict], title: str = "tessy records") -> str:
    """One self-contained HTML page for ``records`` (see the module docstring)."""
    records = list(records)
    parts: list[str] = []
    _page(parts.append, title, [_light(r) for r in records], (compact(r) for r in records))
    return "".join(parts)


def write_view(records_path: str | os.PathLike, out_path: str | os.PathLike,
               title: str | None = None, limit: int | None = None,
               warn: Callable[[str], None] | None = None,
               order: Callable[[dict], Any] | None = None, sample: int | None = None,
               ids: str | Sequence[str] | None = None, method: str | Sequence[str] | None = None,
               seed: int = 0, counts: dict | None = None) -> Path:
    """Render ``records_path`` (a records.jsonl or a run folder) to ``out_path``; return it.

    ``method``, ``ids``, ``sample`` (with ``seed``) and ``limit`` choose the records (`select`);
    ``order`` (a sort key, given each record's id, method, totals, timings, finish_reason and
    models) sorts the ones shown. A line that cannot be shown is skipped with ``warn(message naming
    the line)`` (default: a logged warning). ``counts``, when given, receives ``records`` (those
    that can be shown), ``shown`` and ``bytes`` (the page's size).
    """
    src = Path(records_path)
    if src.is_dir():
        src = src / RECORDS_FILE
    scanned = [(offset, _light(record)) for offset, record in _scan(src, warn or log.warning)]
    chosen = select(scanned, lambda item: item[1], limit=limit, sample=sample, ids=ids, method=method, seed=seed)
    if order is not None:
        chosen.sort(key=lambda item: order(item[1]))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with open(src, "rb") as records, durable.replacing(out, "wb") as page:
        def bodies() -> Iterator[dict]:
            for offset, _ in chosen:
                records.seek(offset)
                yield compact(json.loads(records.readline().decode("utf-8")))

        def write(text: str) -> None:
            nonlocal size
            data = text.encode("utf-8", "replace")  # a lone surrogate (from a \\ud800 escape) becomes '?'
            size += len(data)
            page.write(data)

        _page(write, title or f"tessy: {src}", [light for _, light in chosen], bodies())
    if counts is not None:
        counts.update(records=len(scanned), shown=len(chosen), bytes=size)
    return out
