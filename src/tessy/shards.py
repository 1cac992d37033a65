"""Shards: one run split over several processes by a hash of each prompt's id, and joined again.

Owns what `--shard I/N` means and `tessy merge`:

- `shard_of(key, count)`: the shard of a prompt is the sha256 of its id (the key) modulo N, so the
  split is stable across processes, machines and Python versions, disjoint, and independent of
  row order. An input row without an id (malformed JSON) is keyed by its line number
  (`row_key`), so each reject is written by exactly one shard.
- `merge_runs(folders, out)`: joins run folders of one config (equal fingerprints; the shard is
  not part of it, so a merged record is byte for byte what one process would have written, timings
  aside) into one run folder that `export`, `analyze`, `view` and `verify` read like any other.
  It refuses ids held by two folders, folders of different configs, shards of different counts
  and a shard given twice, each with one line naming the folders. It reads each folder under its
  `.lock` (a running shard is refused), writes into a temporary folder beside OUT and renames it
  into place under OUT's `.lock` (`durable.new_folder`): OUT is complete or untouched. An existing OUT is replaced only with `overwrite`.

Progress: `owned_rows` counts the input rows a shard owns (the total a shard's synthesize bar needs;
`tessy.runner` gives a shard's bar no total so far), `shards_bar` is a bar over a run's shards (total and ETA) for whatever runs
them, and `merge_runs` shows one over the folders it reads; every bar is on stderr and only on a
terminal unless asked for (`tessy.progress`), so no file's content changes with it.

A merged folder's run.json is the first folder's with `shard` emptied, `output` set to OUT, and
`merged_from` listing each folder, its shard and counts; `shards_missing` lists the shards of
the count not given (the merge goes on: rerun those, then merge again).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tessy import durable
from tessy.store import FAILURES_FILE, LOCK_FILE, RECORDS_FILE, REJECTS_FILE, RUN_FILE, iter_jsonl

RUN_FILES = (RECORDS_FILE, FAILURES_FILE, REJECTS_FILE)  # joined line by line
VERDICTS_PREFIX = "verdicts-"  # tessy verify's side files, joined per verifier


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str) -> bool:
        return shard_of(key, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """'I/N' -> Shard(I, N); ValueError saying what is expected otherwise."""
    index, slash, count = str(text).strip().partition("/")
    try:
        shard = Shard(int(index), int(count)) if slash else None
    except ValueError:
        shard = None
    if shard is None or shard.count < 1 or not 0 <= shard.index < shard.count:
        raise ValueError(f"expected I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return shard


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) that owns `key`: sha256 of its UTF-8, first 8 bytes, modulo count."""
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def row_key(sample_id: str | None, line: int) -> str:
    """What a row is sharded by: its id, or its line number when it has none (a malformed line)."""
    return sample_id if sample_id is not None else f"line:{line}"


def owned_rows(items: Iterable[Any], shard: Shard | str, limit: int | None = None) -> int:
    """How many of `items` (`tessy.inputs.read_prompts`' PromptItems and Rejects) `shard` owns:
    the total of its progress bar. With `limit`, only the first `limit` rows count (a run's
    ``--limit`` is over the whole input, every shard reading the same first rows)."""
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    owned = 0
    for seen, item in enumerate(items):
        if limit and seen >= limit:
            break
        owned += shard.owns(row_key(getattr(item, "id", None), item.line))
    return owned


def shards_bar(count: int, show: bool | None = None, desc: str = "shards", done: int = 0) -> Any:
    """A bar on stderr over the `count` shards of a run (total, rate, ETA); `tessy.progress.bar`'s
    rule for ``show`` (None: only on a terminal). For a driver that runs shards, and for merge."""
    from tessy.progress import bar

    return bar(count, desc, "shard", show, initial=done)


# ---------------------------------------------------------------------------- merge


class MergeError(ValueError):
    """The folders cannot be merged (the message names them)."""


@dataclass
class MergeReport:
    output: str
    records: int = 0
    failures: int = 0
    rejects: int = 0
    shards: list[str] = field(default_factory=list)  # the shards merged, e.g. ["0/2", "1/2"]
    shards_missing: list[str] = field(default_factory=list)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold `folder`'s .lock (the one `tessy.store.RunOutput` holds while writing), if it has one."""
    try:
        fd = durable.lock(folder / LOCK_FILE, create=False)
    except durable.LockHeld:
        raise MergeError(f"{folder} is in use by a running tessy process; wait for it to finish") from None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _run_info(folder: Path) -> dict:
    if not folder.is_dir():
        raise MergeError(f"no run folder at {folder}")
    path = folder / RUN_FILE
    if not path.is_file():
        raise MergeError(f"{folder}: no {RUN_FILE}, not a tessy synthesize run folder")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MergeError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or not info.get("fingerprint"):
        raise MergeError(f"{path}: no config fingerprint")
    return info


def _shards_held(folder: Path, info: dict) -> list[Shard]:
    """The shards a folder holds: its own, or those it was merged from; [] for a whole run."""
    merged = info.get("merged_from")
    specs = [entry.get("shard") for entry in merged] if isinstance(merged, list) else \
        [(info.get("config") or {}).get("shard")]
    try:
        return [parse_shard(spec) for spec in specs if spec]
    except ValueError as exc:
        raise MergeError(f"{folder}/run.json: shard: {exc}") from None


def _read(path: Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)] if path.exists() else []


def merge_runs(folders: list[str | os.PathLike], out: str | os.PathLike, overwrite: bool = False,
               show_progress: bool | None = None) -> MergeReport:
    """Join the run folders `folders` into the run folder `out` (see the module docstring); a bar
    on stderr (`shards_bar`; None: only on a terminal) counts the folders read, with an ETA."""
    from tessy import __version__

    paths = [Path(f) for f in folders]
    out = Path(out)
    if not paths:
        raise MergeError("no run folders to merge")
    resolved = [p.resolve() for p in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise MergeError(f"{paths[i]} is given twice")
        if path == out.resolve() or out.resolve() in path.parents:
            raise MergeError(f"{out} holds the run {paths[i]}; merge into another folder")
    if out.exists() and not overwrite:
        raise MergeError(f"{out} exists; pass --overwrite to replace it")

    with ExitStack() as stack:
        for path in paths:
            if path.is_dir():
                stack.enter_context(_folder_lock(path))
        infos = [_run_info(path) for path in paths]
        first = infos[0]
        for path, info in zip(paths[1:], infos[1:]):
            if info["fingerprint"] != first["fingerprint"]:
                raise MergeError(f"{paths[0]} and {path} were made by different configs (fingerprint "
                                 f"{first['fingerprint']} vs {info['fingerprint']}); only shards of one run merge")

        held = [_shards_held(path, info) for path, info in zip(paths, infos)]
        owner: dict[Shard, Path] = {}
        for path, shards in zip(paths, held):
            for shard in shards:
                other = next((s for s in owner if s.count != shard.count), None)
                if other is not None:
                    raise MergeError(f"{owner[other]} is shard {other} but {path} is shard {shard}: "
                                     "shards of different counts do not merge")
                if shard in owner:
                    raise MergeError(f"{owner[shard]} and {path} are both shard {shard}")
                owner[shard] = path

        report = MergeReport(output=str(out), shards=[str(s) for s in sorted(owner, key=lambda s: s.index)])
        if owner:
            count = next(iter(owner)).count
            report.shards_missing = [f"{i}/{count}" for i in range(count) if Shard(i, count) not in owner]

        ids: dict[str, Path] = {}
        joined: dict[str, list[dict]] = {name: [] for name in RUN_FILES}
        merged_from = []
        shown = stack.enter_context(shards_bar(len(paths), show_progress, desc="merge"))  # closed on an error too
        for path, info, shards in zip(paths, infos, held):
            records = _read(path / RECORDS_FILE)
            for number, record in enumerate(records, 1):
                sample_id = record.get("id")
                if not isinstance(sample_id, str):
                    raise MergeError(f"{path / RECORDS_FILE}: record {number} has no string 'id'")
                if sample_id in ids:
                    where = f"twice in {path}" if ids[sample_id] == path else f"in both {ids[sample_id]} and {path}"
                    raise MergeError(f"id {sample_id!r} is {where}: shards must hold disjoint prompts")
                ids[sample_id] = path
                if shards and not any(s.owns(sample_id) for s in shards):
                    raise MergeError(f"{path}: id {sample_id!r} belongs to shard "
                                     f"{shard_of(sample_id, shards[0].count)}/{shards[0].count}, not to "
                                     f"{', '.join(map(str, shards))}")
            joined[RECORDS_FILE] += records
            failures, rejects = _read(path / FAILURES_FILE), _read(path / REJECTS_FILE)
            joined[FAILURES_FILE] += failures
            joined[REJECTS_FILE] += rejects
            merged_from.append({"folder": str(path), "shard": ",".join(map(str, shards)),
                                "records": len(records), "failures": len(failures), "rejects": len(rejects)})
            shown.set_postfix(records=len(joined[RECORDS_FILE]), refresh=False)
            shown.update(1)
        shown.close()
        joined[REJECTS_FILE].sort(key=lambda r: (r.get("line") if isinstance(r.get("line"), int) else 0))
        verdicts: dict[str, list[dict]] = {}
        for path in paths:
            for file in sorted(path.glob(f"{VERDICTS_PREFIX}*.jsonl")):
                verdicts.setdefault(file.name, []).extend(_read(file))

        config = dict(first.get("config") or {})
        config.update(shard="", output=str(out))
        info = {"fingerprint": first["fingerprint"], "config": config,
                "tessy_version": first.get("tessy_version", __version__),
                "created": first.get("created"), "merged_from": merged_from,
                "shards_missing": report.shards_missing, "merged_by": __version__}
        report.records, report.failures, report.rejects = (len(joined[name]) for name in RUN_FILES)

        with _folder_lock(out), durable.new_folder(out, unique=True) as staging:
            for name, rows in {**joined, **verdicts}.items():
                _write_jsonl(staging / name, rows)
            (staging / RUN_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n",
                                            encoding="utf-8")
    return report


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")
