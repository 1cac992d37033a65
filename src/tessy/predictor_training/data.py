"""Shared helpers of the predictor pipeline: reading segments and annotations, the train / dev /
test split, and character spans → labels per token.

Promises:

- `split_of` depends only on (source id, model, fractions, seed): `train` and `eval` agree on the
  held-out segments without sharing any file, and every segment of one response lands in the
  same split (segments of one response may overlap);
- a token's label is that of its first non-whitespace character (style when it lies inside an
  annotated span); whitespace-only tokens get no label (None). The classifier predictor reads a
  piece's verdict at the same character, so training, evaluation and synthesis agree.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator

from tessy import durable
from tessy.store import iter_jsonl

SEGMENTS_FILE = "segments.jsonl"
ANNOTATIONS_FILE = "records.jsonl"


def split_paths(spec: str) -> list[str]:
    """`a,b , c` → ["a", "b", "c"] (empty parts dropped)."""
    return [part.strip() for part in str(spec).split(",") if part.strip()]


def parse_roles(spec: str) -> tuple[str, ...]:
    """Comma-separated roles → a tuple; empty → both roles."""
    from tessy.predictor_training.config import ROLES

    roles = tuple(split_paths(spec)) or ROLES
    for role in roles:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return roles


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Objects of a JSONL file; a torn last line (a crash mid-write) is skipped."""
    for _, obj in iter_jsonl(Path(path)):
        yield obj


def _resolve(spec: str, default_name: str, what: str) -> Path:
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        path = path / default_name
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {path}")
    return path


def read_segments(spec: str) -> Iterator[dict]:
    """Segments from comma-separated segments.jsonl files or `predictor sample` folders."""
    paths = split_paths(spec)
    if not paths:
        raise ValueError("input: give segments.jsonl files or `tessy predictor sample` output folders")
    for part in paths:
        yield from read_jsonl(_resolve(part, SEGMENTS_FILE, "segments"))


def read_annotations(spec: str, roles: Iterable[str] | None = None) -> list[dict]:
    """Annotated segments (failed ones are not in the file) from comma-separated annotation
    folders or their records.jsonl; the first annotation of a segment id wins."""
    paths = split_paths(spec)
    if not paths:
        raise ValueError("data: give `tessy predictor annotate` output folders (or their records.jsonl)")
    wanted = set(roles) if roles is not None else None
    seen: set[str] = set()
    annotations = []
    for part in paths:
        path = _resolve(part, ANNOTATIONS_FILE, "annotations")
        for obj in read_jsonl(path):
            if "spans" not in obj or "text" not in obj:
                raise ValueError(f"{path}: not an annotation file (a line lacks 'text' / 'spans')")
            sid = obj.get("segment_id") or obj.get("id")
            if sid in seen or (wanted is not None and obj.get("role") not in wanted):
                continue
            seen.add(sid)
            annotations.append(obj)
    return annotations


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write `rows` to `path` through a temporary file and a rename (`durable.replacing`); returns
    the row count."""
    import json

    count = 0
    with durable.replacing(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


# -- the split -------------------------------------------------------------------------------


def split_of(source_id: str, model: str, *, test_fraction: float, dev_fraction: float, seed: int = 0) -> str:
    """"train", "dev" or "test" for the response (`source_id`, `model`); see the module doc."""
    if not (0 <= test_fraction <= 1 and 0 <= dev_fraction <= 1 and test_fraction + dev_fraction <= 1):
        raise ValueError("test_fraction and dev_fraction must lie in [0, 1] and sum to at most 1")
    digest = hashlib.sha256(f"{seed}\x00{model}\x00{source_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "little") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + dev_fraction:
        return "dev"
    return "train"


def select_split(annotations: list[dict], split: str, *, test_fraction: float, dev_fraction: float,
                 seed: int = 0) -> list[dict]:
    if split == "all":
        return list(annotations)
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split must be train, dev, test or all, not {split!r}")
    return [a for a in annotations
            if split_of(str(a.get("source_id")), str(a.get("model")), test_fraction=test_fraction,
                        dev_fraction=dev_fraction, seed=seed) == split]


# -- labels ----------------------------------------------------------------------------------


def char_mask(text: str, spans: Iterable[Iterable[int]]) -> list[bool]:
    """One flag per character of `text`: True inside an annotated style span."""
    mask = [False] * len(text)
    for start, end in spans:
        start, end = max(0, int(start)), min(len(text), int(end))
        mask[start:end] = [True] * max(0, end - start)
    return mask


def first_visible(text: str, start: int, end: int) -> int | None:
    """Position of the first non-whitespace character of `text[start:end]`, or None."""
    for pos in range(max(start, 0), min(end, len(text))):
        if not text[pos].isspace():
            return pos
    return None


def range_labels(text: str, mask: list[bool], ranges: Iterable[tuple[int, int]]) -> list[bool | None]:
    """Per character range (a token or a piece): style / capability at its first non-whitespace
    character; None for whitespace-only or empty ranges (special tokens)."""
    labels: list[bool | None] = []
    for start, end in ranges:
        pos = first_visible(text, start, end)
        labels.append(None if pos is None else mask[pos])
    return labels


def pieces_of(tokenizer, text: str) -> list[str]:
    """`text` cut at the tokenizer's token boundaries, as the engine sees a model's output
    (one piece per token); the pieces join to `text` exactly."""
    from tessy.engine.decode import decode_pieces

    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = decode_pieces(tokenizer, ids)
    if "".join(pieces) == text:
        return pieces
    # Decoding does not give the text back (normalisation): cut at the offsets instead.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    bounds = sorted({0, len(text), *(min(max(b, 0), len(text)) for b, _ in enc["offset_mapping"])})
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
