"""View: one self-contained HTML page showing who wrote what, like the paper's Table 4.

`render_html` turns records (see `tessy.records`) into a page with inline CSS and no JavaScript:
a run summary and an index at the top, then per sample its prompt, its response with teacher
and student spans in two colours (thinking and answer sections boxed and labelled separately),
and a line of numbers (spans, teacher share, tokens, finish reason, wall time).

Promises: every piece of model or user text is HTML-escaped; whitespace and newlines are kept
(``white-space: pre-wrap``); the page stays plain HTML for hundreds of samples (each sample
is a ``<details>`` element, so long ones can be folded without scripts). `write_view` never fails
on a bad line: a line that is not JSON, not an object, or a record it cannot render (a hand-edited
field of the wrong type) is skipped with a warning naming its line, and the rest is rendered.
"""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tessy import durable
from tessy.records import summarize
from tessy.store import RECORDS_FILE

log = logging.getLogger(__name__)

TEACHER_COLOUR = "#ffd8a8"  # orange
STUDENT_COLOUR = "#c5e3ff"  # blue

CSS = f"""
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; color: #222;
       padding: 0 1em; }}
h1 {{ font-size: 1.5em; margin-bottom: .3em; }}
table.summary td, table.summary th, table.index td, table.index th {{
  padding: .15em .8em; text-align: left; border-bottom: 1px solid #eee; font-size: .92em; }}
table.index {{ border-collapse: collapse; margin: .5em 0 1.5em; }}
.legend span {{ display: inline-block; padding: .1em .6em; margin-right: .6em;
  border-radius: 3px; }}
.teacher {{ background: {TEACHER_COLOUR}; }}
.student {{ background: {STUDENT_COLOUR}; }}
.span.forced {{ outline: 1px dashed #555; }}
.span {{ border-radius: 2px; }}
.span + .span {{ box-shadow: -1px 0 0 #fff; }}
details.sample {{ border: 1px solid #ccc; border-radius: 6px; margin: 1em 0; padding: .5em 1em; }}
details.sample > summary {{ cursor: pointer; font-weight: 600; }}
.stats {{ color: #555; font-size: .88em; margin: .3em 0 .6em; }}
.stats b {{ color: #222; }}
.turn, .section {{ white-space: pre-wrap; word-wrap: break-word; font-family: ui-monospace,
  SFMono-Regular, Menlo, monospace; font-size: .86em; line-height: 1.45; }}
.turn {{ background: #f6f6f6; border-left: 3px solid #999; padding: .4em .7em; margin: .3em 0; }}
.label {{ display: block; font-family: system-ui, sans-serif; font-size: .78em; font-weight: 600;
  text-transform: uppercase; letter-spacing: .05em; color: #666; margin-bottom: .2em;
  white-space: normal; }}
.section {{ padding: .4em .7em; margin: .4em 0; border-radius: 4px; }}
.section.thinking {{ border: 1px dashed #888; background: #fcfcfc; }}
.section.answer {{ border: 2px solid #555; }}
.section.response {{ border: 1px solid #bbb; }}
.legend .thinking {{ border: 1px dashed #888; }}
.legend .answer {{ border: 2px solid #555; }}
.legend .forced {{ outline: 1px dashed #555; }}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def _anchor(i: int) -> str:
    return f"s{i}"


def _spans_html(spans: list[dict]) -> str:
    """Spans grouped into consecutive sections, each span coloured by role."""
    out: list[str] = []
    current: str | None = None
    for s in spans:
        section = s.get("section", "response")
        if section != current:
            if current is not None:
                out.append("</div>")
            out.append(f'<div class="section {_e(section)}"><span class="label">{_e(section)}'
                       "</span>")
            current = section
        role = s.get("role", "student")
        forced = " forced" if s.get("forced") else ""
        tip = (f"{role}: {s.get('tokens_student', '?')} student tokens, "
               f"{s.get('tokens_own', '?')} own tokens, generated {s.get('generated', '?')}, "
               f"discarded {s.get('discarded', '?')}{', forced' if forced else ''}")
        out.append(f'<span class="span {_e(role)}{forced}" title="{_e(tip)}">'
                   f"{_e(s.get('text', ''))}</span>")
    if current is not None:
        out.append("</div>")
    return "".join(out)


def _sample_html(i: int, r: dict) -> str:
    t = r.get("totals", {})
    tm = r.get("timings", {})
    msgs = r.get("messages", [])
    prompt = msgs[:-1] if msgs and msgs[-1].get("role") == "assistant" else msgs
    spans = r.get("spans") or []
    stats = (f"<b>{_e(r.get('method', '?'))}</b> · spans <b>{_e(t.get('spans', len(spans)))}</b>"
             f" · teacher share <b>{_pct(t.get('teacher_share'))}</b>"
             f" (thinking {_pct(t.get('thinking_teacher_share'))})"
             f" · tokens <b>{_e(t.get('tokens_student', '?'))}</b>"
             f" (teacher {_e(t.get('teacher_tokens_student', '?'))})"
             f" · generated {_e(t.get('generated', '?'))}, discarded {_e(t.get('discarded', '?'))}"
             f" · finish <b>{_e(r.get('finish_reason', '?'))}</b>"
             f" · wall {_num(tm.get('wall_s'))} s")
    parts = [f'<details class="sample" id="{_anchor(i)}" open>',
             f"<summary>{i + 1}. {_e(r.get('id', '?'))}</summary>",
             f'<div class="stats">{stats}</div>']
    for m in prompt:
        parts.append(f'<div class="turn {_e(m.get("role", ""))}"><span class="label">'
                     f'{_e(m.get("role", ""))}</span>{_e(m.get("content", ""))}</div>')
    if spans:
        parts.append(_spans_html(spans))
    elif msgs and msgs[-1].get("role") == "assistant":
        parts.append('<div class="section response"><span class="label">response (no spans)'
                     f'</span>{_e(msgs[-1].get("content", ""))}</div>')
    parts.append("</details>")
    return "\n".join(parts)


def _index_row(i: int, r: dict) -> str:
    return (f'<tr><td><a href="#{_anchor(i)}">{i + 1}. {_e(r.get("id", "?"))}</a></td>'
            f'<td>{_pct(r.get("totals", {}).get("teacher_share"))}</td>'
            f'<td>{_e(r.get("totals", {}).get("tokens_student", "?"))}</td>'
            f'<td>{_e(r.get("finish_reason", "?"))}</td></tr>')


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
        _sample_html(0, r)
        _index_row(0, r)
        _model_rows(r)
        summary = summarize([r])
        _pct(summary["mean_teacher_share"]), _num(summary["mean_tokens_student"]), _num(summary["mean_wall_s"])
    except Exception as exc:  # a hand-edited record: any field may be of any type
        return f"cannot be shown ({type(exc).__name__}: {exc})"
    return None


def read_renderable(path: str | os.PathLike,
                    warn: Callable[[str], None] | None = None) -> Iterator[dict]:
    """The records of a records.jsonl that can be shown, in order; each line that cannot (not
    JSON, not an object, a field of the wrong type) is skipped with ``warn("FILE line N: ...")``."""
    warn = warn or log.warning
    p = Path(path)
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                warn(f"{p} line {n}: skipped, not a JSON record ({exc})")
                continue
            problem = _unrenderable(record)
            if problem:
                warn(f"{p} line {n}: skipped, {problem}")
                continue
            yield record


def render_html(records: Iterable[dict], title: str = "tessy records") -> str:
    """One self-contained HTML page for ``records`` (see the module docstring)."""
    records = list(records)
    s = summarize(records)
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
    rows += _model_rows(records[0]) if records else []
    summary = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    index = "".join(_index_row(i, r) for i, r in enumerate(records))
    legend = ('<p class="legend"><span class="teacher">teacher span</span>'
              '<span class="student">student span</span>'
              '<span class="forced">forced (kept past the cut to end an empty hand-over loop)</span>'
              '<span class="thinking">thinking section</span>'
              '<span class="answer">answer section</span></p>')
    body = "\n".join(_sample_html(i, r) for i, r in enumerate(records))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n{legend}\n"
            f'<table class="summary">{summary}</table>\n'
            f'<details><summary>index ({len(records)} samples)</summary>'
            f'<table class="index"><tr><th>sample</th><th>teacher share</th><th>tokens</th>'
            f"<th>finish</th></tr>{index}</table></details>\n"
            f"{body}\n</body>\n</html>\n")


def write_view(records_path: str | os.PathLike, out_path: str | os.PathLike,
               title: str | None = None, limit: int | None = None,
               warn: Callable[[str], None] | None = None,
               order: Callable[[dict], Any] | None = None) -> Path:
    """Render ``records_path`` (a records.jsonl or a run folder) to ``out_path``; return it.

    ``limit`` keeps only the first N records; ``order`` (a sort key) sorts the ones shown. A line that cannot be shown is skipped with
    ``warn(message naming the line)`` (default: a logged warning). The page is written to a
    temporary file and renamed (`durable.write_atomic`), so a reader never sees half a page.
    """
    src = Path(records_path)
    if src.is_dir():
        src = src / RECORDS_FILE
    recs = []
    for r in read_renderable(src, warn):
        if limit is not None and len(recs) >= limit:
            break
        recs.append(r)
    if order is not None:
        recs.sort(key=order)
    page = render_html(recs, title=title or f"tessy: {src}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    durable.write_atomic(out, page)
    return out
