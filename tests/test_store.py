"""The run folder (tessy.store): exactly-once appends, torn-line repair, resume, fingerprints,
durable metadata, and a failed append that leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tessy.records import read_records, validate_record
from tessy.store import (FAILURES_FILE, RECORDS_FILE, REJECTS_FILE, RUN_FILE, RunMismatchError, RunOutput,
                         config_fingerprint)
from tests.test_records import CONFIG, FP, make_record


def open_run(folder, fingerprint=FP, config=CONFIG, **kwargs):
    return RunOutput(folder, fingerprint, config, validate=validate_record, **kwargs)


# ---------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_short():
    a = config_fingerprint({"k": 20, "teacher": "t", "nested": {"b": 1, "a": 2}})
    b = config_fingerprint({"nested": {"a": 2, "b": 1}, "teacher": "t", "k": 20})
    assert a == b and len(a) == 16 and int(a, 16) >= 0
    assert config_fingerprint({"k": 21, "teacher": "t", "nested": {"b": 1, "a": 2}}) != a
    # keys named in `ignore` do not count
    assert config_fingerprint({**CONFIG, "output": "/x"}, ignore=("output",)) == FP


# ---------------------------------------------------------------------------- writing


def test_write_and_read_back(tmp_path):
    out = open_run(tmp_path / "run")
    assert out.write_record(make_record("a"))
    assert out.write_record(make_record("b"))
    out.close()
    meta = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert meta["fingerprint"] == FP and meta["config"] == CONFIG
    recs = list(read_records(tmp_path / "run" / RECORDS_FILE))
    assert [r["id"] for r in recs] == ["a", "b"]
    assert recs[0] == make_record("a")
    assert [r["id"] for r in read_records(tmp_path / "run")] == ["a", "b"]  # folder works too


def test_no_duplicate_on_double_write(tmp_path):
    with open_run(tmp_path) as out:
        assert out.write_record(make_record("a")) is True
        assert out.write_record(make_record("a")) is False
        assert out.is_done("a") and out.done_ids == {"a"}
    with open_run(tmp_path) as out:  # and across a rerun
        assert out.write_record(make_record("a")) is False
        assert out.write_record(make_record("b")) is True
    lines = (tmp_path / RECORDS_FILE).read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b"]


def test_invalid_record_not_written(tmp_path):
    with open_run(tmp_path) as out:
        bad = make_record("x")
        bad["finish_reason"] = "nope"
        with pytest.raises(ValueError, match="finish_reason"):
            out.write_record(bad)
        assert not out.is_done("x")
    assert (tmp_path / RECORDS_FILE).read_text() == ""


def test_torn_last_line_repaired(tmp_path, caplog):
    with open_run(tmp_path) as out:
        out.write_record(make_record("a"))
        out.write_record(make_record("b"))
    path = tmp_path / RECORDS_FILE
    good = path.read_bytes()
    torn = json.dumps(make_record("c")).encode()[:57]  # a crash mid-write
    path.write_bytes(good + torn)
    assert [r["id"] for r in read_records(path)] == ["a", "b"]  # readers tolerate it
    with caplog.at_level("WARNING", logger="tessy.store"):
        out = open_run(tmp_path)
    assert "torn" in caplog.text
    assert path.read_bytes() == good
    assert out.done_ids == {"a", "b"} and not out.is_done("c")
    assert out.write_record(make_record("c"))
    out.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "b", "c"]


def test_complete_last_line_without_newline_kept(tmp_path):
    (tmp_path / RECORDS_FILE).write_text(json.dumps(make_record("a")))
    with open_run(tmp_path) as out:
        assert out.done_ids == {"a"}
        out.write_record(make_record("b"))
    assert [r["id"] for r in read_records(tmp_path)] == ["a", "b"]


def test_corrupt_middle_line_raises(tmp_path):
    (tmp_path / RECORDS_FILE).write_text('{"id": "a"}\n{oops\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(read_records(tmp_path))


def test_kill_9_mid_run_leaves_whole_records(tmp_path):
    """A writer killed abruptly leaves only whole lines or one torn tail, which reopen repairs."""
    script = f"""
import sys
sys.path.insert(0, {str(os.path.dirname(__file__) + '/..')!r})
from tests.test_records import make_record, FP, CONFIG
from tessy.store import RunOutput
out = RunOutput({str(tmp_path)!r}, FP, CONFIG)
for i in range(100000):
    out.write_record(make_record(f"id{{i}}"))
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    path = tmp_path / RECORDS_FILE
    import time
    deadline = time.time() + 10
    while time.time() < deadline and (not path.exists() or path.stat().st_size < 20000):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    with open_run(tmp_path) as out:
        n = len(out.done_ids)
        assert n > 0
        assert out.write_record(make_record("after"))
    ids = [r["id"] for r in read_records(tmp_path)]
    assert ids == [f"id{i}" for i in range(n)] + ["after"]


def test_fingerprint_mismatch(tmp_path):
    with open_run(tmp_path) as out:
        out.write_record(make_record("a"))
    other = {**CONFIG, "k": 32}
    with pytest.raises(RunMismatchError, match="another config.*new output folder.*overwrite"):
        open_run(tmp_path, config_fingerprint(other), other)
    # overwrite=True starts afresh
    with open_run(tmp_path, config_fingerprint(other), other, overwrite=True) as out:
        assert out.done_ids == set()
    assert json.loads((tmp_path / RUN_FILE).read_text())["config"]["k"] == 32
    assert not (tmp_path / RECORDS_FILE).read_text()


def test_folder_lock(tmp_path):
    out = open_run(tmp_path)
    try:
        code = ("import sys; from tessy.store import RunOutput, RunLockedError\n"
                f"try:\n RunOutput({str(tmp_path)!r}, {FP!r}, {{}})\n"
                "except RunLockedError: sys.exit(3)\n")
        assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    finally:
        out.close()
    open_run(tmp_path).close()  # released


def test_failures_and_retries(tmp_path):
    with open_run(tmp_path) as out:
        out.write_failure("x", "TimeoutError: server", 1)
        out.write_failure("x", "TimeoutError: server", 2)
        out.write_failure("y", "ValueError", 1)
        assert out.failed_attempts("x") == 2 and out.failed_attempts("z") == 0
    with open_run(tmp_path) as out:
        assert out.failed_attempts("x") == 2 and out.failed_attempts("y") == 1
        assert out.failed_ids == {"x", "y"}
        out.write_record(make_record("y"))  # the retry of y succeeded
        assert out.failed_ids == {"x"}
    rows = [json.loads(x) for x in (tmp_path / FAILURES_FILE).read_text().splitlines()]
    assert rows[0]["id"] == "x" and rows[0]["attempt"] == 1 and "time" in rows[0]


def test_rejects_logged_once(tmp_path):
    for _ in range(2):  # a rerun re-reads the input and rejects the same lines
        with open_run(tmp_path) as out:
            out.write_reject(3, "line 3: malformed JSON")
            out.write_reject(7, "line 7: duplicate id 'q'", sample_id="q")
    rows = [json.loads(x) for x in (tmp_path / REJECTS_FILE).read_text().splitlines()]
    assert [(r["line"], r["id"]) for r in rows] == [(3, None), (7, "q")]




def test_failed_append_leaves_nothing_behind(tmp_path, monkeypatch):
    """A write that fails half-way (disk full) is cut back off the file: the record logged as
    failed never appears in records.jsonl, and the next append starts on a clean line."""
    import errno

    import tessy.store

    real_write = os.write

    def half_then_fail(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    with open_run(tmp_path) as out:
        out.write_record(make_record("a"))
        monkeypatch.setattr(tessy.store.os, "write", half_then_fail)
        with pytest.raises(OSError, match="No space"):
            out.write_record(make_record("b"))
        monkeypatch.setattr(tessy.store.os, "write", lambda fd, data: real_write(fd, data[:10]))
        with pytest.raises(OSError, match="short write"):
            out.write_record(make_record("b"))
        monkeypatch.setattr(tessy.store.os, "write", real_write)
        assert not out.is_done("b")
        out.write_failure("b", "OSError: No space left on device", 1)
        assert out.write_record(make_record("c"))
    assert [r["id"] for r in read_records(tmp_path)] == ["a", "c"]
    with open_run(tmp_path) as out:
        assert out.done_ids == {"a", "c"} and out.failed_ids == {"b"}


def test_kill_9_during_a_stalled_append(tmp_path):
    """A process killed in the middle of an append (half its line written) loses only that line."""
    with open_run(tmp_path) as out:
        out.write_record(make_record("a"))
    script = f"""
import os, sys, time
sys.path.insert(0, {str(os.path.dirname(__file__) + '/..')!r})
import tessy.store
from tessy.records import validate_record
from tests.test_records import make_record, FP, CONFIG
real_write = os.write
def stall(fd, data):
    real_write(fd, data[: len(data) // 2])
    print("stalled", flush=True)
    time.sleep(60)
tessy.store.os.write = stall
out = tessy.store.RunOutput({str(tmp_path)!r}, FP, CONFIG, validate=validate_record)
out.write_record(make_record("b"))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "stalled"
    proc.kill()
    proc.wait()
    assert not (tmp_path / RECORDS_FILE).read_bytes().endswith(b"\n")  # the torn half line
    with open_run(tmp_path) as out:
        assert out.done_ids == {"a"}
        assert out.write_record(make_record("b"))
    assert [r["id"] for r in read_records(tmp_path)] == ["a", "b"]


def test_run_json_is_synced_before_and_after_its_rename(tmp_path, monkeypatch):
    import tessy.store

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(tessy.store.os, "fsync", lambda fd: (events.append(("fsync", os.path.isdir(
        f"/proc/self/fd/{fd}") and os.path.realpath(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
    monkeypatch.setattr(tessy.store.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    open_run(tmp_path).close()
    replace = events.index(("replace", str(tmp_path / RUN_FILE)))
    assert events[replace - 1][0] == "fsync" and events[replace - 1][1] is False  # the temp file
    assert events[replace + 1] == ("fsync", str(tmp_path.resolve()))  # then the folder
    assert json.loads((tmp_path / RUN_FILE).read_text())["fingerprint"] == FP
    assert not list(tmp_path.glob("*.tmp"))
