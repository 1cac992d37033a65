"""Mid-trace resume: a write-ahead journal of the cooperative loop, `OUTPUT/journal.jsonl`.

The journal is the cooperative loop's observer (`tessy.engine.observer.LoopObserver`): after each
closed turn of Algorithm 1 (`tessy.engine.cooperative.cooperate`) the loop calls
`Journal.turn_closed`, which appends one JSON line for that sample:

    {"id", "prompt": sha256 of the prompt, "fp": config fingerprint, "n": turns closed so far,
     "ids": {role: ids appended to that model's sequence this turn}, "span": the span kept this
     turn or null, "next": whose turn is next, "empty": empty hand-overs in a row,
     "finish": how the alternation ended (null while it goes on), "lengths": {role: sequence length},
     "generated", "steps", "generate_s", "predict_s", "wall_s": the sample's counters so far}

A turn whose step ends without a cut (the same model goes on: long spans) appends a step line,
so a long span is not lost either:

    {"id", "prompt", "fp", "n": turns closed so far, "step": steps of the open span so far,
     "role": its model, "pieces": the ids it added since the last line, "span_generated": tokens
     generated for it, "lengths", and the counters above}

The turn's line, when it closes, supersedes its step lines. A sample that fails writes
`{"id", "reset": true}`: what came before it for that id is dead (the
retry starts afresh), as is a chain for another prompt under the same id.

Promises:
- A line is one `os.write` on an `O_APPEND` descriptor (`tessy.durable.append`: a failed write
  is cut back off), so a `kill -9` loses no closed turn; the file is fsynced at most `sync_s`
  seconds apart while the run goes on (0: after every line) and on close, so a machine crash
  loses at most that much.
- On open, the file is compacted (`durable.replacing`: a temp file, fsynced, renamed over):
  lines of done ids, of another config fingerprint and before a reset are dropped; a torn or
  unreadable line is skipped. While a run goes on, the file is compacted again once its dead
  lines (ids whose record is written) outweigh the live ones and pass `compact_bytes`, and on
  close: a finished run leaves it empty.
- `resume` rebuilds a sample's state from its lines (prompt ids plus the ids each turn appended,
  the spans, whose turn it is, the counters, and the open span's ids after its last step without
  a cut, in `state.resumed["open"]`), checking every sequence length on the way: a chain
  written for another prompt, with a gap, or that does not rebuild exactly is ignored and the
  sample starts afresh. Never mixed: the lines of one chain, or none.
- Only the alternation is journaled; a sample whose thinking had ended resumes at the final
  answer, which is written again from the end of the thinking.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tessy import durable
from tessy.engine.observer import LoopObserver
from tessy.engine.state import Span

if TYPE_CHECKING:
    from tessy.engine.pair import Pair
    from tessy.engine.state import OpenSpan, SampleState

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"
SPAN_FIELDS = ("tokens_student", "tokens_own", "generated", "discarded")


@dataclass
class _Cursor:
    """What a sample's journal already holds: its sequence lengths and last span, and when it started."""

    prompt: str
    lengths: dict[str, int]
    spans: int
    last: tuple | None  # (text length, *SPAN_FIELDS, forced) of the last span
    started: float = field(default_factory=time.perf_counter)
    prior_wall_s: float = 0.0
    open_ids: int = 0  # ids of the open span already journaled
    open_steps: int = 0


def _span_key(span: Span | None) -> tuple | None:
    if span is None:
        return None
    return (len(span.text), *(getattr(span, name) for name in SPAN_FIELDS), span.forced)


class Journal(LoopObserver):
    """A run folder's journal (see the module docstring); one per process, used from the event loop."""

    def __init__(self, folder: str | os.PathLike, fingerprint: str, done: Iterable[str] = (), sync_s: float = 5.0,
                 overwrite: bool = False, compact_bytes: int = 64 << 20):
        self.path = Path(folder) / JOURNAL_FILE
        self.fingerprint = fingerprint
        self.sync_s = sync_s
        self.compact_bytes = compact_bytes
        self._index: dict[str, list[tuple[int, int]]] = {}  # id -> (offset, length) of its live lines
        self._cursors: dict[str, _Cursor] = {}
        self._fd_lock = threading.Lock()  # the descriptor, against a sync running in a thread
        self._dirty = False
        self._last_sync = time.monotonic()
        self.live_bytes = self.dead_bytes = 0
        self.resumed = 0  # samples resumed from the journal in this process
        self.resumed_tokens = 0  # tokens they had generated before
        if overwrite:
            self.path.unlink(missing_ok=True)
        self._fd = self._compact(self._read_existing(set(done)))

    # -- opening and compacting

    def _read_existing(self, done: set[str]) -> dict[str, list[bytes]]:
        """The live lines of the file on disk, by id (see the module docstring)."""
        lines: dict[str, list[bytes]] = {}
        if not self.path.exists():
            return lines
        skipped = foreign = 0
        with open(self.path, "rb") as file:
            for raw in file:
                try:
                    line = json.loads(raw.decode("utf-8"))
                    sample_id = line["id"]
                    if not isinstance(sample_id, str) or not raw.endswith(b"\n"):
                        raise ValueError
                except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                    skipped += 1  # a torn last line (a crash mid-write), or damage
                    continue
                if line.get("reset"):
                    lines.pop(sample_id, None)
                elif line.get("fp") != self.fingerprint:
                    foreign += 1
                elif sample_id not in done:
                    lines.setdefault(sample_id, []).append(raw)
        if skipped:
            log.warning("%s: skipped %d torn or unreadable lines", self.path, skipped)
        if foreign:
            log.warning("%s: ignored %d lines of another config", self.path, foreign)
        return lines

    def _compact(self, lines: dict[str, list[bytes]]) -> int:
        """Rewrite the file with `lines` only (temp file, fsync, rename, fsync of the folder); return
        the new descriptor, open for appending, and index its lines."""
        index: dict[str, list[tuple[int, int]]] = {}
        offset = 0
        with durable.replacing(self.path) as file:
            for sample_id, raws in lines.items():
                for raw in raws:
                    file.write(raw)
                    index.setdefault(sample_id, []).append((offset, len(raw)))
                    offset += len(raw)
        self._index, self.live_bytes, self.dead_bytes = index, offset, 0
        return durable.open_append(self.path, readable=True)

    def _lines_of(self, sample_id: str) -> list[bytes]:
        return [os.pread(self._fd, length, offset) for offset, length in self._index.get(sample_id, ())]

    def _compact_now(self) -> None:
        """Drop the dead lines while the run goes on (the event loop waits: it appends here too)."""
        lines = {sample_id: self._lines_of(sample_id) for sample_id in self._index}
        with self._fd_lock:
            old = self._fd
            self._fd = self._compact(lines)
            os.close(old)
            self._dirty = False

    # -- the engine's side

    def resume(self, pair: "Pair", state: "SampleState", messages: list[dict[str, str]]) -> str | None:
        """Rebuild `state` (fresh from `Pair.new_state`) from the sample's journal, if it has a
        usable one; return how its alternation ended, or None to go on alternating."""
        from tessy.records import prompt_sha256

        prompt = prompt_sha256(messages)
        sample_id = state.sample_id
        raws = self._lines_of(sample_id)
        lines, problem = [], ""
        for raw in raws:
            try:
                lines.append(json.loads(raw))
            except ValueError:
                problem = "an unreadable line"
                break
        if not problem and lines and any(line.get("prompt") != prompt for line in lines):
            problem = "another prompt under this id"
        open_span = None
        if not problem and lines:
            try:
                open_span = _replay(state, lines)
            except (ValueError, KeyError, TypeError) as exc:
                problem = str(exc) or type(exc).__name__
        if problem:
            log.warning("%s: journal of %r ignored (%s); it starts afresh", self.path, sample_id, problem)
            self.forget(sample_id)
        cursor = _Cursor(prompt, {role: len(ids) for role, ids in state.ids.items()}, len(state.spans),
                         _span_key(state.spans[-1] if state.spans else None))
        self._cursors[sample_id] = cursor
        if problem or not lines:
            return None
        last = lines[-1]
        cursor.prior_wall_s = float(last.get("wall_s", 0.0))
        state.resumed = {"turns": state.turns, "tokens": state.generated, "wall_s": cursor.prior_wall_s}
        if open_span is not None:
            state.resumed["open"] = open_span
            cursor.open_ids, cursor.open_steps = len(open_span["ids"]), open_span["steps"]
        self.resumed += 1
        self.resumed_tokens += state.generated
        log.info("%s: resuming %r at turn %d%s (%d tokens generated before)", self.path, sample_id, state.turns,
                 f" with {len(open_span['ids'])} tokens of its open span" if open_span else "", state.generated)
        return last.get("finish")

    def _counters(self, state: "SampleState", cursor: _Cursor, handed_out: int | None = None) -> dict:
        going = handed_out is not None  # a request still going on: its tokens so far, and itself
        return {"lengths": cursor.lengths, "generated": state.generated + (handed_out or 0),
                "steps": state.steps + int(going),
                "generate_s": state.generate_s, "predict_s": state.predict_s,
                "wall_s": round(cursor.prior_wall_s + time.perf_counter() - cursor.started, 4)}

    def turn_closed(self, state: "SampleState", finish: str | None) -> None:
        """Append the turn just closed (`finish`: how the alternation ended, None while it goes on)."""
        cursor = self._cursors.get(state.sample_id)
        if cursor is None:
            return  # not started through `resume` (no journal for it)
        appended = {role: ids[cursor.lengths.get(role, 0):] for role, ids in state.ids.items()}
        span = None
        if len(state.spans) > cursor.spans:
            span = state.spans[-1].as_dict()
        elif state.spans and _span_key(state.spans[-1]) != cursor.last:  # merged into the last span
            last, before = state.spans[-1], cursor.last
            span = {"role": last.role, "section": last.section, "text": last.text[before[0]:],
                    **{name: getattr(last, name) - before[1 + i] for i, name in enumerate(SPAN_FIELDS)},
                    "forced": last.forced}
        cursor.lengths = {role: len(ids) for role, ids in state.ids.items()}
        cursor.spans, cursor.last = len(state.spans), _span_key(state.spans[-1] if state.spans else None)
        cursor.open_ids = cursor.open_steps = 0
        line = {"id": state.sample_id, "prompt": cursor.prompt, "fp": self.fingerprint, "n": state.turns,
                "ids": appended, "span": span, "next": state.turn, "empty": state.empty_handovers, "finish": finish,
                **self._counters(state, cursor)}
        self._append(state.sample_id, line)

    def step_kept(self, state: "SampleState", span: "OpenSpan") -> None:
        """Append the open span's new ids after a step without a cut. Its
        request may still be going on: it counts as made, with the tokens it handed out so far
        (a restart makes a new one where the turn goes on, so a resumed sample's `steps` may be
        one more than an uninterrupted run's)."""
        cursor = self._cursors.get(state.sample_id)
        if cursor is None:
            return
        pieces = span.pieces.ids[cursor.open_ids:]
        cursor.open_ids, cursor.open_steps = len(span.pieces.ids), cursor.open_steps + 1
        handed_out = span.handed_out()
        line = {"id": state.sample_id, "prompt": cursor.prompt, "fp": self.fingerprint, "n": state.turns,
                "step": cursor.open_steps, "role": span.role, "pieces": pieces,
                "span_generated": span.generated + (handed_out or 0), **self._counters(state, cursor, handed_out)}
        self._append(state.sample_id, line)

    def sample_left(self, sample_id: str) -> None:
        """The sample left the alternation (or failed): no more lines for it in this process."""
        self._cursors.pop(sample_id, None)

    # -- the runner's side

    def done(self, sample_id: str) -> None:
        """The sample's record is written: its lines are dead (compacted away in time)."""
        self._cursors.pop(sample_id, None)
        for _, length in self._index.pop(sample_id, ()):
            self.live_bytes -= length
            self.dead_bytes += length
        if self.dead_bytes > max(self.compact_bytes, self.live_bytes):
            self._compact_now()

    def forget(self, sample_id: str) -> None:
        """The sample's lines are dead and must not be replayed (it failed, or they are unusable)."""
        self._cursors.pop(sample_id, None)
        if sample_id in self._index:
            self.done(sample_id)
            self._append(sample_id, {"id": sample_id, "reset": True}, index=False)

    def _append(self, sample_id: str, line: dict, index: bool = True) -> None:
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._fd_lock:  # a failed write (a full disk) is cut back off: never replayed
            offset = durable.append(self._fd, data, self.path, sync=self.sync_s <= 0)
            self._dirty = self.sync_s > 0
        if index:
            self._index.setdefault(sample_id, []).append((offset, len(data)))
            self.live_bytes += len(data)
        else:
            self.dead_bytes += len(data)

    def sync(self) -> None:
        """fsync the lines written so far (safe from a thread: the descriptor is duplicated)."""
        with self._fd_lock:
            if not self._dirty or self._fd < 0:
                return
            fd = os.dup(self._fd)
            self._dirty = False
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._last_sync = time.monotonic()

    async def keep_synced(self) -> None:
        """Run alongside the samples: fsync at most `sync_s` seconds after a line is written."""
        if self.sync_s <= 0:
            return
        while True:
            await asyncio.sleep(self.sync_s)
            await asyncio.to_thread(self.sync)

    def close(self) -> None:
        if self._fd >= 0:
            if self.dead_bytes:
                self._compact_now()
            self.sync()
            with self._fd_lock:
                os.close(self._fd)
                self._fd = -1


def _replay(state: "SampleState", lines: list[dict]) -> dict | None:
    """Apply a chain of lines to a fresh `state`; return the open span after the last closed turn
    ({"ids", "generated", "steps"}, None if none); raise ValueError where the chain does not fit."""
    ids = {role: list(seq) for role, seq in state.ids.items()}
    spans: list[Span] = []
    probe = type(state)(state.sample_id, ids=ids, spans=spans)
    turns, turn, empty = 0, state.turn, state.empty_handovers
    open_span: dict | None = None
    for number, line in enumerate(lines, start=1):
        if "step" in line:  # a step of the open span without a cut
            steps = open_span["steps"] if open_span else 0
            if line["n"] != turns or line["step"] != steps + 1 or line["role"] != turn:
                raise ValueError(f"line {number}: step {line['step']} of turn {line['n'] + 1} is out of order")
            if not all(isinstance(token, int) for token in line["pieces"]):
                raise ValueError(f"line {number}: bad ids")
            open_span = {"ids": (open_span["ids"] if open_span else []) + line["pieces"],
                         "generated": int(line["span_generated"]), "steps": steps + 1}
        else:
            turns += 1
            if line["n"] != turns:
                raise ValueError(f"turn {turns} is missing")
            for role, appended in line["ids"].items():
                if role not in ids or not all(isinstance(token, int) for token in appended):
                    raise ValueError(f"turn {turns}: bad ids for {role!r}")
                ids[role] += appended
            if line["span"] is not None:
                probe.add_span(Span(**line["span"]))
            if line["finish"] is not None and number != len(lines):
                raise ValueError(f"turn {turns} ended the alternation but more follow")
            if line["next"] not in ids:
                raise ValueError(f"unknown role {line['next']!r}")
            turn, empty, open_span = line["next"], int(line["empty"]), None
        if {role: len(seq) for role, seq in ids.items()} != line["lengths"]:
            raise ValueError(f"line {number} does not rebuild the sequences it wrote")
    last = lines[-1]
    state.ids, state.spans, state.turn, state.turns, state.empty_handovers = ids, spans, turn, turns, empty
    state.generated, state.steps = int(last["generated"]), int(last["steps"])
    state.generate_s = {**state.generate_s, **{role: float(s) for role, s in last["generate_s"].items()}}
    state.predict_s = float(last["predict_s"])
    return open_span
