"""Input sources: which files hold the prompts, checked up front, and their rows as one stream.

Owns the byte level of reading prompts: the kind of a source (picked by its path), JSON Lines
(optionally gzip), a `.json` document, Parquet (streamed by record batches), a folder written by
``datasets.save_to_disk`` (its only split, or ``train``, or the ``split`` asked for), a folder of
``*.parquet`` / ``*.jsonl`` files (in name order, numbered as one stream), and a UTF-8
byte-order mark (ignored). It knows nothing of what a row means: `tessy.inputs` turns the rows
into prompts.

Promises:

- the checks (`check_file`, `check_dataset`, `check_columns`, `pick_split`, `folder_files`) raise
  `InputError` (a ValueError whose message starts with the path or name) for a source that
  cannot be used: an unknown file type, an empty file, a corrupt Parquet file, a folder that is
  not a dataset, a dataset with several splits and no ``split``, a `.json` document that is not
  valid JSON, or a source in which no row has the prompt field (naming the field and the fields
  found);
- the row streams yield ``(line, row or None, error or None)`` (and, from `rows_sources`, the
  ``line N`` label, naming the file inside a folder): a malformed JSON line or invalid UTF-8 is
  an error of that row, never fatal;
- a source that breaks mid-way (a truncated ``.gz``, a disk error) raises `InputError` naming
  the file and the last line read.
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json")
PARQUET_SUFFIXES = (".parquet",)
_BATCH = 1024
_PEEK_ROWS = 100  # rows looked at up front for the prompt field of a JSON source
_BOM = b"\xef\xbb\xbf"
_READ_ERRORS = (OSError, EOFError, zlib.error)


class InputError(ValueError):
    """The prompt source as a whole cannot be used; the message starts with its path."""


# ---------------------------------------------------------------------------- readers


def _suffix(p: Path) -> str:
    name = p.name.lower()
    for s in JSONL_SUFFIXES + PARQUET_SUFFIXES:
        if name.endswith(s):
            return s
    return p.suffix.lower()


def is_hf_dataset(p: Path) -> bool:
    return p.is_dir() and any((p / n).exists() for n in
                              ("dataset_info.json", "state.json", "dataset_dict.json"))


def folder_files(p: Path) -> list[Path]:
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


def load_hf(p: Path, split: str | None):
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:  # a folder that only looks like a dataset
        raise InputError(f"{p}: looks like a folder saved with datasets.save_to_disk but cannot be "
                         f"loaded: {type(e).__name__}: {e}") from None
    return pick_split(p, ds, split)


def pick_split(label: Any, ds, split: str | None):
    """The split to read of a loaded dataset: `split`, else its only one, else ``train``."""
    if hasattr(ds, "keys"):  # a DatasetDict
        names = list(ds.keys())
        if not split:
            if len(names) == 1:
                split = names[0]
            elif "train" in names:
                split = "train"
            else:
                raise InputError(f"{label}: holds several splits ({', '.join(names)}); choose one with "
                                 f"--split (e.g. --split {names[0]})")
        if split not in ds:
            raise InputError(f"{label}: has no split {split!r}; it holds {', '.join(names)}")
        ds = ds[split]
    elif split:
        raise InputError(f"{label}: is a single dataset without splits; leave out --split ({split!r})")
    return ds


def rows_hf(ds) -> Iterator[tuple[int, Any, str | None]]:
    n = 1
    for batch in ds.iter(batch_size=_BATCH):
        cols = list(batch.keys())
        for j in range(len(batch[cols[0]]) if cols else 0):
            yield n, {c: batch[c][j] for c in cols}, None
            n += 1


# ---------------------------------------------------------------------------- checks up front


@dataclass
class Source:
    """One file of the input, checked: its path, and the parsed document of a `.json` file."""

    path: Path
    document: list | None = None


def _no_field(p: Path, prompt_field: str, messages_field: str, found: set[str], none: str) -> InputError:
    shown = ", ".join(sorted(found)[:20]) or "none"
    return InputError(f"{p}: {none} has the prompt field {prompt_field!r} (or {messages_field!r}); "
                      f"fields found: {shown}; name the right one with --prompt-field or --messages-field")


def check_file(p: Path, prompt_field: str, messages_field: str) -> Source:
    """Raise InputError unless `p` can be read and its rows can hold a prompt."""
    s = _suffix(p)
    if s in PARQUET_SUFFIXES:
        pf = _parquet_file(p)
        columns = set(pf.schema_arrow.names)
        if pf.metadata.num_rows == 0:
            raise InputError(f"{p}: holds no rows")
        if prompt_field not in columns and messages_field not in columns:
            raise _no_field(p, prompt_field, messages_field, columns, "no column")
        return Source(p)
    if s not in JSONL_SUFFIXES:
        raise _unknown(p)
    document = _json_document(p) if s == ".json" else None
    found: set[str] = set()
    objects = rows = 0
    for _, obj, _ in _rows_jsonl(p, 1, document):
        rows += 1
        if isinstance(obj, dict):
            if prompt_field in obj or messages_field in obj:
                return Source(p, document)
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
    return Source(p, document)  # no object at all: every row is a reject (malformed), said per line


def check_dataset(p: Path, split: str | None, prompt_field: str, messages_field: str):
    return check_columns(p, load_hf(p, split), prompt_field, messages_field)


def check_columns(p: Any, ds, prompt_field: str, messages_field: str):
    """`ds` (a loaded `datasets.Dataset`) when it has rows and the prompt column; else InputError."""
    columns = set(ds.column_names)
    if len(ds) == 0:
        raise InputError(f"{p}: holds no rows")
    if prompt_field not in columns and messages_field not in columns:
        raise _no_field(p, prompt_field, messages_field, columns, "no column")
    return ds


# ---------------------------------------------------------------------------- streams


def rows_sources(sources: list[Source], in_folder: bool) -> Iterator[tuple[int, Any, str | None, str]]:
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


def count_rows(p: Path, split: str | None = None) -> int:
    """Number of rows (non-blank lines) of the existing source `p`; rejects included.

    Reads a text file through to its end, so a truncated `.gz` is found here (InputError)."""
    if is_hf_dataset(p):
        return len(load_hf(p, split))
    if p.is_dir():
        return sum(count_rows(f) for f in folder_files(p))
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
