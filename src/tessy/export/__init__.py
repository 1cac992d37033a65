"""`tessy export`: records of one or more runs -> SFT data a trainer reads, with a dataset card.

`export_runs(runs, output, to=...)` reads every run (`tessy.export.runs`), keeps the records the
`Filters` allow (`tessy.export.select`; by default only complete responses, ``finish_reason ==
"stop"``; optionally only rows that survive the student's chat template and fit in
``max_tokens`` student tokens), lays each out the way the student's trainer reads its thinking
(`tessy.export.layouts`: the raw text, a ``reasoning_content`` / ``thinking`` field, or
prompt-completion; chosen per student format by default), splits them into train and validation
by a hash of the id, writes them in the chosen format (`FORMATS`: one peer module per format), a
dataset card ``README.md`` (`tessy.export.card`, with ``license`` and ``language``),
``export.json`` (every number the card states) and, with ``trainer_configs=True``, the configs of
TRL's recipe, LLaMA-Factory and XTuner with lengths from the data (`tessy.export.trainers`), and
returns that summary with the ``notes`` the command prints (why the template check dropped rows,
what the card asks to fill in, which trainer got no config and why).

Promises: the output is deterministic (rows sorted by id within each split; the same records and
options give the same files); the export is written into a temporary sibling folder, fsynced and
renamed into place only when complete (`tessy.durable.new_folder`), so a crash or a bad record
never leaves a half-written export; an existing output folder is replaced only with
``overwrite=True``; records are only read.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from tessy import durable
from tessy.export.select import Filters, split_of

FORMATS = {
    "messages": "tessy.export.messages_jsonl:MessagesJsonl",
    "parquet": "tessy.export.parquet:Parquet",
    "hf": "tessy.export.hf_datasets:HfDatasets",
    "sharegpt": "tessy.export.sharegpt:ShareGpt",
}
ALIASES = {"jsonl": "messages", "trl": "messages", "datasets": "hf", "llama-factory": "sharegpt",
           "llamafactory": "sharegpt"}

__all__ = ["FORMATS", "Filters", "export_runs", "get_format"]


def get_format(name: str, **options: Any):
    key = ALIASES.get(name, name)
    if key not in FORMATS:
        raise ValueError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}")
    module_name, _, class_name = FORMATS[key].partition(":")
    return getattr(importlib.import_module(module_name), class_name)(**options)


def export_runs(runs: list[str | Path], output: str | Path, to: str = "messages", filters: Filters | None = None,
                validation_fraction: float = 0.05, split_seed: int = 0, dataset_name: str = "tessy",
                spans: bool = True, tokenizer: Any = None, overwrite: bool = False, *,
                check_template: bool | None = None, tokenizer_spec: str | None = None, layout: str = "auto",
                reasoning_field: str = "auto", license: str | None = None,
                language: tuple[str, ...] | None = None, trainer_configs: bool = False) -> dict[str, Any]:
    """Export; see the module docstring.

    `layout` and `reasoning_field` say how rows carry the thinking (`tessy.export.layouts`; "auto":
    the student format's default). `tokenizer` is the student's; without one, it is loaded from
    `tokenizer_spec` (else the student model the records name) when the export needs it: to check
    the chat template, to count ``filters.max_tokens``, or to render prompt-completion prompts (where
    a tokenizer that does not load leaves the format's own layout, said in ``notes``).
    `check_template` (default: whether a tokenizer was given) drops rows that do not survive its
    chat template (reason ``chat_template``, the problems counted in ``template_problems``).
    `license` and `language` override what the card would state (`tessy.export.licenses`).
    `trainer_configs` also writes the trainers' configs (`tessy.export.trainers`; it needs the
    student's tokenizer, to count the longest row; ``trainer_configs`` in the result says what was
    written and what was not, and why). ``notes`` in the result are the lines the command prints
    besides its summary."""
    from tessy.export.card import render, summary
    from tessy.export.layouts import Layout, choose, student_format_of
    from tessy.export.licenses import card_language, card_license
    from tessy.export.runs import load_run
    from tessy.export.select import select
    from tessy.export.template import TemplateCheck, rendered_length

    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation fraction {validation_fraction} must be in [0, 1)")
    if not runs:
        raise ValueError("no runs to export")
    filters = filters or Filters()
    output = Path(output)
    if output.exists() and not overwrite:
        raise ValueError(f"{output} exists; pass --overwrite to replace it")
    check_template = tokenizer is not None if check_template is None else check_template

    loaded = [load_run(r) for r in runs]
    records = [record for run in loaded for record in run.records]
    raw_text = (layout, reasoning_field) == ("messages", "content") or ALIASES.get(to, to) == "sharegpt"
    student_format = student_format_of(records, raw_text=raw_text)
    kind, field = choose(student_format, layout, reasoning_field, ALIASES.get(to, to))
    fmt = get_format(to, dataset_name=dataset_name, spans=spans, layout=kind, reasoning_field=field)
    notes: list[str] = []
    counts = filters.max_tokens is not None or trainer_configs
    if tokenizer is None and (check_template or counts or kind == "prompt-completion"):
        tokenizer = _student_tokenizer(records, tokenizer_spec, kind, check_template or counts, notes)
    chat = _chat_format(student_format, tokenizer, kind, field)
    lay = Layout(kind, field, chat, tokenizer)
    check = TemplateCheck(tokenizer, lay) if check_template else None
    measure = None
    if tokenizer is not None:
        counted_as = chat or _chat_format("plain", tokenizer, kind, field)

        def measure(fields, record):
            return rendered_length(tokenizer, fields, counted_as, record["messages"][-1]["content"])

    kept, dropped = select(loaded, filters, check, lay, measure)
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    for row, _ in kept:
        splits[split_of(row["id"], validation_fraction, split_seed)].append(row)
    splits = {name: sorted(rows, key=lambda r: r["id"]) for name, rows in splits.items() if rows}
    if check is not None and check.summary():
        notes.insert(0, check.summary())

    with durable.new_folder(output, unique=True) as staging:
        files = fmt.write(splits, staging)
        trainers = None
        if trainer_configs:
            from tessy.export import trainers as trainer_files

            longest = max((max(measure({k: row[k] for k in ("messages", "prompt", "completion") if k in row}, record),
                               trainer_files.raw_length(tokenizer, counted_as, record)) for row, record in kept),
                          default=0)
            trainers = trainer_files.write(staging, data_dir=output.resolve(), fmt=fmt.name, layout=lay.describe(),
                                           files=files, dataset_name=dataset_name, longest=longest,
                                           student_model=_student_model(records, tokenizer_spec))
            notes.extend(trainers.pop("notes"))  # its files are listed apart: the card's splits are the data files
        stats = summary(kept, dropped, splits, loaded)
        models = [info.get("model") for infos in stats["models"].values() for info in infos]
        card_license_value, unknown = card_license(models, license)
        texts = (m["content"] for _, record in kept for m in record["messages"])
        card_language_value, language_unknown = card_language(texts, language)
        if unknown:
            notes.append(f"the dataset card's license is a placeholder: tessy does not know the license of "
                         f"{', '.join(unknown)}; set `license:` in {output / 'README.md'} (or pass --license)")
        if language_unknown:
            notes.append(f"the dataset card's language is a placeholder: set `language:` in "
                         f"{output / 'README.md'} (or pass --language)")
        options = {"format": fmt.name, "validation_fraction": validation_fraction, "split_seed": split_seed,
                   "spans": spans, "chat_template_checked": check is not None, **lay.describe(),
                   "prompt_rendered_with": _prompt_renderer(lay) if kind == "prompt-completion" else None,
                   "license": card_license_value, "license_given": bool(license), "license_unknown": unknown,
                   "language": card_language_value}
        card = render(stats, fmt, filters.describe(), files, str(output), options)
        (staging / "README.md").write_text(card, encoding="utf-8")
        result = {**stats, "format": fmt.name, "files": files, "filters": filters.describe(), "options": options,
                  "template_problems": check.counts() if check is not None else None,
                  **({"trainer_configs": trainers} if trainers is not None else {})}
        (staging / "export.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {**result, "output": str(output), "notes": notes}


def _student_model(records: list[dict], spec: str | None) -> str | None:
    """The student model the records name (else the tokenizer the user named)."""
    return next((r["models"]["student"]["model"] for r in records
                 if ((r.get("models") or {}).get("student") or {}).get("model")), spec)


def _student_tokenizer(records: list[dict], spec: str | None, kind: str, required: bool, notes: list[str]):
    """The student's tokenizer, loaded from `spec` or the student model the records name."""
    from tessy.models import load_tokenizer

    spec = spec or next((r["models"]["student"].get("model") for r in records
                         if ((r.get("models") or {}).get("student") or {}).get("model")), None)
    if not spec:
        if required:
            raise ValueError("the records name no student model; name its tokenizer with --tokenizer")
        notes.append("prompt-completion prompts are written in tessy's own layout of the student's chat format: the "
                     "records name no student model (name its tokenizer with --tokenizer)")
        return None
    try:
        if required:
            return load_tokenizer(spec)
        # Only to render prompts: what is here already (a hub name not cached is not fetched, so an
        # offline export does not wait on retries); the family's own layout otherwise.
        from transformers import AutoTokenizer

        from tessy.models import resolve_model

        return AutoTokenizer.from_pretrained(resolve_model(spec), local_files_only=True)
    except Exception as exc:  # not cached and no network, not a tokenizer, ...
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if required:
            raise ValueError(f"could not load the student's tokenizer {spec!r} ({reason}); name one with "
                             "--tokenizer") from exc
        notes.append(f"prompt-completion prompts are written in tessy's own layout of the student's chat format: "
                     f"the tokenizer {spec!r} is not here ({reason}); name one with --tokenizer")
        return None


def _chat_format(name: str | None, tokenizer: Any, kind: str, field: str):
    """The student's chat format (None when the records do not say and the layout does not need it)."""
    from tessy.formats import get_format as get_chat_format

    if name is None:
        if kind == "messages" and field == "content":
            return None
        raise ValueError("the records do not name the student's chat format, which the layout needs: use "
                         "--layout messages --reasoning-field content")
    return get_chat_format(name, tokenizer)


def _prompt_renderer(layout) -> str:
    template = getattr(layout.tokenizer, "chat_template", None)
    if template:
        return "the student tokenizer's chat template"
    return f"tessy's own {layout.fmt.name} layout"
