"""tessy.durable, promise by promise: appends that leave nothing of a failed line, torn-tail repair
that reads only the tail, atomic replace, folder swap, fsync by path, and a lock whose errors tell
"held by another process" from "this file system has no locks"."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tessy import durable
from tessy.store import RunOutput

# ---------------------------------------------------------------------------- append


def test_append_returns_offsets_and_fsyncs(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    fd = durable.open_append(path)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda f: (synced.append(f), real_fsync(f)))
    try:
        assert durable.append(fd, b'{"n": 1}\n', path) == 0
        assert durable.append(fd, b'{"n": 2}\n', path, sync=False) == 9
    finally:
        os.close(fd)
    assert synced == [fd]  # the first append only
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n'


def test_a_failed_or_short_append_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    fd = durable.open_append(path)
    real_write = os.write

    def half_then_fail(f, data):
        real_write(f, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    try:
        durable.append(fd, b'{"n": 1}\n', path)
        monkeypatch.setattr(os, "write", half_then_fail)
        with pytest.raises(OSError, match="No space"):
            durable.append(fd, b'{"n": 2}\n', path)
        monkeypatch.setattr(os, "write", lambda f, data: real_write(f, data[:3]))
        with pytest.raises(OSError, match=rf"short write to {path} \(3 of 9 bytes\)"):
            durable.append(fd, b'{"n": 3}\n', path)
        monkeypatch.setattr(os, "write", real_write)
        durable.append(fd, b'{"n": 4}\n', path)
    finally:
        os.close(fd)
    assert path.read_bytes() == b'{"n": 1}\n{"n": 4}\n'


# ---------------------------------------------------------------------------- torn tail


def test_torn_tail_is_cut_off_and_a_complete_one_closed(tmp_path, caplog):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2')
    with caplog.at_level("WARNING", logger="tessy.durable"):
        durable.repair_tail(path)
    assert path.read_bytes() == b'{"n": 1}\n'
    assert f"{path}: removed a torn last line (7 bytes at byte 9)" in caplog.text
    path.write_bytes(b'{"n": 1}\n{"n": 2}')
    durable.repair_tail(path)
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n'
    path.write_bytes(b'[1, 2]')  # complete JSON, but not an object: not a line of ours
    durable.repair_tail(path)
    assert path.read_bytes() == b""
    for clean in (b"", b'{"n": 1}\n'):
        path.write_bytes(clean)
        durable.repair_tail(path)
        assert path.read_bytes() == clean
    durable.repair_tail(tmp_path / "missing.jsonl")
    assert not (tmp_path / "missing.jsonl").exists()


def test_torn_tail_repair_reads_only_the_tail(tmp_path, monkeypatch):
    """An 8 MB file with a torn last line: the repair reads about one 64 KiB block, not 8 MB."""
    path = tmp_path / "big.jsonl"
    line = json.dumps({"text": "x" * 1000}).encode() + b"\n"
    body = line * 8000
    path.write_bytes(body + b'{"text": "torn')
    read = []
    real_open = open

    class Counting:
        def __init__(self, file):
            self.file = file

        def read(self, *args):
            data = self.file.read(*args)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(durable, "open", lambda *a, **k: Counting(real_open(*a, **k)), raising=False)
    durable.repair_tail(path)
    assert path.read_bytes() == body
    assert 0 < sum(read) <= 2 * 65536, read


# ---------------------------------------------------------------------------- atomic replace


def test_replace_writes_new_content_and_syncs_before_and_after_the_rename(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    path.write_text("old\n")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.path.realpath(f"/proc/self/fd/{fd}")
        events.append(("fsync", "folder" if os.path.isdir(target) else os.path.basename(target)))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", os.path.basename(b))),
                                                       real_replace(a, b)))
    durable.write_atomic(path, "new ✓\n")
    assert events == [("fsync", "run.json.tmp"), ("replace", "run.json"), ("fsync", "folder")]
    assert path.read_text(encoding="utf-8") == "new ✓\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_replace_that_fails_leaves_the_old_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("old\n")
    for unique in (False, True):
        with pytest.raises(RuntimeError, match="bad row"):
            with durable.replacing(path, "w", encoding="utf-8", unique=unique) as file:
                file.write("half of the new")
                raise RuntimeError("bad row")
        assert path.read_text() == "old\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]  # no temp file left
    with durable.replacing(path, unique=True) as file:
        file.write(b"new\n")
    assert path.read_text() == "new\n" and oct(path.stat().st_mode & 0o777) == "0o644"


def test_replace_killed_mid_write_leaves_the_old_file_whole(tmp_path):
    """A process killed with half of the new content written: the file is the old one, whole."""
    path = tmp_path / "data.txt"
    path.write_text("old " * 1000)
    script = textwrap.dedent(f"""
        import time
        from tessy import durable
        with durable.replacing({str(path)!r}, "w") as file:
            file.write("new " * 500)
            file.flush()
            print("half", flush=True)
            time.sleep(60)
            file.write("new " * 500)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half"
    finally:
        proc.kill()
        proc.wait()
    assert path.read_text() == "old " * 1000
    durable.write_atomic(path, "new " * 1000)  # the next write replaces the leftover temp file
    assert path.read_text() == "new " * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]


# ---------------------------------------------------------------------------- folder swap


def test_new_folder_without_and_with_an_existing_target(tmp_path):
    target = tmp_path / "out"
    for unique in (True, False):
        with durable.new_folder(target, unique=unique) as staging:
            assert staging.parent == tmp_path and staging.name.startswith(".out.tmp") and not target.exists()
            (staging / "sub").mkdir()
            (staging / "sub" / "a.txt").write_text("first")
        assert (target / "sub" / "a.txt").read_text() == "first"
        with durable.new_folder(target, unique=unique) as staging:
            (staging / "b.txt").write_text("second")
            assert (target / "sub" / "a.txt").exists()  # the old one stays until the swap
        assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left beside it
        (target / "b.txt").unlink()
        target.rmdir()


def test_new_folder_that_fails_leaves_the_target(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(ValueError, match="bad record"):
        with durable.new_folder(target, unique=True) as staging:
            (staging / "half.txt").write_text("half")
            raise ValueError("bad record")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OSError):  # replace=False: an existing target is kept, the rename refused
        with durable.new_folder(target, replace=False, unique=True) as staging:
            (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_new_folder_puts_the_old_target_back_when_the_swap_fails(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_rename = Path.rename

    def rename(self, to):
        if self.name.startswith(".out.tmp"):
            raise OSError(errno.EIO, "I/O error")
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="I/O error"):
        with durable.new_folder(target, unique=True) as staging:
            (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_new_folder_fsyncs_every_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.path.realpath(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd)))
    with durable.new_folder(tmp_path / "out") as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "a").write_text("a")
        (staging / "b").write_text("b")
    built = str(tmp_path.resolve() / ".out.tmp")
    assert sorted(synced[:-1]) == sorted([f"{built}/sub/a", f"{built}/sub", f"{built}/b", built])
    assert synced[-1] == str(tmp_path.resolve())  # the parent, after the rename


def test_fsync_path_takes_files_and_folders(tmp_path):
    (tmp_path / "f").write_text("x")
    durable.fsync_path(tmp_path / "f")
    durable.fsync_path(tmp_path)
    with pytest.raises(FileNotFoundError):
        durable.fsync_path(tmp_path / "missing")


# ---------------------------------------------------------------------------- the lock


def test_lock_held_by_another_process(tmp_path):
    path = tmp_path / ".lock"
    script = textwrap.dedent(f"""
        import time
        from tessy import durable
        fd = durable.lock({str(path)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(durable.LockHeld, match=rf"^{path} is locked by another process$"):
            durable.lock(path)
    finally:
        proc.kill()
        proc.wait()
    fd = durable.lock(path)  # released when its holder died
    assert fd is not None
    os.close(fd)


def test_lock_on_a_file_system_without_locks(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    path = tmp_path / ".lock"
    with pytest.raises(durable.NoLocks) as caught:
        durable.lock(path)
    message = str(caught.value)
    assert str(path) in message and "no file locks" in message and "ENOLCK" in message
    assert "another process" not in message and "in use" not in message
    # The run folder says the same, not "in use by another tessy process".
    with pytest.raises(durable.NoLocks, match=rf"cannot lock {tmp_path / 'run' / '.lock'}: .*ENOLCK"):
        RunOutput(tmp_path / "run", "fp", {})


def test_lock_other_errors_name_the_path(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setattr(fcntl, "flock", lambda fd, op: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match=rf"cannot lock {tmp_path / '.lock'} \(EIO: I/O error\)"):
        durable.lock(tmp_path / ".lock")


def test_lock_without_create_and_release_on_close(tmp_path):
    assert durable.lock(tmp_path / ".lock", create=False) is None
    assert not (tmp_path / ".lock").exists()
    fd = durable.lock(tmp_path / ".lock")
    with pytest.raises(durable.LockHeld):  # flock is per open file: a second open here is refused too
        durable.lock(tmp_path / ".lock", create=False)
    os.close(fd)
    os.close(durable.lock(tmp_path / ".lock", create=False))
