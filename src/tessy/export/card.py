"""The dataset card (``README.md``, Hugging Face dataset-card format) written with every export.

A YAML header (``license`` and ``language``, from `tessy.export.licenses` or the user; task
category, tags, size category, and ``configs`` where the format has plain data files) and a
Markdown body that says where the data came from and what was kept:
the teacher and student (model, chat format, boundary predictor and the other model settings the
records name), the tessy versions and config fingerprints, the filters, counts kept per split and
dropped by reason, the teacher-token share and response lengths of what was kept, how to load it,
and what every column and per-span provenance field means. Everything is computed from the
exported rows and the records, never from side statistics. A license or language tessy could not
tell is a placeholder that says to fill it in, and the body says which models' terms apply.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Any

TEXT_COLUMNS = {
    "content": {"messages": "the prompt turns, then the assistant response exactly as the student's chat format "
                            "writes it (thinking included)"},
    "reasoning_content": {"messages": "the prompt turns, then the assistant response: its thinking in "
                                      "`reasoning_content`, the final answer alone in `content`"},
    "thinking": {"messages": "the prompt turns, then the assistant response: its thinking in `thinking` (the "
                             "analysis channel), the final answer alone in `content`"},
    "prompt-completion": {
        "prompt": "the prompt turns rendered through the student's chat template with the generation prompt (the "
                  "text the student continued, thinking opener included; no BOS when the tokenizer adds one)",
        "completion": "the student-format response after the prompt (thinking and answer), ending with the "
                      "end-of-turn token"},
}
COLUMNS = {
    "id": "the prompt's id in the input file (the split is chosen by a hash of it)",
    "method": "how the response was made: tessy (teacher and student together), teacher-only, student-only, ...",
    "finish_reason": "stop (the response is complete); other reasons are dropped unless asked for",
    "teacher_share": "share of the response's tokens written by the teacher, counted in student tokens",
    "tokens_student": "response length in the student's tokenizer",
    "verification": "the verifier's verdict (pass, fail, error) or null when the run was not verified",
    "spans": "per-span provenance, in order; the span texts concatenate to the response",
}
SPAN_FIELDS = {
    "role": "which model wrote the span: teacher or student",
    "section": "thinking, answer, or response (families without a thinking section)",
    "text": "the span's text as it appears in the response",
    "tokens_student": "its length in the student's tokenizer",
    "tokens_own": "its length in the tokenizer of the model that wrote it",
    "generated": "tokens that model generated for this span, including the ones thrown away",
    "discarded": "tokens generated and thrown away at the boundary cut (generate, then roll back)",
    "forced": "true when the span was kept past the predictor's cut to end a loop of empty hand-overs",
}


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"mean": statistics.fmean(values), "median": statistics.median(values),
            "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], "min": ordered[0], "max": ordered[-1]}


def summary(kept: list[tuple[dict, dict]], dropped: Counter, splits: dict[str, list[dict]], runs: list) -> dict:
    """The numbers the card states (also written to ``export.json``)."""
    rows = [row for row, _ in kept]
    records = [record for _, record in kept]
    tokens = sum(r["tokens_student"] for r in rows)
    teacher = sum((rec.get("totals") or {}).get("teacher_tokens_student", 0) for rec in records)
    models: dict[str, list[dict]] = {}
    for record in records or [r for run in runs for r in run.records]:
        for role, info in (record.get("models") or {}).items():
            if info not in models.setdefault(role, []):
                models[role].append(info)
    return {
        "kept": len(rows),
        "splits": {split: len(split_rows) for split, split_rows in splits.items()},
        "dropped": dict(sorted(dropped.items())),
        "records_read": len(rows) + sum(dropped.values()),
        "runs": [{"folder": str(run.folder), "records": len(run.records),
                  "fingerprint": run.info.get("fingerprint")} for run in runs],
        "methods": dict(Counter(r["method"] for r in rows).most_common()),
        "verification": dict(Counter(r["verification"] or "not verified" for r in rows).most_common()),
        "teacher_share": {"overall": teacher / tokens if tokens else None,
                          "per_response": _stats([r["teacher_share"] for r in rows])},
        "tokens_student": _stats([r["tokens_student"] for r in rows]),
        "characters": _stats([len(rec["messages"][-1]["content"]) for rec in records]),
        "models": models,
        "config_fingerprints": sorted({str(rec.get("config_fingerprint")) for rec in records}),
        "tessy_versions": sorted({str(rec.get("tessy_version")) for rec in records}),
    }


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def render(stats: dict, fmt, filters: dict, files: list[str], folder_hint: str, options: dict) -> str:
    import yaml

    header: dict[str, Any] = {
        "license": options["license"],
        "language": options["language"],
        "pretty_name": f"{fmt.dataset_name} (tessy SFT data)",
        "task_categories": ["text-generation"],
        "tags": ["tessy", "synthetic", "sft", "reasoning"],
        "size_categories": [_size_category(stats["kept"])],
    }
    configs = fmt.card_configs(files)
    if configs:
        header["configs"] = configs
    out = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", ""]
    out += [f"# {fmt.dataset_name}", "",
            "Supervised fine-tuning data made with tessy "
            "(teacher-student cooperative data synthesis, the TESSY method): a teacher and the student "
            "write each response together, cut into spans by boundary predictors, and every span says "
            "which model wrote it.", "",
            f"Format: **{fmt.name}**, {fmt.description}. Files: {', '.join(f'`{f}`' for f in files)}. "
            f"Layout: {_layout_text(fmt)}.", ""]

    out += ["## Models", "", "| role | model | chat format | predictor | other settings |", "|---|---|---|---|---|"]
    for role, infos in sorted(stats["models"].items()):
        for info in infos:
            other = {k: v for k, v in info.items() if k not in ("model", "format", "predictor")}
            out.append(f"| {role} | `{info.get('model')}` | {info.get('format')} | {info.get('predictor')} | "
                       f"{json.dumps(other, sort_keys=True) if other else ''} |")
    out += ["", f"tessy version(s): {', '.join(stats['tessy_versions']) or 'n/a'}; config fingerprint(s): "
            f"{', '.join(f'`{f}`' for f in stats['config_fingerprints']) or 'n/a'}.", ""]
    out += ["License: " + _license_text(options), ""]
    out += ["Source runs:", ""] + [f"- `{r['folder']}`: {r['records']} records (run fingerprint `{r['fingerprint']}`)"
                                   for r in stats["runs"]] + [""]

    out += ["## What was kept", "", f"Filters: `{json.dumps(filters, sort_keys=True)}`. "
            f"Split: validation when a hash of the id falls below {options['validation_fraction']} "
            f"(seed {options['split_seed']}); deterministic.", "",
            "| | records |", "|---|---|", f"| read | {stats['records_read']} |"]
    out += [f"| kept: {split} | {n} |" for split, n in stats["splits"].items()]
    out += [f"| dropped: {reason} | {n} |" for reason, n in stats["dropped"].items()]
    out += ["", "Kept by method: " + ", ".join(f"{m} {n}" for m, n in stats["methods"].items()) + ". "
            "By verification: " + ", ".join(f"{m} {n}" for m, n in stats["verification"].items()) + ".", ""]

    share, lengths, chars = stats["teacher_share"], stats["tokens_student"], stats["characters"]
    out += ["## Teacher share and lengths", "",
            f"Teacher-token share over all kept tokens: {_fmt(share['overall'])}.", "",
            "| per response | mean | median | p90 | min | max |", "|---|---|---|---|---|---|"]
    for label, st, digits in (("teacher share", share["per_response"], 3),
                              ("tokens (student tokenizer)", lengths, 1), ("characters", chars, 1)):
        if st:
            out.append(f"| {label} | " + " | ".join(_fmt(float(st[k]), digits) for k in ("mean", "median", "p90", "min", "max")) + " |")
    out += ["", "## How to load", "", "```python" if fmt.name != "sharegpt" else "```yaml",
            fmt.load_snippet(folder_hint), "```", ""]

    layout = "prompt-completion" if fmt.layout == "prompt-completion" else fmt.reasoning_field
    columns = {"id": COLUMNS["id"], **TEXT_COLUMNS[layout], **{k: v for k, v in COLUMNS.items() if k != "id"}}
    out += ["## Columns", ""] + [f"- `{k}`: {v}" for k, v in columns.items() if k != "spans" or fmt.spans]
    if fmt.spans:
        out += ["", "Per-span provenance (`spans[*]`):", ""] + [f"- `{k}`: {v}" for k, v in SPAN_FIELDS.items()]
    out.append("")
    return "\n".join(out)


def _license_text(options: dict) -> str:
    unknown = options.get("license_unknown") or []
    if unknown:
        return (f"**to fill in** (`license:` above): the terms of every model that wrote the data apply, and tessy "
                f"does not know those of {', '.join(f'`{m}`' for m in unknown)}.")
    value = options["license"]
    value = ", ".join(f"`{v}`" for v in value) if isinstance(value, list) else f"`{value}`"
    if options.get("license_given"):
        return f"{value}, as given to the export."
    return f"{value}, from the models that wrote the data (their terms apply to it)."


def _layout_text(fmt) -> str:
    if fmt.layout == "prompt-completion":
        return ("prompt-completion (the prompt rendered through the student's chat template, the completion the "
                "student-format text a trainer learns)")
    if fmt.reasoning_field == "content":
        return "messages, the thinking in the assistant turn's text as the student's format writes it"
    return f"messages, the thinking in the assistant turn's `{fmt.reasoning_field}` field, the answer in `content`"
