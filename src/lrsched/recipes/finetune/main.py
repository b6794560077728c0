"""train.py: fine-tune a pretrained transformer with lrsched's run-length strategy (docs/train.md).

The run skeleton (``recipes/common/skeleton.py``) calls the parts below in order -- parse, settle
(``validate``), build (``validate.load_checked_model``, ``loop.build_run``), start, train
(``loop.train``), report -- and owns the exit statuses, signals and failures (the table:
docs/design.md, "Exit statuses and what is proved").
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from lrsched.flags import args_json
from lrsched.paths import PathKind
from lrsched.recipes.common import skeleton
from lrsched.recipes.common.device import describe_device, precision_text
from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.rundir import Folder
from lrsched.recipes.common.runlog import write_json
from lrsched.recipes.common.stopping import StopRequest
from lrsched.recipes.finetune import checkpoint, flags, loop, validate
from lrsched.recipes.finetune import plan as lr_plan
from lrsched.recipes.finetune.flags import OUTPUT_FLAG, OVERWRITE_FLAG, PROG, PROGRAM_ID, RESUME_FLAG
from lrsched.recipes.finetune.state import Settings, State

RUN_FILES = (
    "plan.json",
    "args.json",
    "log.csv",
    "eval.json",
    "curves.png",
    "checkpoints",
    "best",
    "last",
    "tb",
    "error.log",
)
"""What a train.py run leaves in its folder (cleared when a run that never saved restarts there)."""


# --- the program's parts, in the skeleton's order ----------------------------------------------


class TrainPy(skeleton.Recipe[Settings, State]):
    """train.py's parts of the run skeleton."""

    prog = PROG
    folder = Folder(PROGRAM_ID, RUN_FILES, OUTPUT_FLAG, RESUME_FLAG, OVERWRITE_FLAG)
    unsaved = "--save_strategy no: no checkpoint to continue from"
    path_flags = (
        ("train_file", "--train_file", PathKind.FILE),
        ("validation_file", "--validation_file", PathKind.FILE),
        ("test_file", "--test_file", PathKind.FILE),
        ("model", "--model", PathKind.FOLDER),
        ("output_dir", OUTPUT_FLAG, PathKind.FOLDER),
        ("resume_from_checkpoint", RESUME_FLAG, PathKind.FILE),
    )

    def parse(self, argv: Sequence[str] | None) -> argparse.Namespace:
        return flags.parse(argv)

    def settle(self, args: argparse.Namespace, world: World, device: torch.device) -> Settings:
        return validate.settle(args, world)

    def build(self, settings: Settings, world: World, device: torch.device) -> State:
        model, identity = validate.load_checked_model(settings, world, device)
        return loop.build_run(settings, world, device, model, identity)

    def start(self, run: State) -> None:
        if run.world.is_main:
            print(plan_text(run), flush=True)
            start_output(run)
            run.log = loop.open_log(run)

    def train(self, run: State, stop: StopRequest) -> str:
        return loop.train(run, stop)

    def save(self, run: State, together: bool = True) -> Path | None:
        return checkpoint.save(run, together)

    def close(self, run: State, status: str) -> None:
        if run.log is not None:
            run.log.close()

    def report(self, run: State, status: str) -> None:
        self.close(run, status)
        if run.world.is_main and status == loop.FINISHED:
            print("\n".join(loop.result_lines(run)), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run train.py; the exit status (``recipes/common/exits.py``)."""
    return skeleton.run(TrainPy(), argv)


# --- what the run prints and writes first ------------------------------------------------------


def plan_text(run: State) -> str:
    """The plan as ``lrsched show`` prints it, then the run size."""
    settings, a = run.settings, run.settings.args
    s, plan, total = settings.splits, settings.plan, settings.plan.schedule.total
    test = "none" if s.test is None else str(len(s.test))
    procs = f", {run.world.size} processes" if run.world.distributed else ""
    precision = precision_text(run.device, a.bf16)
    lines = [
        "plan for train.py",
        *plan.lines(),
        "",
        "run:",
        f"  data    {s.source}",
        f"  labels  {', '.join(s.label_names)}",
        f"  sizes   train {len(s.train)}, validation {len(s.validation)}, test {test}",
        f"  updates {settings.updates_per_epoch} per epoch = ceil({settings.batches} batches of "
        f"{a.per_device_train_batch_size} / accumulation {a.gradient_accumulation_steps}); total {total}",
        f"  device  {describe_device(run.device)}{procs}, {precision}",
        f"  model   {settings.model_dir}",
        f"  output  {settings.output_dir}",
    ]
    if settings.resume is not None:
        lines.append(f"  resume  from step {settings.resume['step']} of {total}")
    if run.lr.replanned is not None:
        lines.append(f"  replan  {run.lr.replanned}")
    return "\n".join(lines)


def start_output(run: State) -> None:
    """Rank 0, in the claimed folder: plan.json and args.json, and ``best/`` brought along when
    resuming from another run's folder."""
    settings = run.settings
    out = settings.output_dir
    if settings.resume_path is not None:
        old_best = settings.resume_path.resolve().parent.parent / "best"
        if old_best.is_dir() and not (out / "best").exists():
            shutil.copytree(old_best, out / "best")
    write_json(out / "plan.json", settings.plan.to_json())
    write_json(out / "args.json", args_json(settings.args, lr_plan.DEFAULTS))
