"""Note 004's seven commands resolve to the plans docs/design.md section 4 prescribes.

Each command is the user's, shrunk with --max_train_samples 200 (7 batches of 32, so 7
updates per epoch). The expected values come from the table in docs/design.md section 4, not from
the code under test: shape, peak, warm-up ratio and cycles per row, warm-up steps as the
exact ceiling of ratio x total.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from lrsched.recipes.common.device import runs_bf16_natively
from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.skeleton import checked
from lrsched.recipes.finetune.flags import parse
from lrsched.recipes.finetune.main import TrainPy, plan_text

SHRINK = ["--max_train_samples", "200", "--max_eval_samples", "16"]
UPDATES = 7  # ceil(200 / 32)

# (note 004's command, shape, peak, warm-up ratio, cycles or None)
SEED_COMMANDS = [
    ("--num_epochs 1 --bf16", "constant", 3e-5, Fraction(5, 100), None),
    ("--num_epochs 3 --bf16", "linear", 4e-5, Fraction(10, 100), None),
    ("--num_epochs 10 --bf16", "cosine", 5e-5, Fraction(10, 100), None),
    ("--num_epochs 5 --lr_strategy constant --bf16", "constant", 5e-5, Fraction(10, 100), None),
    ("--num_epochs 2 --lr_strategy cosine_restarts --bf16", "cosine_restarts", 4e-5, Fraction(10, 100), 1.0),
    ("--num_epochs 1 --scale_lr_for_short_training --bf16", "constant", 3e-5, Fraction(5, 100), None),
    ("--num_epochs 10 --cosine_restarts --bf16", "cosine_restarts", 5e-5, Fraction(10, 100), 2.0),
]


@pytest.mark.parametrize(("command", "shape", "peak", "ratio", "cycles"), SEED_COMMANDS)
def test_seed_command_resolves_the_design_plan(
    tmp_path: Path, command: str, shape: str, peak: float, ratio: Fraction, cycles: float | None
) -> None:
    out = tmp_path / "run"
    args = parse([*command.split(), *SHRINK, "--output_dir", str(out)])
    run = checked(TrainPy(), args, World(), torch.device("cpu"))
    epochs = int(command.split()[1])
    total = epochs * UPDATES
    plan = run.settings.plan.to_json()
    assert run.settings.updates_per_epoch == UPDATES
    assert (plan["shape"], plan["base_lr"], plan["total_steps"]) == (shape, pytest.approx(peak), total)
    assert plan["warmup_steps"] == math.ceil(ratio * total)
    assert plan["cycles"] == cycles and plan["min_lr"] == 0
    text = plan_text(run)
    assert text.splitlines()[0] == "plan for train.py"
    assert f"updates {UPDATES} per epoch" in text and "train 200, validation 16" in text
    assert ("bf16 autocast" in text) == runs_bf16_natively(torch.device("cpu"))  # --bf16: fp32 where emulated
    assert not out.exists()  # validating writes nothing


def test_max_steps_overrides_the_total_but_not_the_row(tmp_path: Path) -> None:
    args = parse(["--num_epochs", "10", *SHRINK, "--max_steps", "30", "--output_dir", str(tmp_path / "r")])
    plan = checked(TrainPy(), args, World(), torch.device("cpu")).settings.plan.to_json()
    assert (plan["shape"], plan["total_steps"], plan["warmup_steps"]) == ("cosine", 30, 3)
    assert plan["sources"]["total"] == "--max_steps 30"


def test_accumulation_counts_updates_not_batches(tmp_path: Path) -> None:
    # 200 examples / batch 20 = 10 batches; A = 3 -> ceil(10 / 3) = 4 updates per epoch
    argv = ["--num_epochs", "2.5", *SHRINK, "--per_device_train_batch_size", "20", "--gradient_accumulation_steps", "3"]
    run = checked(TrainPy(), parse([*argv, "--output_dir", str(tmp_path / "r")]), World(), torch.device("cpu"))
    assert (run.settings.batches, run.settings.updates_per_epoch, run.settings.plan.schedule.total) == (10, 4, 10)
