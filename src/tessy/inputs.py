"""Inputs: reading prompts from JSONL, JSON, Parquet, or a Hugging Face dataset folder.

`read_prompts` checks the source up front and then streams it, yielding in input order a
`PromptItem` for each usable row and a `Reject` for each unusable one. The promise:

- a bad ROW is never fatal: it becomes a `Reject` whose reason starts with ``line N:`` (and, in
  a folder of files, names the file) and says what is wrong;
- a bad SOURCE raises at the call, before anything is written: `FileNotFoundError` for a
  missing path, `InputError` (a ValueError whose message starts with the path) for an unknown
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
- any other folder: its ``*.parquet`` / ``*.jsonl`` files in name order, numbered as one stream.

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

import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROLES = ("system", "user", "assistant")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json")
PARQUET_SUFFIXES = (".parquet",)
DEFAULT_MAX_CHARS = 200_000
_BATCH = 1024
_PEEK_ROWS = 100  # rows looked at up front for the prompt field of a JSON source
_BOM = b"\xef\xbb\xbf"
_READ_ERRORS = (OSError, EOFError, zlib.error)


class InputError(ValueError):
    """The prompt source as a whole cannot be used; the message starts with its path."""


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
        raise InputError(f"{p}: cannot read prompts from this folder: it is not a dataset saved with "
                         "datasets.save_to_disk and holds no .jsonl, .json or .parquet files")
    return files


def _unknown(p: Path) -> InputError:
    return InputError(f"{p}: cannot read prompts: unknown file type {_suffix(p)!r}; expected "
                      ".jsonl (or .ndjson, .json, .jsonl.gz), .parquet, or a folder (a dataset "
                      "saved with datasets.save_to_disk, or .jsonl/.parquet files)")


def _open_binary(p: Path):
    return gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")


def _json_error(e: json.JSONDecodeError) -> str:
    """'Expecting value at column 3' (json's own messages may already end in 'at')."""
    return f"{e.msg} {'' if e.msg.endswith(' at') else 'at '}column {e.colno}"


def _head(p: Path) -> bytes:
    try:
        with _open_binary(p) as f:
            return f.read(4096).removeprefix(_BOM).lstrip()
    except _READ_ERRORS as e:
        raise InputError(f"{p}: cannot read: {e}") from None


def _json_document(p: Path) -> list | None:
    """A `.json` file read as one JSON document: its rows (an array, or one object as one row);
    None when it is JSON Lines instead (several values, one per line)."""
    head = _head(p)
    if not head.startswith((b"[", b"{")):
        return None
    if head.startswith(b"{"):
        first_line = head.split(b"\n", 1)[0]
        try:
            json.loads(first_line)
            return None  # a whole object on the first line: JSON Lines
        except ValueError:
            pass  # a pretty-printed object (or a malformed first line: parsed below)
    try:
        data = json.loads(p.read_bytes().removeprefix(_BOM).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not valid UTF-8 at byte {e.start}") from None
    except json.JSONDecodeError as e:
        if head.startswith(b"{") and e.msg == "Extra data":
            return None  # several objects: JSON Lines after all
        raise InputError(f"{p}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read: {e}") from None
    return data if isinstance(data, list) else [data]


def _rows_jsonl(p: Path, first: int, document: list | None) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line number, parsed object or None, error) for each non-blank line."""
    if document is not None:
        for i, obj in enumerate(document):
            yield first + i, obj, None
        return
    n = first - 1
    try:
        with _open_binary(p) as f:
            for i, raw in enumerate(f):
                n = first + i
                if i == 0:
                    raw = raw.removeprefix(_BOM)
                if not raw.strip():
                    continue
                try:
                    yield n, json.loads(raw.rstrip(b"\r\n").decode("utf-8")), None
                except UnicodeDecodeError as e:
                    yield n, None, f"not valid UTF-8 (byte {e.start + 1})"
                except json.JSONDecodeError as e:
                    yield n, None, f"malformed JSON ({_json_error(e)})"
    except _READ_ERRORS as e:
        where = f"after line {n - first + 1}" if n >= first else "at the start"
        raise InputError(f"{p}: cannot read {where}: {e}") from None


def _parquet_file(p: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(p)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError with no path in the message
        raise InputError(f"{p}: not a readable Parquet file: {e}") from None


def _rows_parquet(p: Path, first: int) -> Iterator[tuple[int, Any, str | None]]:
    n = first
    pf = _parquet_file(p)
    try:
        with pf:
            for batch in pf.iter_batches(batch_size=_BATCH):
                for row in batch.to_pylist():
                    yield n, row, None
                    n += 1
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{p}: cannot read Parquet row {n - first + 1}: {e}") from None


def _load_hf(p: Path, split: str | None):
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:  # a folder that only looks like a dataset
        raise InputError(f"{p}: looks like a folder saved with datasets.save_to_disk but cannot be "
                         f"loaded: {type(e).__name__}: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if not split:
            if len(names) == 1:
                split = names[0]
            elif "train" in names:
                split = "train"
            else:
                raise InputError(f"{p}: holds several splits ({', '.join(names)}); choose one with "
                                 f"--split (e.g. --split {names[0]})")
        if split not in ds:
            raise InputError(f"{p}: has no split {split!r}; it holds {', '.join(names)}")
        ds = ds[split]
    elif split:
        raise InputError(f"{p}: is a single dataset without splits; leave out --split ({split!r})")
    return ds


def _rows_hf(ds) -> Iterator[tuple[int, Any, str | None]]:
    n = 1
    for batch in ds.iter(batch_size=_BATCH):
        cols = list(batch.keys())
        for j in range(len(batch[cols[0]]) if cols else 0):
            yield n, {c: batch[c][j] for c in cols}, None
            n += 1


# ---------------------------------------------------------------------------- checks up front


@dataclass
class _Source:
    """One file of the input, checked: its path, and the parsed document of a `.json` file."""

    path: Path
    document: list | None = None


def _no_field(p: Path, prompt_field: str, messages_field: str, found: set[str], none: str) -> InputError:
    shown = ", ".join(sorted(found)[:20]) or "none"
    return InputError(f"{p}: {none} has the prompt field {prompt_field!r} (or {messages_field!r}); "
                      f"fields found: {shown}; name the right one with --prompt-field or --messages-field")


def _check_file(p: Path, prompt_field: str, messages_field: str) -> _Source:
    """Raise InputError unless `p` can be read and its rows can hold a prompt."""
    s = _suffix(p)
    if s in PARQUET_SUFFIXES:
        pf = _parquet_file(p)
        columns = set(pf.schema_arrow.names)
        if pf.metadata.num_rows == 0:
            raise InputError(f"{p}: holds no rows")
        if prompt_field not in columns and messages_field not in columns:
            raise _no_field(p, prompt_field, messages_field, columns, "no column")
        return _Source(p)
    if s not in JSONL_SUFFIXES:
        raise _unknown(p)
    document = _json_document(p) if s == ".json" else None
    found: set[str] = set()
    objects = rows = 0
    for _, obj, _ in _rows_jsonl(p, 1, document):
        rows += 1
        if isinstance(obj, dict):
            if prompt_field in obj or messages_field in obj:
                return _Source(p, document)
            objects += 1
            found.update(str(key) for key in obj)
        if objects >= _PEEK_ROWS or rows >= 10 * _PEEK_ROWS:
            break
    if rows == 0:
        raise InputError(f"{p}: holds no prompts (the file is empty)")
    if objects:
        whole = rows < 10 * _PEEK_ROWS and objects < _PEEK_ROWS
        raise _no_field(p, prompt_field, messages_field, found,
                        "no row" if whole else f"none of the first {rows} rows")
    return _Source(p, document)  # no object at all: every row is a reject (malformed), said per line


def _check_dataset(p: Path, split: str | None, prompt_field: str, messages_field: str):
    ds = _load_hf(p, split)
    columns = set(ds.column_names)
    if len(ds) == 0:
        raise InputError(f"{p}: holds no rows")
    if prompt_field not in columns and messages_field not in columns:
        raise _no_field(p, prompt_field, messages_field, columns, "no column")
    return ds


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
    if not p.exists():
        raise FileNotFoundError(f"prompt file not found: {p}")
    if _is_hf_dataset(p):
        ds = _check_dataset(p, split, prompt_field, messages_field)
        rows = ((n, obj, err, f"line {n}") for n, obj, err in _rows_hf(ds))
    else:
        if split:
            raise InputError(f"{p}: --split {split!r} applies only to a dataset folder saved with "
                             "datasets.save_to_disk")
        if p.is_dir():
            files = _folder_files(p)
            sources = [_check_file(f, prompt_field, messages_field) for f in files]
        else:
            sources = [_check_file(p, prompt_field, messages_field)]
        rows = _rows_sources(sources, in_folder=p.is_dir())
    return _items(rows, prompt_field, messages_field, id_field, system_prompt, max_chars)


def _rows_sources(sources: list[_Source], in_folder: bool) -> Iterator[tuple[int, Any, str | None, str]]:
    """The rows of checked files as one stream: (line, row, error, 'line N' or 'line N (file line K)')."""
    first = 1
    for source in sources:
        f = source.path
        rows = (_rows_parquet(f, first) if _suffix(f) in PARQUET_SUFFIXES
                else _rows_jsonl(f, first, source.document))
        last = first - 1
        for n, obj, err in rows:
            last = n
            yield n, obj, err, f"line {n} ({f.name} line {n - first + 1})" if in_folder else f"line {n}"
        first = last + 1


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
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"prompt file not found: {p}")
    if _is_hf_dataset(p):
        return len(_load_hf(p, split))
    if p.is_dir():
        return sum(count_prompts(f) for f in _folder_files(p))
    s = _suffix(p)
    if s in PARQUET_SUFFIXES:
        return _parquet_file(p).metadata.num_rows
    if s in JSONL_SUFFIXES:
        document = _json_document(p) if s == ".json" else None
        if document is not None:
            return len(document)
        count = 0
        try:
            with _open_binary(p) as f:
                for i, raw in enumerate(f):
                    if raw.removeprefix(_BOM).strip() if i == 0 else raw.strip():
                        count += 1
        except _READ_ERRORS as e:
            raise InputError(f"{p}: cannot read after line {count}: {e}") from None
        return count
    raise _unknown(p)


def input_options(config: Any) -> dict[str, Any]:
    """`read_prompts` keyword arguments from a `SynthesizeConfig` (so callers pass them all)."""
    return {"prompt_field": config.prompt_field, "messages_field": config.messages_field,
            "id_field": config.id_field, "system_prompt": config.system_prompt or None,
            "split": getattr(config, "split", "") or None,
            "max_chars": getattr(config, "max_prompt_chars", DEFAULT_MAX_CHARS)}
