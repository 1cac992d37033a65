"""`tessy export`: records of one or more runs -> SFT data a trainer reads, with a dataset card.

`export_runs(runs, output, to=...)` reads every run (`tessy.export.runs`), keeps the records the
`Filters` allow (`tessy.export.select`; by default only complete responses, ``finish_reason ==
"stop"``), splits them into train and validation by a hash of the id, writes them in the chosen
format (`FORMATS`: one peer module per format), a dataset card ``README.md`` (`tessy.export.card`)
and ``export.json`` (every number the card states), and returns that summary.

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
                spans: bool = True, tokenizer: Any = None, overwrite: bool = False) -> dict[str, Any]:
    """Export; see the module docstring. `tokenizer`, when given, drops conversations that do not
    round-trip through its chat template (reason ``chat_template``)."""
    from tessy.export.card import render, summary
    from tessy.export.runs import load_run
    from tessy.export.select import select
    from tessy.export.template import checker

    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation fraction {validation_fraction} must be in [0, 1)")
    if not runs:
        raise ValueError("no runs to export")
    filters = filters or Filters()
    fmt = get_format(to, dataset_name=dataset_name, spans=spans)
    output = Path(output)
    if output.exists() and not overwrite:
        raise ValueError(f"{output} exists; pass --overwrite to replace it")

    loaded = [load_run(r) for r in runs]
    kept, dropped = select(loaded, filters, checker(tokenizer) if tokenizer is not None else None)
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    for row, _ in kept:
        splits[split_of(row["id"], validation_fraction, split_seed)].append(row)
    splits = {name: sorted(rows, key=lambda r: r["id"]) for name, rows in splits.items() if rows}

    with durable.new_folder(output, unique=True) as staging:
        files = fmt.write(splits, staging)
        stats = summary(kept, dropped, splits, loaded)
        options = {"format": fmt.name, "validation_fraction": validation_fraction, "split_seed": split_seed,
                   "spans": spans, "chat_template_checked": tokenizer is not None}
        card = render(stats, fmt, filters.describe(), files, str(output), options)
        (staging / "README.md").write_text(card, encoding="utf-8")
        result = {**stats, "format": fmt.name, "files": files, "filters": filters.describe(), "options": options}
        (staging / "export.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {**result, "output": str(output)}
