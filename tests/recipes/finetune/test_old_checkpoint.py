"""A checkpoint written by the version before the parallel checkpoint modules
(tests/fixtures/train_main_checkpoint) resumes with today's code and logs, bit for bit, the values
the uninterrupted run of that version logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrsched.recipes.common.runlog import read_log

from .finetune_helpers import run_train

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "train_main_checkpoint"
FLAGS = [
    *("--model", str(FIXTURE / "model"), "--max_train_samples", "24", "--per_device_train_batch_size", "8"),
    *("--num_epochs", "2", "--learning_rate", "0.01", "--max_eval_samples", "8"),
    *("--per_device_eval_batch_size", "8", "--disable_tqdm", "--seed", "0"),
]
COLUMNS = ("step", "epoch", "lr", "loss", "grad_norm")


def test_the_fixture_is_small() -> None:
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 2_000_000


def _resume(out: Path, *flags: str) -> int:
    return run_train([*flags, "--output_dir", str(out), "--resume_from_checkpoint", str(FIXTURE / "step-00000003.pt")])


def test_a_checkpoint_of_the_previous_version_resumes_to_the_same_values(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _resume(out, *FLAGS) == 0
    expected = {int(r["step"]): r for r in read_log(FIXTURE / "whole_run.csv")}
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == [3, 4, 5]
    for row in rows:
        assert {k: row[k] for k in COLUMNS} == {k: expected[int(row["step"])][k] for k in COLUMNS}
    validations = json.loads((out / "eval.json").read_text())["validation"]
    before = json.loads((FIXTURE / "whole_run_eval.json").read_text())["validation"]
    assert validations == before  # the checkpoint's history (step 3) and the resumed step 6, bit for bit


def test_a_changed_schedule_is_still_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [f if f != "0.01" else "0.02" for f in FLAGS]
    assert _resume(tmp_path / "run", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--replan" in err[0] and "base: 0.01 -> 0.02" in err[0], err
    assert not (tmp_path / "run").exists()
