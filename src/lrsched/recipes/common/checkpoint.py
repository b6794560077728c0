"""Checkpoints: written atomically, read with ``weights_only=True``, refused with one line.

A checkpoint is a dict with ``format`` (``CHECKPOINT_FORMAT``), ``program`` (which program
wrote it) and whatever that program stores. Loading checks all three; a truncated file, random
bytes, a pickle that would run code, or another program's checkpoint is a ``CheckpointError``
(a ``UsageError``: one line, exit status 2), and no code in the file runs.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from lrsched.strategy import UsageError

CHECKPOINT_FORMAT = 1
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")
_STALE_TMP = re.compile(r"^\.step-\d+\.pt\..+\.tmp$")


class CheckpointError(UsageError):
    """A checkpoint that is missing, unreadable, or not this program's."""


def save_checkpoint(state: dict[str, Any], path: Path, program: str) -> Path:
    """Write ``state`` to ``path`` via a temporary file, fsync and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "program": program, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: Path, program: str, flag: str = "--resume") -> dict[str, Any]:
    """Read a checkpoint of ``program``; anything else raises ``CheckpointError`` naming ``flag``."""
    if not path.is_file():
        raise CheckpointError(f"{flag} {path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, random bytes, a pickle with code: all refused alike
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{flag} {path}: not a loadable checkpoint ({reason[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{flag} {path}: not an lrsched checkpoint (format {CHECKPOINT_FORMAT})")
    if state.get("program") != program:
        raise CheckpointError(f"{flag} {path}: a checkpoint of {state.get('program')!r}, not of {program!r}")
    return state


def step_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    if not directory.is_dir():
        return None
    steps = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_FILE.match(p.name))]
    return max(steps)[1] if steps else None


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest step checkpoints, and temporary files of writes a kill cut short."""
    steps = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_FILE.match(p.name)))
    for _, path in steps[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)
    for path in directory.iterdir():  # the caller's own write has finished: any temporary left is stale
        if _STALE_TMP.match(path.name):
            path.unlink(missing_ok=True)


def resolve_resume(value: str | None, output_dir: Path, flag: str) -> Path | None:
    """``--resume PATH|latest`` -> a checkpoint path (``latest``: newest in ``output_dir``)."""
    if value is None:
        return None
    if value != "latest":
        return Path(value)
    found = latest_checkpoint(output_dir / "checkpoints")
    if found is None:
        raise CheckpointError(f"{flag} latest: no checkpoint under {output_dir / 'checkpoints'}")
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
