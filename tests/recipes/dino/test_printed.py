"""What phase5 prints says what the run does: the plan of an open-ended run, --no-knn, the files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import DINO_SMALL, needs_data, read_rows

from lrsched.recipes.dino.main import main

pytestmark = needs_data


def test_an_open_ended_plan_says_the_cosines_wait_for_max_steps_and_the_log_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "open"
    monkeypatch.setenv("LRSCHED_STOP_AT_STEP", "3")
    assert main([*DINO_SMALL, "--output-dir", str(out), "--warmup-steps", "1", "--no-knn"]) == 0
    printed = capsys.readouterr().out
    assert "weight decay:     0.04, held (open-ended: the cosine to 0.4 needs --max-steps)" in printed
    assert "teacher momentum: 0.996, held (open-ended: the cosine to 1 needs --max-steps)" in printed
    rows = read_rows(out / "log.csv")
    assert {r["weight_decay"] for r in rows} == {"0.04"} and {r["momentum"] for r in rows} == {"0.996"}


def test_no_knn_skips_every_evaluation_and_the_run_lists_its_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main([*DINO_SMALL, "--output-dir", str(out), "--max-steps", "3", "--warmup-steps", "1", "--no-knn"]) == 0
    printed = capsys.readouterr().out
    assert "note: k-NN evaluation skipped: --no-knn" in printed and "k-NN top-1" not in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["knn_top1"] is None and metrics["knn_top1_raw_pixels"] is None and metrics["knn_history"] == []
    wrote = f"phase5_big_run.py: wrote {out}: log.csv, metrics.json, plan.json, args.json, data_index.tsv"
    assert wrote in printed and "checkpoints/step-00000003.pt" in printed.splitlines()[-1]
