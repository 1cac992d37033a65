"""Inputs: reading prompts from JSONL, JSON, Parquet, a Hugging Face dataset folder, or the Hub.

Owns what a row means: turning rows into a `PromptItem` or a `Reject`, ids, duplicates, and the
public entry points `read_prompts`, `count_prompts` and `input_options`. Reading the files
themselves (kinds, gzip, BOM, Parquet, datasets, the checks up front) is `tessy.input_sources`,
and Hub names and dataset repository folders are `tessy.hub_inputs`;
`InputError` is defined there and importable from here.

`read_prompts` checks the source up front and then streams it, yielding in input order a
`PromptItem` for each usable row and a `Reject` for each unusable one. The promise:

- a bad ROW is never fatal: it becomes a `Reject` whose reason starts with ``line N:`` (and, in
  a folder of files, names the file) and says what is wrong;
- a bad SOURCE raises at the call, before anything is written: `FileNotFoundError` for a
  missing path (that is not a Hub name), `InputError` (a ValueError whose message starts with the path) for an unknown
  file type, an empty file, a corrupt Parquet file, a folder that is not a dataset, a dataset
  with several splits and no ``split``, a `.json` document that is not valid JSON, or a source
  in which no row has the prompt field (it names the field and the fields found);
- a source that breaks mid-way (a truncated ``.gz``, a disk error) raises `InputError` naming
  the file and the last line read.

Sources (picked by the path):

- ``*.jsonl`` / ``*.ndjson`` (optionally ``.gz``): one JSON object per line;
- ``*.json``: a JSON array of objects (pretty-printed or not), a single object, or JSON Lines;
- ``*.parquet``: streamed by record batches with pyarrow;
- a folder written by ``datasets.save_to_disk`` (a Dataset, or a DatasetDict: its only split,
  or ``train``, or the ``split`` asked for);
- a dataset repository folder (``hf download --local-dir``: a README.md dataset card with
  metadata, or data files only in subfolders), read with ``datasets.load_dataset``; ``DIR:SUBSET``
  picks a config;
- any other folder: its ``*.parquet`` / ``*.jsonl`` files in name order, numbered as one stream;
- a Hub dataset name, ``[ORG/]NAME[:SUBSET]``, where no such path exists: from the local cache
  when offline or the Hub cannot be reached (else `InputError` in one line, within seconds),
  downloaded by ``datasets`` otherwise.

Datasets, repository folders and Hub names take ``split`` (else their only split, or ``train``).

A UTF-8 byte-order mark at the start of a text file is ignored.

A row gives its conversation either as ``messages`` (a list of ``{"role", "content"}`` strings,
roles system/user/assistant, ending with a user turn) or as ``prompt`` (a string: one user turn);
``messages`` wins when both are present. ``system_prompt``, if given, is put first unless the
row already starts with a system turn. The id is the row's id field (a string or an integer,
stringified) or, without one, a stable hash of the messages (sha256 of canonical JSON, first 16
hex). ``line`` is the 1-based line number (JSONL) or row number (other sources).

Rejects: malformed JSON, invalid UTF-8, a non-object row, a missing, null or empty prompt, wrong
types, text that is not valid Unicode (a lone surrogate such as ``"\\udfff"``, which JSON allows),
a conversation longer than ``max_chars`` characters (checked before any tokenizer sees it), a
conversation that does not end with a user turn, and a duplicate id ("first seen on line N").
Blank lines are skipped silently. The token length is checked by the engine, which knows the
tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tessy.hub_inputs import is_hub_name, is_repo_folder, load_hub, load_repo_folder, split_subset
from tessy.input_sources import (InputError, check_columns, check_file, count_rows, folder_files, is_hf_dataset,
                                 load_hf, rows_hf, rows_sources)

__all__ = ["InputError", "PromptItem", "Reject", "count_prompts", "input_options", "messages_id", "read_prompts"]

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_CHARS = 200_000


@dataclass(frozen=True, slots=True)
class PromptItem:
    id: str
    messages: list[dict] = field(repr=False)
    line: int


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    reason: str
    id: str | None = None


def messages_id(messages: list[dict]) -> str:
    """Stable id of a conversation: sha256 of its canonical JSON, first 16 hex digits."""
    canon = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------- rows


def _bad_text(text: str) -> str | None:
    """Why `text` cannot be written as UTF-8 (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"is not valid Unicode text: lone surrogate {text[e.start]!r} at character {e.start + 1}"
    return None


def _parse_row(row: Any, n: int, at: str, prompt_field: str, messages_field: str, id_field: str,
               system_prompt: str | None, max_chars: int) -> PromptItem | Reject:
    if not isinstance(row, dict):
        kind = "null" if row is None else type(row).__name__
        return Reject(n, f"{at}: expected a JSON object, got {kind}")

    rid: str | None = None
    raw_id = row.get(id_field)
    if raw_id is not None:
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            return Reject(n, f"{at}: field {id_field!r} must be a string or an integer, "
                             f"got {type(raw_id).__name__}")
        rid = str(raw_id)
        if not rid.strip():
            return Reject(n, f"{at}: field {id_field!r} is empty")
        if (bad := _bad_text(rid)) is not None:
            return Reject(n, f"{at}: field {id_field!r} {bad}")

    msgs_raw = row.get(messages_field)
    if msgs_raw is not None:
        f = messages_field
        if not isinstance(msgs_raw, list) or not msgs_raw:
            return Reject(n, f"{at}: field {f!r} must be a non-empty list of "
                             "{role, content} objects", rid)
        messages = []
        for i, m in enumerate(msgs_raw):
            if not isinstance(m, dict):
                return Reject(n, f"{at}: field {f!r}[{i}] must be an object with role and "
                                 f"content, got {type(m).__name__}", rid)
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                return Reject(n, f"{at}: field {f!r}[{i}].role must be one of {ROLES}, "
                                 f"got {role!r}", rid)
            if not isinstance(content, str):
                got = "null" if content is None else type(content).__name__
                return Reject(n, f"{at}: field {f!r}[{i}].content must be a string, got {got}", rid)
            if (bad := _bad_text(content)) is not None:
                return Reject(n, f"{at}: field {f!r}[{i}].content {bad}", rid)
            messages.append({"role": role, "content": content})
        if messages[-1]["role"] != "user":
            return Reject(n, f"{at}: field {f!r} ends with a turn by {messages[-1]['role']!r}; "
                             "the last turn must be from the user", rid)
        if not messages[-1]["content"].strip():
            return Reject(n, f"{at}: field {f!r}: the last user turn is empty", rid)
    elif prompt_field in row:
        prompt = row[prompt_field]
        if prompt is None:
            also = f" (and {messages_field!r} is null)" if messages_field in row else ""
            return Reject(n, f"{at}: field {prompt_field!r} is null{also}", rid)
        if not isinstance(prompt, str):
            return Reject(n, f"{at}: field {prompt_field!r} must be a string, "
                             f"got {type(prompt).__name__}", rid)
        if not prompt.strip():
            return Reject(n, f"{at}: field {prompt_field!r} is empty", rid)
        if (bad := _bad_text(prompt)) is not None:
            return Reject(n, f"{at}: field {prompt_field!r} {bad}", rid)
        messages = [{"role": "user", "content": prompt}]
    else:
        shown = ", ".join(sorted(map(str, row))[:10]) or "none"
        return Reject(n, f"{at}: missing field {prompt_field!r} (or {messages_field!r}); "
                         f"the row has: {shown}", rid)

    if system_prompt is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    chars = sum(len(m["content"]) for m in messages)
    if chars > max_chars:
        return Reject(n, f"{at}: prompt is {chars:,} characters, more than max_prompt_chars "
                         f"({max_chars:,})", rid)
    return PromptItem(rid if rid is not None else messages_id(messages), messages, n)


def read_prompts(path: str | os.PathLike, prompt_field: str = "prompt",
                 messages_field: str = "messages", id_field: str = "id",
                 system_prompt: str | None = None, split: str | None = None,
                 max_chars: int = DEFAULT_MAX_CHARS) -> Iterator[PromptItem | Reject]:
    """Check ``path`` now, then yield a PromptItem or a Reject for every non-blank row, in order.

    Raises FileNotFoundError for a missing path and InputError for a source that cannot be used
    (see the module docstring); both before the first row is yielded.
    """
    p = Path(path)
    # Fail here, at the call, not at the first next() in the middle of a run.
    ds = _dataset(path, split)
    if ds is not None:
        check_columns(path, ds, prompt_field, messages_field)
        rows = ((n, obj, err, f"line {n}") for n, obj, err in rows_hf(ds))
    else:
        if split:
            raise InputError(f"{p}: --split {split!r} applies only to a dataset folder (saved with "
                             "datasets.save_to_disk, or a dataset repository) or a Hub dataset name")
        if p.is_dir():
            files = folder_files(p)
            sources = [check_file(f, prompt_field, messages_field) for f in files]
        else:
            sources = [check_file(p, prompt_field, messages_field)]
        rows = rows_sources(sources, in_folder=p.is_dir())
    return _items(rows, prompt_field, messages_field, id_field, system_prompt, max_chars)


def _items(rows, prompt_field: str, messages_field: str, id_field: str,
           system_prompt: str | None, max_chars: int) -> Iterator[PromptItem | Reject]:
    seen: dict[str, int] = {}
    for n, row, err, at in rows:
        if err is not None:
            yield Reject(n, f"{at}: {err}")
            continue
        item = _parse_row(row, n, at, prompt_field, messages_field, id_field, system_prompt, max_chars)
        if isinstance(item, PromptItem):
            if item.id in seen:
                yield Reject(n, f"{at}: duplicate id {item.id!r} (field {id_field!r}), "
                                f"first seen on line {seen[item.id]}", item.id)
                continue
            seen[item.id] = n
        yield item


def count_prompts(path: str | os.PathLike, split: str | None = None) -> int:
    """Number of rows (non-blank lines) in ``path``, for progress totals; rejects included.

    Reads a text file through to its end, so a truncated `.gz` is found here (InputError)."""
    ds = _dataset(path, split)
    return len(ds) if ds is not None else count_rows(Path(path), split)


def _dataset(path: str | os.PathLike, split: str | None):
    """The `datasets.Dataset` that `path` names (a save_to_disk folder, a dataset repository
    folder, a Hub name), or None for files and plain folders; FileNotFoundError when it is none."""
    p, text = Path(path), os.fspath(path)
    if is_hf_dataset(p):
        return load_hf(p, split)
    if is_repo_folder(p) or (not p.exists() and is_repo_folder(Path(split_subset(text)[0]))):
        return load_repo_folder(text, split)
    if p.exists():
        return None
    if is_hub_name(text):
        return load_hub(text, split)
    raise FileNotFoundError(f"prompt file not found: {p}")


def input_options(config: Any) -> dict[str, Any]:
    """`read_prompts` keyword arguments from a `SynthesizeConfig` (so callers pass them all)."""
    return {"prompt_field": config.prompt_field, "messages_field": config.messages_field,
            "id_field": config.id_field, "system_prompt": config.system_prompt or None,
            "split": getattr(config, "split", "") or None,
            "max_chars": getattr(config, "max_prompt_chars", DEFAULT_MAX_CHARS)}
