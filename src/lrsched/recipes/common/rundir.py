"""One run per folder: a run id written at creation (``run.json``), and the folder's lock held for the
whole run (``runlock``).

An output folder holds at most one run. ``run.json`` gives its id, the program and the time;
every checkpoint records the id (``save_checkpoint(..., run_id=)``). What a command may do with a
folder is ``decide``'s answer, a pure function of what is on disk (``OnDisk``) and what was asked
(``Asked``), before anything changes:

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
import json
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from lrsched.atomic import atomic_write
from lrsched.recipes.common.checkpoint import latest_checkpoint
from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.folders import check_output_path
from lrsched.recipes.common.runlock import RunDirError, acquire_lock, check_not_in_use, now, release_lock

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
T = TypeVar("T")


@dataclass(frozen=True)
class Folder:
    """What a program says about its output folders: its name, the files its runs leave, its flags."""

    program: str
    run_files: tuple[str, ...] = ()
    output_flag: str = "--output-dir"
    resume_flag: str = "--resume"
    overwrite_flag: str | None = None
    """The program's flag that replaces a run (None: it has none)."""


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
class OnDisk:
    """What a folder holds: its ``run.json``, the run files present, whether a checkpoint is among them."""

    info: RunInfo | None
    files: tuple[str, ...]
    has_checkpoint: bool


@dataclass(frozen=True)
class Asked:
    """What the command asks: a fresh start (``resume`` None) or to continue the checkpoint ``resume``."""

    resume: Mapping[str, Any] | None = None
    resume_path: Path | None = None
    own_checkpoint: bool = False
    """The checkpoint lies in this folder's ``checkpoints/``."""
    overwrite: bool = False


@dataclass(frozen=True)
class Decision:
    """What ``decide`` allows: the run id to use (None: a new one) and whether to clear old run files."""

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


# --- the decision: a pure function of the folder and the request ------------------------------


def decide(where: str, disk: OnDisk, folder: Folder, asked: Asked) -> Decision:
    """The table of the module docstring. ``where`` names the folder in messages (``--output-dir X``)."""
    info = disk.info
    if info is not None and info.program != folder.program:
        raise RunDirError(f"{where}: holds a {info.describe()}, not a {folder.program} run; choose another folder")
    if asked.resume is None:
        return _fresh(where, disk, folder, asked.overwrite)
    return _resumed(where, disk, folder, asked)


def _replace_or_choose(folder: Folder) -> str:
    return f"pass {folder.overwrite_flag} to replace it or choose" if folder.overwrite_flag else "choose"


def _fresh(where: str, disk: OnDisk, folder: Folder, overwrite: bool) -> Decision:
    if disk.info is not None:
        if disk.has_checkpoint and not overwrite:
            raise RunDirError(
                f"{where}: holds {disk.info.describe()} with checkpoints; pass {folder.resume_flag} latest to "
                f"continue it, or {_replace_or_choose(folder)} another folder"
            )
        return Decision(None, clear=True, existing=disk.info)  # overwrite, or a run that never saved
    if disk.files and not overwrite:
        raise RunDirError(
            f"{where}: holds files of a run without {RUN_FILE} ({', '.join(disk.files)}; an older lrsched?); "
            f"{_replace_or_choose(folder)} another folder"
        )
    return Decision(None, clear=bool(disk.files), existing=None)


def _resumed(where: str, disk: OnDisk, folder: Folder, asked: Asked) -> Decision:
    assert asked.resume is not None
    resume_id, info = asked.resume.get("run_id"), disk.info
    shown = f"{folder.resume_flag} {asked.resume_path}" if asked.resume_path is not None else folder.resume_flag
    theirs = f"run {resume_id}" if resume_id else "a run with no id"
    if info is not None:
        if (resume_id is not None and resume_id == info.id) or (resume_id is None and asked.own_checkpoint):
            return Decision(info.id, clear=False, existing=info)
        if asked.overwrite:
            return Decision(resume_id, clear=True, existing=info)
        also = f", or pass {folder.overwrite_flag} to replace run {info.id}" if folder.overwrite_flag else ""
        raise RunDirError(
            f"{shown}: a checkpoint of {theirs}, but {where} holds another, {info.describe()}; "
            f"resume into another folder{also}"
        )
    if disk.files and not asked.own_checkpoint and not asked.overwrite:
        raise RunDirError(
            f"{shown}: a checkpoint of {theirs}, but {where} holds files of another run "
            f"({', '.join(disk.files)}); resume into a new folder"
        )
    return Decision(resume_id, clear=bool(disk.files) and not asked.own_checkpoint, existing=None)


# --- reading the folder ---------------------------------------------------------------------


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


def on_disk(path: Path, folder: Folder) -> OnDisk:
    """What ``path`` holds now (nothing, if it does not exist)."""
    if not path.is_dir():
        return OnDisk(None, (), False)
    files = tuple(n for n in folder.run_files if (path / n).exists())
    return OnDisk(read_run(path, folder.output_flag), files, latest_checkpoint(path / CHECKPOINTS) is not None)


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def _check(path: Path, folder: Folder, asked: Asked, locked: bool) -> Decision:
    """The folder usable, not held by another process (unless we hold its lock), and ``decide``'s answer."""
    check_output_path(path, folder.output_flag)
    if not locked:
        check_not_in_use(path, folder.output_flag)  # a live run's folder: say so, whatever it holds
    return decide(f"{folder.output_flag} {path}", on_disk(path, folder), folder, asked)


def asked(path: Path, resume: Mapping[str, Any] | None, resume_path: Path | None, overwrite: bool) -> Asked:
    """The request, with whether the checkpoint lies in this folder's ``checkpoints/``."""
    own = resume_path is not None and _inside(resume_path, path / CHECKPOINTS)
    return Asked(resume, resume_path, own, overwrite)


# --- under torchrun: rank 0 looks, every rank gets its answer ----------------------------------


def from_rank0(world: World | None, compute: Callable[[], T]) -> T:
    """``compute()`` on rank 0, its result (or its ``RunDirError``, raised) on every rank."""
    if world is None or not world.distributed:
        return compute()
    import torch.distributed as dist

    answer: Any = ""
    if world.is_main:
        try:
            answer = compute()
        except RunDirError as err:
            answer = err
    box: list[Any] = [str(answer) if isinstance(answer, RunDirError) else answer, isinstance(answer, RunDirError)]
    dist.broadcast_object_list(box, src=0)
    if box[1]:
        raise RunDirError(box[0])
    return box[0]


def check_run_dir(
    path: Path,
    folder: Folder,
    resume: Mapping[str, Any] | None = None,
    *,
    resume_path: Path | None = None,
    overwrite: bool = False,
    world: World | None = None,
) -> Decision:
    """Whether ``folder.program`` may start (``resume`` None) or continue ``resume`` in ``path``; changes nothing.

    ``resume`` is the loaded checkpoint (its ``run_id`` is compared with the folder's); ``overwrite``
    is the program's replace flag. Under torchrun (``world``) rank 0 alone looks, so that every rank
    refuses or every rank goes on.
    """
    return from_rank0(world, partial(_check, path, folder, asked(path, resume, resume_path, overwrite), False))


# --- claiming: created, locked, checked again, run.json ------------------------------------------


def write_run_file(path: Path, info: RunInfo) -> None:
    """``run.json``, atomically and durably."""
    data = {"id": info.id, "program": info.program, "created": info.created, "resumed_from": info.resumed_from}
    with atomic_write(path / RUN_FILE, durable=True) as f:
        f.write(json.dumps(data, indent=2) + "\n")


def _clear(path: Path, run_files: tuple[str, ...]) -> None:
    for name in [*run_files, RUN_FILE]:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _take(path: Path, folder: Folder, request: Asked) -> tuple[int, RunDir]:
    """Rank 0: check, create the folder, lock it, check again under the lock, then write run.json."""
    _check(path, folder, request, locked=False)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"{folder.output_flag} {path}: cannot create it ({err.strerror})") from None
    fd = acquire_lock(path, folder.program, folder.output_flag)
    try:
        decision = _check(path, folder, request, locked=True)  # the folder may have changed before the lock
        if decision.clear:
            _clear(path, folder.run_files)
        existing = decision.existing if not decision.clear else None
        if existing is not None and existing.id == decision.run_id:
            return fd, RunDir(path, folder.program, existing.id, existing.created, new=False, cleared=False)
        started_from = str(request.resume_path) if request.resume_path is not None else None
        info = RunInfo(decision.run_id or new_run_id(), folder.program, now(), started_from)
        write_run_file(path, info)
        return fd, RunDir(path, folder.program, info.id, info.created, new=True, cleared=decision.clear)
    except BaseException:
        release_lock(fd)
        raise


@contextlib.contextmanager
def claim_run_dir(
    path: Path,
    folder: Folder,
    resume: Mapping[str, Any] | None = None,
    *,
    resume_path: Path | None = None,
    overwrite: bool = False,
    world: World | None = None,
) -> Iterator[RunDir]:
    """Own ``path`` for the run: checked (``decide``), created, locked, ``run.json`` written.

    Under torchrun rank 0 alone touches the folder and holds the lock; every rank gets the same
    ``RunDir`` or raises the same ``RunDirError``. The lock is released when the block ends (or
    the process dies).
    """
    request = asked(path, resume, resume_path, overwrite)
    held: list[int] = []

    def take() -> RunDir:
        fd, run_dir = _take(path, folder, request)
        held.append(fd)
        return run_dir

    outcome = from_rank0(world, take)
    try:
        yield outcome
    finally:
        for fd in held:
            release_lock(fd)
