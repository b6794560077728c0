"""The log is whole after any resume (issue 30): resuming from a checkpoint kept in
``checkpoints/abandoned-after-step-N/`` brings back the rows of its own past (kept with it as that
folder's ``log.csv``), never the rows of the branch that replaced it and never a hole; the branch
set aside by that resume keeps its rows the same way."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from fault_helpers import DINO_PROGRAM, DINO_SMALL, call_main
from helpers import needs_data

from lrsched.recipes.common.checkpoint import latest_checkpoint

FLAGS = [*DINO_SMALL, "--max-steps", "8", "--warmup-steps", "1", "--workers", "0", "--save-every", "2"]
FLAGS += ["--keep-checkpoints", "9"]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def phase5(out: Path, *extra: str, stop_at: int | None = None) -> None:
    with pytest.MonkeyPatch.context() as env:
        if stop_at is not None:
            env.setenv("LRSCHED_STOP_AT_STEP", str(stop_at))
        status, _, stderr = call_main(DINO_PROGRAM, [*FLAGS, "--output-dir", str(out), *extra])
    assert status == 0, stderr[-2000:]


@needs_data
def test_phase5_resumed_from_an_abandoned_checkpoint_logs_its_own_past(tmp_path: Path) -> None:
    out = tmp_path / "run"
    phase5(out)  # steps 0-7, checkpoints 2, 4, 6, 8
    whole = rows(out / "log.csv")
    checkpoints = out / "checkpoints"
    phase5(out, "--resume", str(checkpoints / "step-00000004.pt"), stop_at=5)  # a second branch from 4, to 5
    aside = checkpoints / "abandoned-after-step-00000004"
    assert sorted(p.name for p in aside.iterdir()) == ["log.csv", "step-00000006.pt", "step-00000008.pt"]
    assert rows(aside / "log.csv") == whole
    branch = rows(out / "log.csv")
    assert [int(r["step"]) for r in branch] == list(range(5))

    phase5(out, "--resume", str(aside / "step-00000006.pt"))  # back to the first branch, to the end
    resumed = rows(out / "log.csv")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole] == [str(s) for s in range(8)]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in whole]
    assert [r["loss"] for r in resumed[:6]] == [r["loss"] for r in whole[:6]]  # its own past, not the branch's
    second = checkpoints / "abandoned-after-step-00000004-2"  # the second branch, set aside with its rows
    assert sorted(p.name for p in second.iterdir()) == ["log.csv", "step-00000005.pt"]
    assert rows(second / "log.csv") == branch
    assert latest_checkpoint(checkpoints) == checkpoints / "step-00000008.pt"
