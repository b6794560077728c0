"""The lock of a run folder: ``run.lock``, ``flock``-ed by the process that runs it (rank 0 under
torchrun), so the OS releases it when that process ends, however it ends. Nobody waits for it:
a held lock is a refusal at once, naming the holder's pid."""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import time
from pathlib import Path

from lrsched.errors import UsageError

LOCK_FILE = "run.lock"
LOCK_NOTE = (
    "# the process above holds a lock on this file while it runs this folder's run; once it has "
    "ended, however it ended, nothing is locked and this file is only a leftover (safe to keep or delete)"
)
"""The plain words under the pid in ``run.lock``: a leftover file with a dead pid is not alarming."""


class RunDirError(UsageError):
    """The output folder cannot be used by this command (one line, exit status 2)."""


def now() -> str:
    """The time in UTC, to the second, as run.json and run.lock write it."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


_HELD: dict[int, tuple[int, int]] = {}
"""Lock fds this process holds, with their files' (device, inode). A forked child (a DataLoader
worker) shares the lock with its parent, and would keep the folder locked after the parent is
killed: children close them (only fds that still are those files)."""


def _drop_inherited_locks() -> None:
    for fd, file in _HELD.items():
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == file:
                os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def release_lock(fd: int) -> None:
    """Release a lock ``acquire_lock`` took (closing its fd)."""
    _HELD.pop(fd, None)
    os.close(fd)


def _holder(fd: int) -> str:
    """What the lock file says about its holder (it writes its pid just after locking)."""
    for _ in range(20):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "pid unknown"


def _in_use(path: Path, output_flag: str, holder: str) -> RunDirError:
    pid = holder.split()[0] if holder.split() and holder.split()[0].isdigit() else holder
    return RunDirError(
        f"{output_flag} {path}: in use by another process (pid {pid}); "
        "wait for it to end or stop it, or choose another folder"
    )


def check_not_in_use(path: Path, output_flag: str = "--output-dir") -> None:
    """Refuse a folder whose ``run.lock`` another process holds; creates nothing (no lock file, no lock kept)."""
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody runs here
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            raise _in_use(path, output_flag, _holder(fd)) from None
    finally:
        os.close(fd)


def acquire_lock(path: Path, program: str, output_flag: str = "--output-dir") -> int:
    """``flock`` ``path/run.lock`` (exclusive, not waiting) and write our pid in it; returns the fd.

    A held lock raises ``RunDirError`` naming the holder's pid. Close the fd to release it; the
    OS releases it when the process ends, however it ends.
    """
    lock = path / LOCK_FILE
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        why = f"cannot create {LOCK_FILE} ({os.strerror(err.errno or 0)})"
        raise RunDirError(f"{output_flag} {path}: {why}; choose another folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = _holder(fd) if err.errno in (errno.EAGAIN, errno.EACCES) else None
        os.close(fd)
        if holder is None:
            reason = os.strerror(err.errno or 0)
            raise RunDirError(f"{output_flag} {path}: cannot lock {LOCK_FILE} ({reason})") from None
        raise _in_use(path, output_flag, holder) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {program} {now()}\n{LOCK_NOTE}\n".encode())
    st = os.fstat(fd)
    _HELD[fd] = (st.st_dev, st.st_ino)
    return fd
