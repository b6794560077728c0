"""Extending a train.py run: --replan with more --num_epochs continues the LR without a jump; a finished
run resumed unchanged says so; a changed plan without --replan is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrsched.adoption import from_description
from lrsched.recipes.common.checkpoint import load_checkpoint
from lrsched.recipes.common.runlog import read_log

from .finetune_helpers import TINY, run_train, schedule_from_plan

FLAGS = ["--lr_strategy", "cosine", "--learning_rate", "5e-5", "--warmup_steps", "1"]
SMALL = ["--max_train_samples", "24", "--per_device_train_batch_size", "8", *TINY]  # 3 updates per epoch


def argv(out: Path, epochs: str, *extra: str) -> list[str]:
    return ["--num_epochs", epochs, *FLAGS, *SMALL, "--output_dir", str(out), *extra]


def files(out: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def one_epoch(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert run_train(argv(out, "1")) == 0
    return out


def test_more_epochs_with_replan_continue_without_a_jump(one_epoch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = schedule_from_plan(json.loads((one_epoch / "plan.json").read_text()))
    assert before.total == 3
    capsys.readouterr()
    assert run_train(argv(one_epoch, "2", "--resume_from_checkpoint", "latest", "--replan")) == 0
    assert "replan  from step 3: 0 -> 5e-05 linearly by step 4, then cosine to 0 by step 6" in capsys.readouterr().out
    rows = read_log(one_epoch / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(6))
    followed = from_description(
        load_checkpoint(one_epoch / "checkpoints" / "step-00000006.pt", "train.py")["schedules"]["lr"]["schedule"]
    )
    assert float(rows[3]["lr"]) == before(3) == 0.0  # the finished run's LR at t0: no jump
    for r in rows:
        assert float(r["lr"]) == pytest.approx(followed(int(r["step"])), rel=1e-12, abs=1e-20), r
    assert float(rows[4]["lr"]) == pytest.approx(5e-5)  # re-warmed over --warmup_steps 1
    assert followed(6) == 0.0  # and ends at the floor at the new end


def test_more_epochs_without_replan_are_refused_in_one_line(
    one_epoch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = files(one_epoch)
    capsys.readouterr()
    assert run_train(argv(one_epoch, "2", "--resume_from_checkpoint", "latest")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "total: 3 -> 6" in err[0] and "--replan" in err[0], err
    assert files(one_epoch) == kept


def test_a_finished_run_resumed_unchanged_says_it_is_finished(
    one_epoch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = files(one_epoch)
    capsys.readouterr()
    assert run_train(argv(one_epoch, "1", "--resume_from_checkpoint", "latest")) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines() == [
        "train.py: the run is finished (step 3 of 3); nothing to do, nothing written "
        "(--num_epochs N --replan extends it)"
    ]
    assert captured.err == ""
    assert files(one_epoch) == kept


def test_replan_without_a_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_train(argv(tmp_path / "new", "1", "--replan")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["train.py: error: --replan: only with --resume_from_checkpoint (a new run has no plan to change)"]
    assert not (tmp_path / "new").exists()


def test_a_finished_run_whose_report_was_cut_short_redoes_it(
    one_epoch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed after the end's checkpoint, before curves.png: resuming is how the report gets whole."""
    (one_epoch / "curves.png").unlink()
    capsys.readouterr()
    assert run_train(argv(one_epoch, "1", "--resume_from_checkpoint", "latest")) == 0
    assert "is finished" not in capsys.readouterr().out
    assert (one_epoch / "curves.png").read_bytes()[:4] == b"\x89PNG"
