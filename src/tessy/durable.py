"""Durable files: how tessy writes anything that must survive a crash. The writers (the run
folder, the journal, merge, verify, export, predictor training, view, the model cache) say what to
write; this module says how. It knows nothing of tessy.

Promises:
- Append-only lines: `append` puts whole lines on an `O_APPEND` descriptor (`open_append`) with
  one `os.write`, then fsyncs unless told not to; a write that fails or comes up short is cut back
  off the file, so nothing of it lands later.
- Torn-tail repair: after a crash mid-write a file may end in a line without its newline.
  `repair_tail` truncates that line away, or, when it is a complete JSON object, restores its
  newline. It reads only the last line (scanning back from the end), never the whole file.
- Atomic replace: `replacing(path)` (a file to write into) and `write_atomic(path, data)` write a
  temporary file beside `path`, fsync it, rename it over `path` and fsync the folder: a crash
  leaves the old file or the new one, never half of one. An error removes the temporary file and
  leaves `path` as it was.
- Folder swap: `new_folder(target)` gives an empty temporary folder beside `target`; when the
  block ends cleanly every file and folder in it is fsynced, an existing `target` is moved aside
  (to ``.NAME.old…``), the new folder renamed into place, the old one removed and the parent
  fsynced. An error removes the temporary folder and leaves `target` as it was. (A crash between
  the two renames leaves the old folder as ``.NAME.old…`` beside a missing `target`.)
- fsync by path, of a file or of a folder (so a rename in it is durable): `fsync_path`.
- Exclusive lock: `lock(path)` takes a non-blocking `flock` on `path` and returns the descriptor
  (closing it releases the lock). Held by another process (EWOULDBLOCK): `LockHeld`. A file
  system without locks (ENOSYS, ENOLCK, EOPNOTSUPP: NFS without lockd, Lustre without
  ``-o flock``): `NoLocks`, naming the cause and the path, never reported as "in use"; any other
  error is an OSError naming the path. Not POSIX (no `fcntl`): nothing to lock, `lock` gives None.

`unique=True` gives the temporary file or folder a name of its own, for a target that several
processes may write at once (a shared cache, an export); by default it is ``.NAME.tmp`` (a file:
``NAME.tmp``), so one that a crash left behind is replaced by the next write instead of piling up.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: errno values by which `flock` says that the file system has no locks at all
NO_LOCKS_ERRNOS = frozenset({errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP})


class LockHeld(RuntimeError):
    """Another process holds the lock."""


class NoLocks(RuntimeError):
    """The file system refuses `flock` altogether."""


def fsync_path(path: str | os.PathLike) -> None:
    """fsync the file or folder at `path`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- append-only lines


def open_append(path: str | os.PathLike, readable: bool = False) -> int:
    """A descriptor appending to `path` (created if missing); `readable` also allows `os.pread`."""
    return os.open(path, (os.O_RDWR if readable else os.O_WRONLY) | os.O_APPEND | os.O_CREAT, 0o644)


def append(fd: int, data: bytes, path: str | os.PathLike, sync: bool = True) -> int:
    """Append `data` (whole lines) to `fd` (from `open_append`, for `path`) in one write, fsync
    unless `sync` is False, and return the offset it starts at; a failed write leaves nothing."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        written = os.write(fd, data)  # O_APPEND: one write lands whole at the end, or fails
        if written != len(data):
            raise OSError(f"short write to {path} ({written} of {len(data)} bytes)")
        if sync:
            os.fsync(fd)
    except BaseException:
        try:  # nothing of a failed line may stay behind
            if os.fstat(fd).st_size > start:
                os.ftruncate(fd, start)
        except OSError:
            log.exception("%s: could not undo a failed write", path)
        raise
    return start


def repair_tail(path: str | os.PathLike) -> None:
    """Make `path` end on a newline: drop (or, if a complete JSON object, close) a torn last line."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return
    size = path.stat().st_size
    with open(path, "rb+") as file:
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return
        position, start = size, 0
        while position > 0:  # the start of the last line, scanning back in blocks
            step = min(65536, position)
            position -= step
            file.seek(position)
            newline = file.read(step).rfind(b"\n")
            if newline >= 0:
                start = position + newline + 1
                break
        file.seek(start)
        tail = file.read()
        try:
            complete = isinstance(json.loads(tail.decode("utf-8")), dict)
        except (UnicodeDecodeError, json.JSONDecodeError):
            complete = False
        if complete:
            file.seek(size)
            file.write(b"\n")
            log.warning("%s: last line had no newline but is complete; newline restored", path)
        else:
            file.truncate(start)
            log.warning("%s: removed a torn last line (%d bytes at byte %d), left by a crash mid-write",
                        path, size - start, start)
        file.flush()
        os.fsync(file.fileno())


# ---------------------------------------------------------------------------- atomic replace


@contextmanager
def replacing(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
              unique: bool = False) -> Iterator[IO]:
    """A file to write the new `path` into; it replaces `path` when the block ends cleanly."""
    path = Path(path)
    if unique:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.chmod(name, 0o644)
        tmp, file = Path(name), os.fdopen(handle, mode, encoding=encoding)
    else:
        tmp = path.with_name(path.name + ".tmp")
        file = open(tmp, mode, encoding=encoding)
    try:
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace `path` with `data` (a str is written as UTF-8)."""
    with replacing(path) as file:
        file.write(data.encode("utf-8") if isinstance(data, str) else data)


# ---------------------------------------------------------------------------- folder swap


@contextmanager
def new_folder(target: str | os.PathLike, replace: bool = True, unique: bool = False) -> Iterator[Path]:
    """An empty folder to build the new `target` in; it takes `target`'s place when the block ends
    cleanly. An existing `target` is replaced, or, with `replace=False`, the rename fails (OSError)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if unique:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    else:
        staging = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(staging, ignore_errors=True)  # left by a crash
        staging.mkdir()
    old = target.with_name(f".{target.name}.old" + staging.name[len(f".{target.name}.tmp"):])
    try:
        yield staging
        for root, _, files in os.walk(staging, topdown=False):
            for name in files:
                fsync_path(os.path.join(root, name))
            fsync_path(root)
        if replace and target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            try:
                staging.rename(target)
            except BaseException:
                old.rename(target)  # put the old one back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
        fsync_path(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------- the lock


def lock(path: str | os.PathLike, create: bool = True) -> int | None:
    """Hold an exclusive `flock` on `path` (created if missing, unless `create` is False) without
    waiting; return its descriptor, or None when there is nothing to lock (not POSIX, or no file
    and `create` False). Raises `LockHeld` or `NoLocks` (see the module docstring)."""
    path = Path(path)
    if fcntl is None or (not create and not path.exists()):
        return None
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise LockHeld(f"{path} is locked by another process") from None
        cause = f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}"
        if exc.errno in NO_LOCKS_ERRNOS:
            raise NoLocks(f"cannot lock {path}: its file system has no file locks (flock failed with {cause}); "
                          "put the folder on a file system with locks (a local disk, NFS with lockd, Lustre "
                          "mounted with -o flock)") from None
        raise OSError(exc.errno, f"cannot lock {path} ({cause})") from None
    return fd
