"""recipes/finetune/checkpoint.py: a checkpoint holds the step once, the lr schedule once and the identity
by name; a changed identity field is refused in one line naming its flag; a checkpoint of the previous
layout whose scheduler step disagrees with its step is refused. Runs use the one-layer model of
tests/fixtures/train_main_checkpoint (an update takes milliseconds)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TRAIN_ENTRY, child_env

from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.finetune.flags import PROGRAM_ID

from .finetune_helpers import run_train
from .test_old_checkpoint import FIXTURE, FLAGS

OLD = FIXTURE / "step-00000003.pt"
IDENTITY = (
    "model",
    "labels",
    "train_size",
    "data",
    "seed",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
    "group_by_length",
)


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.py: error: --resume_from_checkpoint"), err
    return err[0]


def test_a_checkpoint_holds_the_step_once_the_lr_schedule_once_and_the_identity_by_name(tmp_path: Path) -> None:
    assert run_train([*FLAGS, "--output_dir", str(tmp_path / "run")]) == 0
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000003.pt", PROGRAM_ID)
    assert state["step"] == 3 and "scheduler" not in state
    assert list(state["schedules"]) == ["lr"] and set(state["schedules"]["lr"]) == {"schedule", "target"}
    assert tuple(state["identity"]) == IDENTITY
    assert state["identity"]["seed"] == 0 and state["identity"]["group_by_length"] is not None


def test_a_changed_identity_field_is_refused_naming_its_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*FLAGS, "--max_seq_length", "64"]
    assert run_train([*flags, "--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", str(OLD)]) == 2
    line = _one_error_line(capsys)
    assert line.endswith(
        "these flags cannot change on resume: --no_group_by_length/--max_seq_length "
        "'tokens up to --max_seq_length 128' -> 'tokens up to --max_seq_length 64'"
    )
    assert not (tmp_path / "run").exists()


def test_an_older_checkpoint_whose_scheduler_step_disagrees_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ckpt.load_checkpoint(OLD, PROGRAM_ID)
    state["scheduler"]["step"] = 2
    damaged = ckpt.save_checkpoint(state, tmp_path / "step-00000003.pt", PROGRAM_ID, run_id=state["run_id"])
    assert run_train([*FLAGS, "--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", str(damaged)]) == 2
    assert "the checkpoint's lr schedule is at step 2, its run at step 3: the checkpoint is damaged" in (
        _one_error_line(capsys)
    )
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_continues_from_the_saved_step(tmp_path: Path) -> None:
    """The resumed run's first logged step is the checkpoint's, and its lr the plan's value there."""
    out = tmp_path / "run"
    assert run_train([*FLAGS, "--output_dir", str(out)]) == 0
    mid = out / "checkpoints" / "step-00000003.pt"
    shutil.copy(mid, tmp_path / "mid.pt")
    again = tmp_path / "again"
    assert run_train([*FLAGS, "--output_dir", str(again), "--resume_from_checkpoint", str(tmp_path / "mid.pt")]) == 0
    first = (again / "log.csv").read_text().splitlines()[1].split(",")
    assert first[:3] == ["3", "2", "0.006"]


def _torchrun(out: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(TRAIN_ENTRY)]
    proc = subprocess.run(
        [*cmd, *FLAGS, "--max_train_samples", "48", "--output_dir", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow  # two torchrun launches: 1-2 min on 2 loaded cores
def test_two_torchrun_ranks_resumed_from_a_middle_checkpoint_end_with_the_same_weights(tmp_path: Path) -> None:
    """Every rank's RNG (dropout) is saved and given back to its rank: the resumed run's last
    checkpoint equals the uninterrupted run's, bit for bit (48 examples, 2 ranks of 3 batches of 8)."""
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _torchrun(whole)
    shutil.copy(whole / "checkpoints" / "step-00000003.pt", tmp_path / "mid.pt")
    _torchrun(resumed, "--resume_from_checkpoint", str(tmp_path / "mid.pt"))
    a, b = (ckpt.load_checkpoint(out / "checkpoints" / "step-00000006.pt", PROGRAM_ID) for out in (whole, resumed))
    assert len(a["rng"]) == 2 and a["step"] == b["step"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, state in a["optimizer"]["state"].items():
        assert all(torch.equal(state[name], b["optimizer"]["state"][k][name]) for name in state)
