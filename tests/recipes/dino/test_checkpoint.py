"""recipes/dino/checkpoint.py: the identity a resume may not change (named fields, each with its flag),
read from a checkpoint of either layout; a checkpoint written now holds the step once."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lrsched.errors import UsageError
from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.dino import checkpoint as dino_ckpt
from lrsched.recipes.dino.flags import PROGRAM_ID, parse

from .test_old_checkpoint import FIXTURE, FLAGS, _resume

OLD = FIXTURE / "step-00000003.pt"


def _args(*flags: str) -> argparse.Namespace:
    return parse([*flags, "--data-dir", "images"])


def test_the_identity_names_each_fixed_flag_as_typed() -> None:
    identity = dino_ckpt.identity(_args(*FLAGS))
    assert set(identity) == set(dino_ckpt.FIXED_ON_RESUME)
    assert identity["out_dim"] == ckpt.Fixed("16", "--out-dim")
    assert identity["seed"].set_by == "--seed"


def test_an_older_checkpoint_gives_its_identity_from_its_flags() -> None:
    state = ckpt.load_checkpoint(OLD, PROGRAM_ID)
    assert "identity" not in state
    saved = dino_ckpt.saved_identity(state)
    ckpt.refuse_identity_changes(saved, dino_ckpt.identity(_args(*FLAGS)), "--resume")
    changed = [f if f != "16" else "32" for f in FLAGS]  # --out-dim 32
    with pytest.raises(UsageError, match=r"^--resume: these flags cannot change on resume: --out-dim '16' -> '32'$"):
        ckpt.refuse_identity_changes(saved, dino_ckpt.identity(_args(*changed)), "--resume")


def test_an_older_checkpoint_gives_its_schedules_with_the_one_step() -> None:
    states = dino_ckpt.saved_states(ckpt.load_checkpoint(OLD, PROGRAM_ID), OLD)
    assert set(states) == set(dino_ckpt.SCHEDULED) and {s["step"] for s in states.values()} == {3}


def test_a_checkpoint_written_now_holds_the_step_once_and_its_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _resume(tmp_path, monkeypatch, *FLAGS) == 0
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000006.pt", PROGRAM_ID)
    assert state["step"] == 6 and not {"lr_scheduler", "wd_scheduler"} & set(state)
    assert set(state["schedules"]) == set(dino_ckpt.SCHEDULED)
    assert all(set(entry) == {"schedule", "target"} for entry in state["schedules"].values())  # no second step
    assert state["identity"] == dino_ckpt.saved_identity(ckpt.load_checkpoint(OLD, PROGRAM_ID))
