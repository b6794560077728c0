"""recipes/common/checkpoint.py: atomic writes, the newest step, pruning, one-line refusals."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch

from lrsched.recipes.common import checkpoint as ckpt


def test_save_then_load_round_trips_tensors_and_plain_data(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint({"step": 7, "w": torch.arange(4.0)}, tmp_path / "c.pt", "prog")
    state = ckpt.load_checkpoint(path, "prog")
    assert state["step"] == 7 and state["program"] == "prog"
    assert torch.equal(state["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint({"step": 1}, tmp_path / "c.pt", "prog")
    with pytest.raises((pickle.PicklingError, AttributeError)):
        ckpt.save_checkpoint({"step": 2, "bad": lambda: None}, path, "prog")
    assert ckpt.load_checkpoint(path, "prog")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "not a loadable checkpoint"), (b"\x80\x04garbage", "not a loadable checkpoint")],
)
def test_unreadable_files_are_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(content)
    with pytest.raises(ckpt.CheckpointError, match=message) as err:
        ckpt.load_checkpoint(path, "prog", "--resume")
    assert "\n" not in str(err.value) and str(err.value).startswith("--resume ")


def test_another_programs_checkpoint_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint({"step": 1}, tmp_path / "c.pt", "train.py")
    with pytest.raises(ckpt.CheckpointError, match=re.escape("of 'train.py', not of 'phase5_big_run.py'")):
        ckpt.load_checkpoint(path, "phase5_big_run.py")
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt", "train.py")


def test_latest_is_the_highest_step_and_prune_keeps_the_newest(tmp_path: Path) -> None:
    assert ckpt.latest_checkpoint(tmp_path) is None
    for step in (5, 40, 12):
        ckpt.save_checkpoint({"step": step}, ckpt.step_path(tmp_path, step), "prog")
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.step_path(tmp_path, 40)
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000012.pt", "step-00000040.pt"]


def test_resume_latest_without_checkpoints_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError, match=r"^--resume latest: no checkpoint"):
        ckpt.resolve_resume("latest", tmp_path, "--resume")
    assert ckpt.resolve_resume(None, tmp_path, "--resume") is None
