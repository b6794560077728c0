"""Checkpoints: written atomically with a checksum, read with ``weights_only=True``, refused with one line.

A checkpoint is a dict with ``format`` (``CHECKPOINT_FORMAT``), ``program`` (which program
wrote it), ``run_id`` (the run it belongs to, see ``rundir.py``) and whatever that program
stores. The file is torch's zip format, so ``torch.load(path, weights_only=True)`` still reads
it; its zip comment (the last bytes of the file) holds the SHA-256 of everything before it.

Loading checks the checksum, then the program, then the format: a damaged file (any byte
changed), a truncated file, random bytes, a pickle that would run code, another program's
checkpoint or one of an older format is a ``CheckpointError`` (a ``UsageError``: one line,
exit status 2), and no code in the file runs.

Writing goes through ``atomic.atomic_write`` (durable): a temporary file in the same folder,
fsynced, renamed over the target, the folder fsynced, so a kill leaves either the old file or
the new one. A full disk is a
``DiskFull`` error naming the file; the previous checkpoints are untouched.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from lrsched.atomic import atomic_write, fsync_dir
from lrsched.errors import UsageError
from lrsched.recipes.common.distributed import World

CHECKPOINT_FORMAT = 2
"""2: adds ``run_id`` and the SHA-256 trailer. Format 1 files are refused with a line saying so."""

_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")
_STALE_TMP = re.compile(r"^\.step-\d+\.pt\..+\.tmp$")
_TRAILER_TAG = b"lrsched-sha256:"
_TRAILER_LEN = len(_TRAILER_TAG) + 64
_EOCD_EMPTY_COMMENT = b"\x00\x00"
ABANDONED_PREFIX = "abandoned-after-step-"
_ABANDONED_DIR = re.compile(rf"^{ABANDONED_PREFIX}(\d+)(-\d+)?$")


class CheckpointError(UsageError):
    """A checkpoint that is missing, unreadable, damaged, or not this program's."""


class DiskFull(OSError):
    """No space left on the device while writing run files; the message is one line."""


_FULL_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


def is_disk_full(err: BaseException | None) -> bool:
    """An OSError with ENOSPC/EDQUOT, or a writer reporting the same in its own words (torch's
    RuntimeError, safetensors' ``SafetensorError`` under ``best/``: "No space left on device (os
    error 28)"), the error itself or one it was raised from."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(err) for text in _FULL_TEXTS):
            return True
        err = err.__cause__ or err.__context__
    return False


class _HashingWriter:
    """A write-only file that hashes what passes through (torch.save writes sequentially).

    It keeps the first OSError of a write: torch's writer does not pass it on (it fails later
    with "unexpected pos"), and a full disk must be reported as such."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += len(view)
        try:
            return self._f.write(view)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self._f.flush()


def save_checkpoint(
    state: dict[str, Any],
    path: Path,
    program: str,
    *,
    run_id: str | None = None,
) -> Path:
    """Write ``state`` to ``path``: temporary file, checksum trailer, fsync, ``os.replace``, fsync of the folder.

    ``run_id`` is recorded in the checkpoint (``state["run_id"]`` after loading). On any failure
    the temporary file is removed and ``path`` is as it was; a full disk raises ``DiskFull``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "program": program, "run_id": run_id, **state}
    writer: _HashingWriter | None = None
    try:
        with atomic_write(path, "w+b", durable=True, permissions=0o600) as f:
            writer = _HashingWriter(f)
            torch.save(payload, writer)  # type: ignore[arg-type]
            f.flush()
            # the zip's end record (22 bytes) ends with its comment length, 0: the checksum becomes the comment
            f.seek(writer.size - 22)
            end = f.read(22)
            if end[:4] != b"PK\x05\x06" or end[-2:] != _EOCD_EMPTY_COMMENT:
                raise RuntimeError("torch.save wrote no plain zip end record; cannot add the checksum")
            f.seek(writer.size - 2)
            f.write(struct.pack("<H", _TRAILER_LEN) + _TRAILER_TAG + writer.sha.hexdigest().encode())
    except BaseException as err:
        if is_disk_full(err) or (writer is not None and writer.error is not None and is_disk_full(writer.error)):
            raise DiskFull(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise
    return path


def _checksum_state(path: Path) -> tuple[str, str] | None:
    """``(stored, actual)`` SHA-256 of a file with an lrsched trailer, or None when it has none."""
    size = path.stat().st_size
    body = size - _TRAILER_LEN - 2
    if body < 22:
        return None
    with path.open("rb") as f:
        f.seek(body)
        tail = f.read()
        if tail[:2] != struct.pack("<H", _TRAILER_LEN) or not tail[2:].startswith(_TRAILER_TAG):
            return None
        stored = tail[2 + len(_TRAILER_TAG) :].decode("ascii", "replace")
        f.seek(0)
        sha = hashlib.sha256()
        remaining = body
        while remaining:
            chunk = f.read(min(1 << 22, remaining))
            if not chunk:
                break
            sha.update(chunk)
            remaining -= len(chunk)
        sha.update(_EOCD_EMPTY_COMMENT)
    return stored, sha.hexdigest()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


def load_checkpoint(path: Path, program: str, flag: str = "--resume") -> dict[str, Any]:
    """Read a checkpoint of ``program``; anything else raises ``CheckpointError`` naming ``flag`` and ``path``."""
    where = f"{flag} {path}"
    if not path.is_file():
        raise CheckpointError(f"{where}: no such checkpoint file")
    try:
        sums = _checksum_state(path)
    except OSError as err:
        raise CheckpointError(f"{where}: unreadable ({_first_line(err)})") from None
    if sums is not None and sums[0] != sums[1]:
        raise CheckpointError(f"{where}: damaged (its SHA-256 checksum does not match its contents)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, random bytes, a pickle with code: all refused alike
        raise CheckpointError(f"{where}: not a loadable checkpoint ({_first_line(err)})") from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{where}: not an lrsched checkpoint (format {CHECKPOINT_FORMAT})")
    if state.get("program") != program:
        raise CheckpointError(f"{where}: a checkpoint of {state.get('program')!r}, not of {program!r}")
    if state.get("format") != CHECKPOINT_FORMAT or sums is None:
        raise CheckpointError(
            f"{where}: checkpoint format {state.get('format')!r} (an older lrsched); this version reads "
            f"format {CHECKPOINT_FORMAT} only: start a new run"
        )
    return state


def step_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def step_of(path: Path) -> int | None:
    """The step in a ``step-NNNNNNNN.pt`` name, or None."""
    m = _STEP_FILE.match(path.name)
    return int(m.group(1)) if m else None


def _steps(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_FILE.match(p.name)))


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    steps = _steps(directory)
    return steps[-1][1] if steps else None


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest step checkpoints, and temporary files of writes a kill cut short."""
    steps = _steps(directory)
    for _, path in steps[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)
    for path in directory.iterdir():  # the caller's own write has finished: any temporary left is stale
        if _STALE_TMP.match(path.name):
            path.unlink(missing_ok=True)


def set_aside_future(directory: Path, step: int, resumed_from: Path | None = None) -> Path | None:
    """Move the checkpoints of steps after ``step`` (an abandoned future) into a sub-folder, with the log
    that tells their history.

    Call it when a run resumes from a checkpoint at ``step`` older than the newest one in its
    folder, before anything of the resumed run is written: afterwards ``latest`` can only find
    the resumed run's own checkpoints. The files go to ``abandoned-after-step-NNNNNNNN[-k]/``
    (returned; None when there was nothing to move), which ``latest`` and pruning ignore. The run's
    ``log.csv`` (next to ``directory``) goes along as that folder's ``log.csv`` (a hard link: no copy;
    the resumed run then rewrites its own), so a later resume from one of those checkpoints finds
    their rows (``history_log``). When ``resumed_from`` lies in such a folder itself, the steps after
    that folder's branch point are set aside: they are not in its history.
    """
    branch = abandoned_step(resumed_from)
    cut = step if branch is None else min(step, branch)
    future = [p for s, p in _steps(directory) if s > cut]
    if not future:
        return None
    base = directory / f"{ABANDONED_PREFIX}{cut:08d}"
    target, k = base, 1
    while target.exists():
        k += 1
        target = base.with_name(f"{base.name}-{k}")
    target.mkdir()
    _keep_log(directory.parent / LOG_FILE, target / LOG_FILE)
    for path in future:
        os.replace(path, target / path.name)
    fsync_dir(target)
    fsync_dir(directory)
    return target


LOG_FILE = "log.csv"


def _keep_log(log: Path, kept: Path) -> None:
    """``log`` also at ``kept``: a hard link (the run replaces ``log`` by a new file when it cuts it
    back), or a copy where the file system has no hard links."""
    if not log.is_file():
        return
    try:
        os.link(log, kept)
    except OSError:
        shutil.copyfile(log, kept)


def abandoned_step(checkpoint: Path | None) -> int | None:
    """The step after which the folder holding ``checkpoint`` was abandoned (``abandoned-after-step-N``:
    N), or None when it is not in such a folder."""
    if checkpoint is None:
        return None
    m = _ABANDONED_DIR.match(checkpoint.parent.name)
    return int(m.group(1)) if m else None


def history_log(checkpoint: Path | None, output_dir: Path) -> Path:
    """The ``log.csv`` holding the rows that led to ``checkpoint``: its abandoned folder's own, or the run's."""
    if abandoned_step(checkpoint) is not None and checkpoint is not None:
        own = checkpoint.parent / LOG_FILE
        if own.is_file():
            return own
    return output_dir / LOG_FILE


def resolve_resume(value: str | None, output_dir: Path, flag: str) -> Path | None:
    """``--resume PATH|latest`` -> a checkpoint path (``latest``: newest in ``output_dir``).

    ``latest`` in a folder without a checkpoint says why and what to do; it never sends the user
    back to ``latest``.
    """
    if value is None:
        return None
    if value != "latest":
        return Path(value)
    found = latest_checkpoint(output_dir / "checkpoints")
    if found is None:
        if output_dir.is_dir() and any(output_dir.iterdir()):
            hint = "the run there stopped before its first checkpoint; start it again without " + flag
        else:
            hint = "there is no run there yet; start one without " + flag
        raise CheckpointError(f"{flag} latest: no checkpoint under {output_dir / 'checkpoints'} ({hint})")
    return found


def rng_state() -> dict[str, Any]:
    """Torch's CPU (and CUDA, when present) random states, as tensors ``weights_only`` can load."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- what both programs save and read back

STEP_KEY = "step"
"""The one key under which a checkpoint holds the run's step (updates done); nothing else in it counts steps."""
SCHEDULES_KEY = "schedules"
"""``{name: {"schedule": description, "target": description}}``: each schedule once, without a step."""


@dataclass(frozen=True)
class Fixed:
    """One value a resumed run must share with its checkpoint, and what the user types to set it
    (``set_by``: a flag, or the flags and words that decide it), named in a refusal."""

    value: Any
    set_by: str


Identity = Mapping[str, Fixed]
"""What may not change on resume: named fields, each a ``Fixed``. A program extends its identity by
adding a field; a checkpoint stores ``identity_values`` under ``"identity"``."""


def identity_values(identity: Identity) -> dict[str, Any]:
    """The values to store in a checkpoint (``{name: value}``)."""
    return {name: fixed.value for name, fixed in identity.items()}


def identity_changes(saved: Mapping[str, Any], identity: Identity) -> list[str]:
    """``set_by saved -> now`` for each field whose value differs from the checkpoint's; a field the
    checkpoint lacks (written before the field existed) counts as ``None``."""
    return [
        f"{fixed.set_by} {saved.get(name)!r} -> {fixed.value!r}"
        for name, fixed in identity.items()
        if saved.get(name) != fixed.value
    ]


def refuse_identity_changes(saved: Mapping[str, Any], identity: Identity, where: str) -> None:
    """A ``UsageError`` in one line naming each changed field by its flag, when any changed."""
    changes = identity_changes(saved, identity)
    if changes:
        raise UsageError(f"{where}: these flags cannot change on resume: {'; '.join(changes)}")


def saved_step(state: Mapping[str, Any], where: str) -> int:
    """The checkpoint's step (``STEP_KEY``): a non-negative integer, else ``CheckpointError``."""
    step = state.get(STEP_KEY)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{where}: not a complete checkpoint (no step: {step!r})")
    return step


def schedule_states(
    state: Mapping[str, Any], names: tuple[str, ...], where: str, older: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Each schedule's state in the one form ``lrsched.adoption.adopt`` (and ``ScheduledField``) reads:
    ``{"step": the checkpoint's step, "schedule": ..., "target": ...}``.

    A checkpoint written before the step was held once keeps a schedule under its own key
    (``older``: name -> key) with a step of its own; it is read when that step is the checkpoint's,
    else refused in one line (``CheckpointError``).
    """
    step = saved_step(state, where)
    saved = dict(state.get(SCHEDULES_KEY) or {})
    for name, key in (older or {}).items():
        saved.setdefault(name, state.get(key))
    states = {}
    for name in names:
        entry = saved.get(name)
        if not isinstance(entry, Mapping) or "schedule" not in entry:
            raise CheckpointError(f"{where}: not a complete checkpoint (no {name} schedule)")
        if int(entry.get(STEP_KEY, step)) != step:
            raise CheckpointError(
                f"{where}: the checkpoint's {name} schedule is at step {entry[STEP_KEY]}, its run at "
                f"step {step}: the checkpoint is damaged"
            )
        target = {"target": entry["target"]} if "target" in entry else {}
        states[name] = {STEP_KEY: step, "schedule": entry["schedule"], **target}
    return states


def save_step_checkpoint(
    payload: dict[str, Any], directory: Path, program: str, world: World, *, run_id: str | None, keep: int
) -> Path:
    """Rank 0 writes ``payload`` (holding ``STEP_KEY``) as ``directory/step-<step>.pt`` and keeps the
    ``keep`` newest (0: all); the path. The caller writes a step once and has the ranks wait."""
    path = step_path(directory, int(payload[STEP_KEY]))
    if world.is_main:
        save_checkpoint(payload, path, program, run_id=run_id)
        prune_checkpoints(directory, keep)
    return path
