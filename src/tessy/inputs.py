"""Inputs: reading prompts from JSONL, Parquet, or a Hugging Face dataset folder.

`read_prompts` streams a prompt file and yields, in input order, a `PromptItem` for each usable
row and a `Reject` for each unusable one; it never raises for a bad row, only for a path it
cannot read at all (missing, or of an unknown type).

Sources (picked by the path):

- ``*.jsonl`` / ``*.ndjson`` (optionally ``.gz``): one JSON object per line; ``*.json`` holding
  an array of objects is read too;
- ``*.parquet``: streamed by record batches with pyarrow;
- a folder written by ``datasets.save_to_disk`` (a Dataset, or a DatasetDict: its only split,
  or ``train``, or the ``split`` asked for);
- any other folder: its ``*.parquet`` / ``*.jsonl`` files in name order, numbered as one stream.

A row gives its conversation either as ``messages`` (a list of ``{"role", "content"}`` strings,
roles system/user/assistant, ending with a user turn) or as ``prompt`` (a string: one user turn);
``messages`` wins when both are present. ``system_prompt``, if given, is put first unless the
row already starts with a system turn. The id is the row's id field (a string or an integer,
stringified) or, without one, a stable hash of the messages (sha256 of canonical JSON, first 16
hex). ``line`` is the 1-based line number (JSONL) or row number (other sources).

Rejects (the reason names the line and the field): malformed JSON, a non-object row, a missing or
empty prompt, wrong types, a conversation that does not end with a user turn, and a duplicate id
("first seen on line N"). Blank JSONL lines are skipped silently. Prompt length is not checked
here: the engine knows the tokenizer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROLES = ("system", "user", "assistant")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json")
PARQUET_SUFFIXES = (".parquet",)
_BATCH = 1024


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


# ---------------------------------------------------------------------------- sources


def _suffix(p: Path) -> str:
    name = p.name.lower()
    for s in JSONL_SUFFIXES + PARQUET_SUFFIXES:
        if name.endswith(s):
            return s
    return p.suffix.lower()


def _is_hf_dataset(p: Path) -> bool:
    return p.is_dir() and any((p / n).exists() for n in
                              ("dataset_info.json", "state.json", "dataset_dict.json"))


def _folder_files(p: Path) -> list[Path]:
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                   and _suffix(f) in JSONL_SUFFIXES + PARQUET_SUFFIXES)
    if not files:
        raise ValueError(f"cannot read prompts from folder {p}: it is not a dataset saved with "
                         "datasets.save_to_disk and holds no .jsonl or .parquet files")
    return files


def _unknown(p: Path) -> ValueError:
    return ValueError(f"cannot read prompts from {p}: unknown file type {_suffix(p)!r}; expected "
                      ".jsonl (or .ndjson, .json, .jsonl.gz), .parquet, or a folder (a dataset "
                      "saved with datasets.save_to_disk, or .jsonl/.parquet files)")


def _open_text(p: Path):
    return gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")


def _starts_with_array(p: Path) -> bool:
    with _open_text(p) as f:
        head = f.read(4096).lstrip()
    return head.startswith(b"[")


def _rows_jsonl(p: Path, where: str, first: int) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line number, parsed object or None, error) for each non-blank line."""
    if p.name.lower().endswith(".json") and _starts_with_array(p):
        try:
            data = json.loads(p.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        for i, obj in enumerate(data):
            yield first + i, obj, None
        return
    with _open_text(p) as f:
        for i, raw in enumerate(f):
            n = first + i
            if not raw.strip():
                continue
            try:
                yield n, json.loads(raw.decode("utf-8")), None
            except UnicodeDecodeError:
                yield n, None, f"{where}line {n}: not valid UTF-8"
            except json.JSONDecodeError as e:
                yield n, None, f"{where}line {n}: malformed JSON ({e.msg} at column {e.colno})"


def _rows_parquet(p: Path, first: int) -> Iterator[tuple[int, Any, str | None]]:
    import pyarrow.parquet as pq

    n = first
    with pq.ParquetFile(p) as pf:
        for batch in pf.iter_batches(batch_size=_BATCH):
            for row in batch.to_pylist():
                yield n, row, None
                n += 1


def _load_hf(p: Path, split: str | None):
    import datasets

    ds = datasets.load_from_disk(str(p))
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if split is None:
            if len(names) == 1:
                split = names[0]
            elif "train" in names:
                split = "train"
            else:
                raise ValueError(f"{p} holds splits {names}; say which one to read (split=...)")
        if split not in ds:
            raise ValueError(f"{p} has no split {split!r}; it holds {names}")
        ds = ds[split]
    return ds


def _rows_hf(p: Path, split: str | None) -> Iterator[tuple[int, Any, str | None]]:
    ds = _load_hf(p, split)
    n = 1
    for batch in ds.iter(batch_size=_BATCH):
        cols = list(batch.keys())
        for j in range(len(batch[cols[0]]) if cols else 0):
            yield n, {c: batch[c][j] for c in cols}, None
            n += 1


def _rows(path: Path, split: str | None) -> Iterator[tuple[int, Any, str | None]]:
    if not path.exists():
        raise FileNotFoundError(f"prompt file not found: {path}")
    if _is_hf_dataset(path):
        yield from _rows_hf(path, split)
        return
    if path.is_dir():
        first = 1
        for f in _folder_files(path):
            last = first - 1
            for n, obj, err in _rows_file(f, first, where=f"{f.name} "):
                last = n
                yield n, obj, err
            first = last + 1
        return
    yield from _rows_file(path, 1, where="")


def _rows_file(p: Path, first: int, where: str) -> Iterator[tuple[int, Any, str | None]]:
    s = _suffix(p)
    if s in JSONL_SUFFIXES:
        return _rows_jsonl(p, where, first)
    if s in PARQUET_SUFFIXES:
        return _rows_parquet(p, first)
    raise _unknown(p)


# ---------------------------------------------------------------------------- rows


def _parse_row(row: Any, n: int, prompt_field: str, messages_field: str, id_field: str,
               system_prompt: str | None) -> PromptItem | Reject:
    at = f"line {n}"
    if not isinstance(row, dict):
        return Reject(n, f"{at}: expected a JSON object, got {type(row).__name__}")

    rid: str | None = None
    raw_id = row.get(id_field)
    if raw_id is not None:
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            return Reject(n, f"{at}: field {id_field!r} must be a string or an integer, "
                             f"got {type(raw_id).__name__}")
        rid = str(raw_id)
        if not rid.strip():
            return Reject(n, f"{at}: field {id_field!r} is empty")

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
                return Reject(n, f"{at}: field {f!r}[{i}].content must be a string, "
                                 f"got {type(content).__name__}", rid)
            messages.append({"role": role, "content": content})
        if messages[-1]["role"] != "user":
            return Reject(n, f"{at}: field {f!r} ends with a turn by {messages[-1]['role']!r}; "
                             "the last turn must be from the user", rid)
        if not messages[-1]["content"].strip():
            return Reject(n, f"{at}: field {f!r}: the last user turn is empty", rid)
    elif prompt_field in row and row[prompt_field] is not None:
        prompt = row[prompt_field]
        if not isinstance(prompt, str):
            return Reject(n, f"{at}: field {prompt_field!r} must be a string, "
                             f"got {type(prompt).__name__}", rid)
        if not prompt.strip():
            return Reject(n, f"{at}: field {prompt_field!r} is empty", rid)
        messages = [{"role": "user", "content": prompt}]
    else:
        return Reject(n, f"{at}: missing field {prompt_field!r} (or {messages_field!r})", rid)

    if system_prompt is not None and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return PromptItem(rid if rid is not None else messages_id(messages), messages, n)


def read_prompts(path: str | os.PathLike, prompt_field: str = "prompt",
                 messages_field: str = "messages", id_field: str = "id",
                 system_prompt: str | None = None, split: str | None = None,
                 ) -> Iterator[PromptItem | Reject]:
    """Yield a PromptItem or a Reject for every non-blank row of ``path``, in order.

    Raises FileNotFoundError for a missing path and ValueError for an unknown file type.
    """
    p = Path(path)
    # Fail here, at the call, not at the first next() in the middle of a run.
    if not p.exists():
        raise FileNotFoundError(f"prompt file not found: {p}")
    if p.is_file() and _suffix(p) not in JSONL_SUFFIXES + PARQUET_SUFFIXES:
        raise _unknown(p)
    if p.is_dir() and not _is_hf_dataset(p):
        _folder_files(p)
    return _items(p, prompt_field, messages_field, id_field, system_prompt, split)


def _items(p: Path, prompt_field: str, messages_field: str, id_field: str,
           system_prompt: str | None, split: str | None) -> Iterator[PromptItem | Reject]:
    seen: dict[str, int] = {}
    for n, row, err in _rows(p, split):
        if err is not None:
            yield Reject(n, err)
            continue
        item = _parse_row(row, n, prompt_field, messages_field, id_field, system_prompt)
        if isinstance(item, PromptItem):
            if item.id in seen:
                yield Reject(n, f"line {n}: duplicate id {item.id!r} (field {id_field!r}), "
                                f"first seen on line {seen[item.id]}", item.id)
                continue
            seen[item.id] = n
        yield item


def count_prompts(path: str | os.PathLike, split: str | None = None) -> int:
    """Number of rows (non-blank lines) in ``path``, for progress totals; rejects included."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"prompt file not found: {p}")
    if _is_hf_dataset(p):
        return len(_load_hf(p, split))
    if p.is_dir():
        return sum(count_prompts(f) for f in _folder_files(p))
    s = _suffix(p)
    if s in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        return pq.ParquetFile(p).metadata.num_rows
    if s in JSONL_SUFFIXES:
        if p.name.lower().endswith(".json") and _starts_with_array(p):
            return len(json.loads(p.read_bytes().decode("utf-8")))
        with _open_text(p) as f:
            return sum(1 for raw in f if raw.strip())
    raise _unknown(p)
