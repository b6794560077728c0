"""Helpers for train.py's tests: run it in-process (or as a subprocess), read its outputs.

The runs use the real MiniLM model and the real tweet corpus, shrunk with
--max_train_samples, small batches and --max_steps so that an update takes about a second.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import TRAIN_ENTRY, run_program

from lrsched.recipes.common.runlog import read_log
from lrsched.recipes.finetune.main import main
from lrsched.schedules import Schedule

TINY = ["--max_eval_samples", "8", "--per_device_eval_batch_size", "8", "--disable_tqdm", "--save_total_limit", "3"]


def run_train(args: list[str]) -> int:
    """train.py's main in this process: its exit status (argparse's refusals included)."""
    return main(args)


def run_train_subprocess(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_program(TRAIN_ENTRY, args, timeout=timeout)


def schedule_from_plan(plan: dict[str, Any]) -> Schedule:
    """The schedule a plan.json describes, rebuilt from its numbers alone."""
    return Schedule(
        plan["shape"],
        base=plan["base_lr"],
        final=plan["min_lr"],
        warmup=plan["warmup_steps"],
        total=plan["total_steps"],
        cycles=plan["cycles"] if plan["cycles"] is not None else 1.0,
    )


def outputs(out: Path) -> tuple[dict[str, Any], list[dict[str, str]], dict[str, Any]]:
    """plan.json, the rows of log.csv and eval.json of a finished run."""
    plan = json.loads((out / "plan.json").read_text())
    return plan, read_log(out / "log.csv"), json.loads((out / "eval.json").read_text())


def assert_log_follows_plan(out: Path) -> None:
    """One row per update, steps 0..T-1, each with exactly the plan's LR for that step."""
    plan, rows, _ = outputs(out)
    schedule = schedule_from_plan(plan)
    assert [int(r["step"]) for r in rows] == list(range(plan["total_steps"]))
    for r in rows:
        expected = schedule(int(r["step"]))
        assert float(r["lr"]) == pytest.approx(expected, rel=1e-12, abs=1e-20), r
