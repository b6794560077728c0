"""A checkpoint written by the version before one step counter (tests/fixtures/phase5_main_checkpoint)
resumes with today's code and logs the values the uninterrupted run of that version logged."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from lrsched.recipes.dino.main import main

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "phase5_main_checkpoint"
FLAGS = [
    *("--preset", "micro", "--out-dim", "16", "--batch-size", "4", "--local-crops", "2", "--no-knn"),
    *("--seed", "0", "--max-steps", "6", "--warmup-steps", "2", "--save-every", "0", "--workers", "0"),
]
SCHEDULED = ("lr", "weight_decay", "momentum", "teacher_temp")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_fixture_is_small() -> None:
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 2_000_000


def _resume(folder: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> int:
    """Resume the fixture in ``folder`` on a copy of its images, named ``images`` as when it was written."""
    shutil.copytree(FIXTURE / "images", folder / "images")
    monkeypatch.chdir(folder)
    resume = ["--resume", str(FIXTURE / "step-00000003.pt")]
    return main([*flags, "--data-dir", "images", "--output-dir", str(folder / "run"), *resume])


def test_a_checkpoint_of_the_previous_version_resumes_to_the_same_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _resume(tmp_path, monkeypatch, *FLAGS) == 0
    out = tmp_path / "run"
    expected = {int(r["step"]): r for r in _rows(FIXTURE / "whole_run.csv")}
    rows = _rows(out / "log.csv")
    assert [int(r["step"]) for r in rows] == [3, 4, 5]
    for row in rows:
        before = expected[int(row["step"])]
        for name in SCHEDULED:  # the old code scaled by each group's value: the last bit may differ
            assert float(row[name]) == pytest.approx(float(before[name]), rel=1e-15, abs=1e-18), name
        assert row["loss"] == before["loss"]  # bit for bit: the ulp of an lr did not reach the weights here


def test_a_changed_schedule_is_still_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [f if f != "6" else "8" for f in FLAGS]  # --max-steps 8
    assert _resume(tmp_path, monkeypatch, *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--replan" in err[0] and "total: 6 -> 8" in err[0]
