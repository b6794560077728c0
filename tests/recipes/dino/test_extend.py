"""Extending a finished phase5 run with --replan: every scheduled value continues without a jump."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DINO_SMALL, needs_data, read_rows

from lrsched.adoption import from_description
from lrsched.recipes.dino.main import main

pytestmark = needs_data

SCHEDULED = ("lr", "weight_decay", "momentum", "teacher_temp")
FIRST = ["--max-steps", "6", "--warmup-steps", "2", "--warmup-teacher-temp-steps", "3", "--workers", "0"]


def run(out: Path, *extra: str) -> int:
    return main([*DINO_SMALL, "--output-dir", str(out), *extra])


def planned(out: Path) -> dict[str, object]:
    """The schedules plan.json says the run follows, by name."""
    plan = json.loads((out / "plan.json").read_text())
    return {name: from_description(plan[name]["schedule"]) for name in SCHEDULED}


def test_a_finished_run_extended_with_replan_continues_every_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run(out, *FIRST) == 0
    before = planned(out)
    capsys.readouterr()
    longer = ["--max-steps", "12", *FIRST[2:], "--resume", "latest", "--replan"]
    assert run(out, *longer) == 0, capsys.readouterr().err
    after, rows = planned(out), read_rows(out / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(12))
    for name in SCHEDULED:
        held = before[name](6)  # type: ignore[operator]
        assert float(rows[6][name]) == pytest.approx(held, rel=1e-12, abs=1e-15), name  # no jump at t0
        for t in range(12):
            assert float(rows[t][name]) == pytest.approx(after[name](t), rel=1e-12, abs=1e-15), (name, t)  # type: ignore[operator]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[6] == pytest.approx(1e-6) and lrs[8] == pytest.approx(5e-4)  # re-warmed over --warmup-steps 2
    assert after["lr"](12) == pytest.approx(1e-6)  # type: ignore[operator]  # and ends at the floor at the new end
    assert [float(r["weight_decay"]) for r in rows[6:]] == [pytest.approx(0.4)] * 6  # held at its end value
    assert [float(r["momentum"]) for r in rows[6:]] == [1.0] * 6  # held at 1
    assert [float(r["teacher_temp"]) for r in rows[3:]] == [pytest.approx(0.07)] * 9  # held after its warm-up
    printed = capsys.readouterr().out
    assert "resume from step 6 of 12, replanned at 6" in printed
    assert "weight decay:     from step 6: 0.4 held" in printed  # what the run follows, not 0.04 -> 0.4
    assert "teacher momentum: from step 6: 1 held" in printed


def test_a_finished_run_resumed_unchanged_says_it_is_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert run(out, *FIRST) == 0
    files = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert run(out, *FIRST, "--resume", "latest") == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines == [
        "phase5_big_run.py: the run is finished (step 6 of 6); nothing to do, nothing written "
        "(--max-steps N --replan extends it)"
    ], captured
    assert captured.err == ""
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == files


def test_a_finished_run_whose_report_was_cut_short_redoes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed after the end's checkpoint, before curves.png: resuming is how the report gets whole."""
    out = tmp_path / "run"
    assert run(out, *FIRST) == 0
    (out / "curves.png").unlink()
    capsys.readouterr()
    assert run(out, *FIRST, "--resume", "latest") == 0
    assert "is finished" not in capsys.readouterr().out
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
