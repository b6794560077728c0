"""One run per folder: a run id written at creation, and an exclusive lock held for the whole run.

An output folder holds at most one run. ``run.json`` (written when the run is created) gives
its id, the program and the time; every checkpoint records the id (``save_checkpoint(...,
run_id=)``). ``run.lock`` is ``flock``-ed by the process that runs it (rank 0 under torchrun),
so the OS releases it when that process ends, however it ends.

``claim_run_dir`` decides what a command may do with a folder, before it changes anything:

==========================================  ==================================================
folder                                      fresh start / resume from checkpoint C of run R
==========================================  ==================================================
missing, empty, or no run files             new run / continues R here (run.json gets R's id)
run X with checkpoints                      refused (resume it, or overwrite) / R == X: go on;
                                            R != X: refused naming both (or overwrite: replace)
run X without a checkpoint (early crash)    restarts cleanly: old run files cleared, new id
run files but no run.json (older lrsched)   refused unless overwrite / C inside it: adopted
a run of another program                    refused
another process holds the lock              refused at once, naming its pid
==========================================  ==================================================

Refusals are ``RunDirError`` (a ``UsageError``: one line, exit status 2) and leave the folder
as it was (at most an empty folder's new ``run.lock`` remains).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsched.atomic import atomic_write
from lrsched.errors import UsageError
from lrsched.recipes.common.checkpoint import latest_checkpoint
from lrsched.recipes.common.distributed import World

RUN_FILE = "run.json"
LOCK_FILE = "run.lock"
CHECKPOINTS = "checkpoints"


class RunDirError(UsageError):
    """The output folder cannot be used by this command (one line, exit status 2)."""


@dataclass(frozen=True)
class RunInfo:
    """What ``run.json`` says: the run's id, the program that created it, when, and from where."""

    id: str
    program: str
    created: str
    resumed_from: str | None = None

    def describe(self) -> str:
        return f"run {self.id} ({self.program}, created {self.created})"


@dataclass(frozen=True)
class Decision:
    """What ``check_run_dir`` allows: the run id to use (None: a new one) and whether to clear old run files."""

    run_id: str | None
    clear: bool
    existing: RunInfo | None


@dataclass(frozen=True)
class RunDir:
    """A claimed output folder: the run's id, and whether this command created it (``new``)."""

    path: Path
    program: str
    run_id: str
    created: str
    new: bool
    cleared: bool


def new_run_id() -> str:
    """A fresh run id: UTC time and 8 random hex digits, e.g. ``20250101-120000-1a2b3c4d``."""
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def printable(text: str) -> str:
    """``text`` (a path or a folder name) as valid Unicode for a figure's title.

    A name that is not UTF-8 reaches Python as surrogate escapes (``os.fsdecode``), which text
    renderers refuse: they become U+FFFD. ``$`` is escaped, so that matplotlib never reads a name
    as mathematics."""
    clean = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
    return clean.replace("$", r"\$")


def print_any_path() -> None:
    """Let stdout print any path: a folder name that is not UTF-8 goes out as its own bytes.

    Under a UTF-8 locale Python's stdout is strict, and printing such a name (held as surrogate
    escapes) would raise; stderr already escapes what it cannot encode. A program calls this once
    at its start."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and getattr(sys.stdout, "errors", None) == "strict":
        reconfigure(errors="surrogateescape")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_run(path: Path, output_flag: str = "--output-dir") -> RunInfo | None:
    """``run.json`` of the folder ``path``, or None when there is none."""
    file = path / RUN_FILE
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
        return RunInfo(str(data["id"]), str(data["program"]), str(data["created"]), data.get("resumed_from"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunDirError(
            f"{output_flag} {path}: {RUN_FILE} is unreadable ({type(err).__name__}); "
            "choose another folder or remove the file"
        ) from None


def check_output_path(path: Path, output_flag: str = "--output-dir") -> None:
    """The folder exists as a folder, or can be created: no symlink loop, no file in the way, writable."""
    probe = path
    while True:
        try:
            st = os.stat(probe)
        except OSError as err:
            if err.errno == errno.ENOENT and probe.parent != probe:
                probe = probe.parent
                continue
            if err.errno == errno.ELOOP:
                raise RunDirError(f"{output_flag} {path}: a symbolic link loop ({probe})") from None
            if err.errno == errno.ENOTDIR:
                raise RunDirError(f"{output_flag} {path}: a path under a file, not a folder") from None
            raise RunDirError(f"{output_flag} {path}: unusable ({os.strerror(err.errno or 0)})") from None
        break
    if not stat.S_ISDIR(st.st_mode):
        where = "exists and is not a directory" if probe == path else f"{probe} is a file, not a folder"
        raise RunDirError(f"{output_flag} {path}: {where}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"{output_flag} {path}: {probe} is not writable")
    failure = write_probe(probe)
    if failure is not None:
        reason = os.strerror(failure.errno or 0) if failure.errno else type(failure).__name__
        raise RunDirError(f"{output_flag} {path}: cannot write in {probe} ({reason}); choose another folder")


def write_probe(folder: Path) -> OSError | None:
    """Whether a file can be created in ``folder``: None when it can, else the error.

    ``os.access`` trusts the mode bits, which root and special file systems (``/proc``, ``/sys``,
    read-only mounts) do not honour, so a real file is tried: an unnamed one (``O_TMPFILE``, never
    visible) where the file system supports it, else a hidden one removed at once.
    """
    try:
        os.close(os.open(folder, os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | os.O_CLOEXEC, 0o600))
        if hasattr(os, "O_TMPFILE"):
            return None
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return err
    name = folder / f".lrsched-write-probe-{secrets.token_hex(4)}"
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as err:
        return err
    with contextlib.suppress(OSError):
        name.unlink()
    return None


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def check_run_dir(
    path: Path,
    program: str,
    resume: Mapping[str, Any] | None = None,
    *,
    resume_path: Path | None = None,
    run_files: Sequence[str] = (),
    overwrite: bool = False,
    output_flag: str = "--output-dir",
    resume_flag: str = "--resume",
    overwrite_flag: str | None = None,
    locked: bool = False,
    world: World | None = None,
) -> Decision:
    """Whether ``program`` may start (``resume`` None) or continue ``resume`` in ``path``; changes nothing.

    ``resume`` is the loaded checkpoint (its ``run_id`` is compared with the folder's);
    ``run_files`` are the names a run of this program leaves in its folder (to recognise a
    folder used by an older version without ``run.json``); ``overwrite`` is the program's
    replace flag (``overwrite_flag``, None when the program has none). ``locked``: the caller
    holds the folder's lock (``claim_run_dir`` checks again under it). Under torchrun (``world``)
    rank 0 alone looks and every rank gets its answer, so that they all refuse or all go on.
    """
    if world is not None and world.distributed:
        answer: Decision | str
        if world.is_main:
            try:
                answer = check_run_dir(
                    path,
                    program,
                    resume,
                    resume_path=resume_path,
                    run_files=run_files,
                    overwrite=overwrite,
                    output_flag=output_flag,
                    resume_flag=resume_flag,
                    overwrite_flag=overwrite_flag,
                    locked=locked,
                )
            except RunDirError as err:
                answer = str(err)
        else:
            answer = ""
        answer = _from_rank0(answer)
        if isinstance(answer, str):
            raise RunDirError(answer)
        return answer
    check_output_path(path, output_flag)
    if not locked:
        check_not_in_use(path, output_flag)  # a live run's folder: say so, whatever it holds
    where = f"{output_flag} {path}"
    info = read_run(path, output_flag) if path.is_dir() else None
    files = [n for n in run_files if (path / n).exists()] if path.is_dir() else []
    has_checkpoint = latest_checkpoint(path / CHECKPOINTS) is not None
    replace = f"pass {overwrite_flag} to replace it or choose" if overwrite_flag else "choose"
    if info is not None and info.program != program:
        raise RunDirError(f"{where}: holds a {info.describe()}, not a {program} run; choose another folder")
    if resume is None:
        if info is not None:
            if has_checkpoint and not overwrite:
                raise RunDirError(
                    f"{where}: holds {info.describe()} with checkpoints; "
                    f"pass {resume_flag} latest to continue it, or {replace} another folder"
                )
            return Decision(None, clear=True, existing=info)  # overwrite, or a run that never saved
        if files and not overwrite:
            raise RunDirError(
                f"{where}: holds files of a run without {RUN_FILE} ({', '.join(files)}; an older lrsched?); "
                f"{replace} another folder"
            )
        return Decision(None, clear=bool(files), existing=None)
    resume_id = resume.get("run_id")
    own = resume_path is not None and _inside(resume_path, path / CHECKPOINTS)
    shown = f"{resume_flag} {resume_path}" if resume_path is not None else resume_flag
    theirs = f"run {resume_id}" if resume_id else "a run with no id"
    if info is not None:
        if (resume_id is not None and resume_id == info.id) or (resume_id is None and own):
            return Decision(info.id, clear=False, existing=info)
        if overwrite:
            return Decision(resume_id, clear=True, existing=info)
        also = f", or pass {overwrite_flag} to replace run {info.id}" if overwrite_flag else ""
        raise RunDirError(
            f"{shown}: a checkpoint of {theirs}, but {where} holds another, {info.describe()}; "
            f"resume into another folder{also}"
        )
    if files and not own and not overwrite:
        raise RunDirError(
            f"{shown}: a checkpoint of {theirs}, but {where} holds files of another run "
            f"({', '.join(files)}); resume into a new folder"
        )
    return Decision(resume_id, clear=bool(files) and not own, existing=None)


# ---------------------------------------------------------------- the lock

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
    os.write(fd, f"{os.getpid()} {program} {_now()}\n".encode())
    st = os.fstat(fd)
    _HELD[fd] = (st.st_dev, st.st_ino)
    return fd


def write_run_file(path: Path, info: RunInfo) -> None:
    """``run.json``, atomically and durably."""
    data = {"id": info.id, "program": info.program, "created": info.created, "resumed_from": info.resumed_from}
    with atomic_write(path / RUN_FILE, durable=True) as f:
        f.write(json.dumps(data, indent=2) + "\n")


def _clear(path: Path, run_files: Sequence[str]) -> None:
    for name in [*run_files, RUN_FILE]:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _take(
    path: Path,
    program: str,
    resume: Mapping[str, Any] | None,
    resume_path: Path | None,
    run_files: Sequence[str],
    checks: dict[str, Any],
) -> tuple[int, RunDir]:
    """Rank 0: check, create the folder, lock it, check again under the lock, then write run.json."""
    decision = check_run_dir(path, program, resume, resume_path=resume_path, run_files=run_files, **checks)
    flag = checks.get("output_flag", "--output-dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{flag} {path}: cannot create it ({os.strerror(err.errno or 0)})") from None
    fd = acquire_lock(path, program, flag)
    try:
        # another process may have changed the folder between the first check and the lock
        decision = check_run_dir(
            path, program, resume, resume_path=resume_path, run_files=run_files, locked=True, **checks
        )
        if decision.clear:
            _clear(path, run_files)
        existing = decision.existing if not decision.clear else None
        if existing is not None and existing.id == decision.run_id:
            return fd, RunDir(path, program, existing.id, existing.created, new=False, cleared=False)
        info = RunInfo(
            decision.run_id or new_run_id(),
            program,
            _now(),
            str(resume_path) if resume_path is not None else None,
        )
        write_run_file(path, info)
        return fd, RunDir(path, program, info.id, info.created, new=True, cleared=decision.clear)
    except BaseException:
        release_lock(fd)
        raise


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    import torch.distributed as dist

    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def claim_run_dir(
    path: Path,
    program: str,
    resume: Mapping[str, Any] | None = None,
    *,
    resume_path: Path | None = None,
    run_files: Sequence[str] = (),
    overwrite: bool = False,
    world: World | None = None,
    output_flag: str = "--output-dir",
    resume_flag: str = "--resume",
    overwrite_flag: str | None = None,
) -> Iterator[RunDir]:
    """Own ``path`` for the run: checked (see ``check_run_dir``), created, locked, ``run.json`` written.

    Under torchrun rank 0 alone touches the folder and holds the lock; the outcome (the
    ``RunDir``, or the refusal) is broadcast, so every rank gets the same ``RunDir`` or raises
    the same ``RunDirError``. The lock is released when the block ends (or the process dies).
    """
    world = world or World()
    checks = {
        "overwrite": overwrite,
        "output_flag": output_flag,
        "resume_flag": resume_flag,
        "overwrite_flag": overwrite_flag,
    }
    fd: int | None = None
    outcome: RunDir | str
    if world.is_main:
        try:
            fd, outcome = _take(path, program, resume, resume_path, run_files, checks)
        except RunDirError as err:
            outcome = str(err)
    else:
        outcome = ""
    if world.distributed:
        outcome = _from_rank0(outcome)
    if isinstance(outcome, str):
        raise RunDirError(outcome)
    try:
        yield outcome
    finally:
        if fd is not None:
            release_lock(fd)
