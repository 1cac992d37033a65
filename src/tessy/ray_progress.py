"""What the `--executor ray` driver sees of its shards while they run: rows finished, and workers.

Owns the driver's view, read from the shard folders alone (the driver must read them anyway, to
merge), so nothing is sent back from a task before it ends and no Ray actor is needed:

- `ShardWatch.poll()` counts each shard's finished rows: the lines of its ``records.jsonl`` and
  ``rejects.jsonl`` plus the ids its ``failures.jsonl`` gained since the watch began. It reads
  only the bytes appended since the last poll (a file cut back, as a resume repairs a torn tail,
  is read again from the start), and counts a line only once its newline is there, so a line
  being written is not counted early. The sum drives one bar (`tessy.progress.bar`) whose total
  is the input's rows: every row is owned by exactly one shard.
- Each task writes its worker file, ``OUTPUT.shards/I-of-N/.worker.json``
  (``{"run", "attempt", "pid", "node", "started"}``) when it starts (`write_worker_file`): which
  process on which node runs the shard, and which attempt of this run it is. A new attempt is
  a shard Ray started again after its worker or node died; the watch says so in one line.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tessy.store import FAILURES_FILE, RECORDS_FILE, REJECTS_FILE


def worker_file(folder: str | os.PathLike) -> Path:
    """``I-of-N/.worker.json`` (hidden beside ``.lock``: no run file of the folder, merge ignores it)."""
    return Path(folder) / ".worker.json"


def read_worker_file(folder: str | os.PathLike) -> dict:
    try:
        info = json.loads(worker_file(folder).read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def write_worker_file(folder: str | os.PathLike, run: str) -> dict:
    """Say (atomically) that this process runs the shard in `folder` for the driver's run `run`."""
    import socket

    before = read_worker_file(folder)
    attempt = before.get("attempt", 0) + 1 if before.get("run") == run else 1
    info = {"run": run, "attempt": attempt, "pid": os.getpid(), "node": socket.gethostname(), "started": time.time()}
    path = worker_file(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(json.dumps(info), encoding="utf-8")
    os.replace(temp, path)
    return info


class _Lines:
    """Complete lines appended to one file, read incrementally."""

    def __init__(self, path: Path):
        self.path, self.offset, self.count = path, 0, 0

    def new_lines(self) -> list[bytes]:
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        if size < self.offset:  # cut back (a torn tail repaired) or replaced (--overwrite)
            self.offset, self.count = 0, 0
        if size == self.offset:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(size - self.offset)
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        lines = chunk[:end].splitlines()
        self.count += len(lines)
        return lines


class _Shard:
    def __init__(self, folder: Path, baseline: bool):
        self.folder = folder
        self.records, self.rejects = _Lines(folder / RECORDS_FILE), _Lines(folder / REJECTS_FILE)
        self.failures = _Lines(folder / FAILURES_FILE)
        if baseline:  # failures written before this run are old attempts, not rows finished now
            self.failures.new_lines()
        self.failed: set[str] = set()
        self.attempt = 0

    def finished(self) -> int:
        self.records.new_lines()
        self.rejects.new_lines()
        for line in self.failures.new_lines():
            try:
                self.failed.add(str(json.loads(line).get("id")))
            except (ValueError, AttributeError):
                pass
        return self.records.count + self.rejects.count + len(self.failed)


class ShardWatch:
    """One bar over the rows of every shard of a run (see the module docstring)."""

    def __init__(self, folders: list[str], labels: list[str], total: int | None, run: str, show: bool | None,
                 max_attempts: int):
        from tessy.progress import bar

        self.shards = [_Shard(Path(folder), baseline=True) for folder in folders]
        self.labels, self.run, self.max_attempts = labels, run, max_attempts
        self.total = total
        self.bar = bar(total, "synthesize", "sample", show)
        self.retried = 0
        self.ended: set[int] = set()

    def poll(self) -> int:
        """Advance the bar to the rows finished now; say which shards Ray started again."""
        done = 0
        for index, shard in enumerate(self.shards):
            done += shard.finished()
            info = read_worker_file(shard.folder)
            attempt = info.get("attempt", 0) if info.get("run") == self.run else 0
            if attempt > shard.attempt:
                if shard.attempt:
                    self.retried += 1
                    self.say(f"shard {self.labels[index]}: its worker died (or its node); Ray started it again "
                             f"(attempt {attempt} of {self.max_attempts}, pid {info.get('pid')} on "
                             f"{info.get('node')}); it resumes where it stopped")
                shard.attempt = attempt
        if self.total is not None:
            done = min(done, self.total)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        self.bar.set_postfix(shards=f"{len(self.ended)}/{len(self.shards)} done", retried=self.retried,
                             refresh=False)
        return done

    def shard_ended(self, index: int) -> None:
        self.ended.add(index)

    def say(self, line: str) -> None:
        import sys

        writer: Any = getattr(self.bar, "write", None)  # tqdm's: above the bar
        if writer is not None:
            writer(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()
