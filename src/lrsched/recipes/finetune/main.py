"""train.py: validate everything, print the plan, then train (``loop.py``) and report.

Order of work, so that bad input never leaves a trace:
1. parse flags; read and split the data; find the model; size the run; resolve the plan;
   read and check a checkpoint to resume from; check the output directory. Any problem is
   one line naming the flag and the rule, exit status 2, and nothing is created.
2. print the plan (as ``lrsched show`` does) and the run size;
3. create the output directory, write ``plan.json`` and ``args.json``, and train.

Exit status: 0 done (or stopped by SIGINT/SIGTERM after saving a checkpoint), 2 bad input,
3 a non-finite training loss or gradient (the run stops before that update; the last good
checkpoint stays as it was), 1 anything unexpected (with a traceback).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lrsched.args import finetune_plan
from lrsched.recipes.common.checkpoint import load_checkpoint, resolve_resume
from lrsched.recipes.common.device import describe_device, pick_device
from lrsched.recipes.common.distributed import World, close_world, init_world
from lrsched.recipes.common.runlog import write_json
from lrsched.recipes.finetune import data as D
from lrsched.recipes.finetune import model as M
from lrsched.recipes.finetune.flags import PROG, parse
from lrsched.schedules import ScheduleError, describe, differences
from lrsched.strategy import Plan, UsageError, updates_per_epoch
from lrsched.torch_sched import ScheduleMismatch

PROGRAM = "train.py"
EXIT_USAGE, EXIT_NONFINITE = 2, 3
RUN_FILES = ("plan.json", "args.json", "log.csv", "eval.json", "curves.png", "checkpoints", "best", "last", "tb")


class NonFiniteLoss(RuntimeError):
    """The training loss or gradient norm of an update is NaN or infinite."""


@dataclass
class Run:
    """Everything a validated run needs: nothing in it has touched the output directory."""

    args: argparse.Namespace
    world: World
    device: torch.device
    splits: D.Splits
    model_dir: Path
    tokenizer: Any
    model: torch.nn.Module
    batches: int
    updates_per_epoch: int
    plan: Plan
    output_dir: Path
    resume: dict[str, Any] | None
    resume_path: Path | None
    identity: dict[str, Any]


# ---------------------------------------------------------------- validation


def data_flags(args: argparse.Namespace) -> D.DataFlags:
    return D.DataFlags(
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        text_column=args.text_column,
        label_column=args.label_column,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        max_test_samples=args.max_test_samples or args.max_eval_samples,
        seed=args.seed,
    )


def size_run(args: argparse.Namespace, n_train: int, world: World) -> tuple[int, int]:
    """``(B, U)``: per-rank batches of an epoch and optimizer updates per epoch, ``ceil(B / A)``."""
    batches = D.batches_per_epoch(n_train, args.per_device_train_batch_size, world.size)
    accum = args.gradient_accumulation_steps
    if accum > batches:
        raise UsageError(
            f"--gradient_accumulation_steps {accum}: larger than the {batches} batches of an epoch "
            f"({n_train} examples, batch {args.per_device_train_batch_size}, {world.size} process(es))"
        )
    return batches, updates_per_epoch(batches, accum)


def run_identity(args: argparse.Namespace, splits: D.Splits, world: World, model: torch.nn.Module) -> dict[str, Any]:
    """What a resumed run must share with its checkpoint besides the plan (same data order)."""
    return {
        "model": M.fingerprint(model),
        "labels": list(splits.label_names),
        "train_size": len(splits.train),
        "data": splits.source,
        "seed": args.seed,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "world_size": world.size,
    }


def check_resume(state: dict[str, Any], plan: Plan, identity: dict[str, Any], flag: str) -> None:
    """Refuse a checkpoint of another model, another data order or another plan, listing differences."""
    saved = state.get("identity", {})
    if saved.get("model") != identity["model"]:
        raise UsageError(f"{flag}: the checkpoint is of another model (parameter names or shapes differ from --model)")
    changed = differences(saved, identity)
    if changed:
        raise UsageError(f"{flag}: the checkpoint is of another run ({'; '.join(changed)})")
    saved_target = state["scheduler"].get("target", state["scheduler"]["schedule"])
    changed = differences(saved_target, describe(plan.schedule))
    if changed:
        raise ScheduleMismatch(
            f"{flag}: the checkpoint's schedule differs ({'; '.join(changed)}); "
            "resume with the flags it was started with"
        )


def check_output_dir(path: Path, resuming: bool, overwrite: bool) -> None:
    """A fresh run needs an empty (or missing) directory, or --overwrite_output_dir."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output_dir {path}: exists and is not a directory")
    if resuming or overwrite or not path.is_dir():
        return
    found = [name for name in RUN_FILES if (path / name).exists()]
    if found:
        raise UsageError(
            f"--output_dir {path}: holds a run already ({', '.join(found)}); "
            "pass --resume_from_checkpoint latest to continue it or --overwrite_output_dir to replace it"
        )


def default_output_dir() -> Path:
    return Path("runs") / f"train-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare(args: argparse.Namespace, world: World, device: torch.device) -> Run:
    """Check every input and build the run; raises ``UsageError`` before anything is written."""
    splits = D.load_splits(data_flags(args))
    model_dir = args.model if args.model is not None else M.default_model_dir()
    M.check_model_dir(model_dir)
    tokenizer = M.load_tokenizer(model_dir)
    batches, upe = size_run(args, len(splits.train), world)
    plan = finetune_plan(args, upe)
    output_dir = args.output_dir if args.output_dir is not None else default_output_dir()
    flag = "--resume_from_checkpoint"
    resume_path = resolve_resume(args.resume_from_checkpoint, output_dir, flag)
    state = None if resume_path is None else load_checkpoint(resume_path, PROGRAM, f"{flag} {resume_path}")
    check_output_dir(output_dir, state is not None, args.overwrite_output_dir)
    torch.manual_seed(args.seed)  # the new classification head
    model = M.load_model(model_dir, splits.label_names)
    identity = run_identity(args, splits, world, model)
    if state is not None:
        check_resume(state, plan, identity, f"{flag} {resume_path}")
    return Run(
        args,
        world,
        device,
        splits,
        model_dir,
        tokenizer,
        model,
        batches,
        upe,
        plan,
        output_dir,
        state,
        resume_path,
        identity,
    )


# ---------------------------------------------------------------- the printout


def plan_text(run: Run) -> str:
    """The plan as ``lrsched show`` prints it, then the run size."""
    s, a = run.splits, run.args
    t = run.plan.schedule.total
    lines = ["plan for train.py", *run.plan.lines(), "", "run:"]
    lines.append(f"  data    {s.source}")
    lines.append(f"  labels  {', '.join(s.label_names)}")
    test = "none" if s.test is None else str(len(s.test))
    lines.append(f"  sizes   train {len(s.train)}, validation {len(s.validation)}, test {test}")
    lines.append(
        f"  updates {run.updates_per_epoch} per epoch = ceil({run.batches} batches of "
        f"{a.per_device_train_batch_size} / accumulation {a.gradient_accumulation_steps}); total {t}"
    )
    procs = f", {run.world.size} processes" if run.world.distributed else ""
    precision = "bf16 autocast" if a.bf16 else "fp32"
    lines.append(f"  device  {describe_device(run.device)}{procs}, {precision}")
    lines.append(f"  model   {run.model_dir}")
    lines.append(f"  output  {run.output_dir}")
    if run.resume is not None:
        lines.append(f"  resume  from step {run.resume['step']} of {t}")
    return "\n".join(lines)


def start_output(run: Run) -> None:
    """Create the output directory (rank 0), clearing an old run only with --overwrite_output_dir."""
    out = run.output_dir
    if run.resume is None and run.args.overwrite_output_dir and out.is_dir():
        for name in RUN_FILES:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if run.resume_path is not None:  # resuming into another directory: bring the best model along
        old_best = run.resume_path.resolve().parent.parent / "best"
        if old_best.is_dir() and not (out / "best").exists():
            shutil.copytree(old_best, out / "best")
    write_json(out / "plan.json", run.plan.to_json())
    write_json(out / "args.json", {k: (str(v) if v is not None else None) for k, v in vars(run.args).items()})


# ---------------------------------------------------------------- entry


def fail(world: World, message: str, status: int) -> int:
    if world.is_main:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    close_world(world)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run train.py; returns the exit status (see the module docstring)."""
    args = parse(argv)
    from lrsched.recipes.finetune import loop

    world = World()
    try:
        device = pick_device(args.device)
    except RuntimeError as err:  # an unknown device name
        return fail(world, f"--device {args.device}: {str(err).splitlines()[0]}", EXIT_USAGE)
    try:
        world = init_world(device.type)
        run = prepare(args, world, device)
    except (UsageError, ScheduleError) as err:
        return fail(world, str(err), EXIT_USAGE)
    if world.is_main:
        print(plan_text(run), flush=True)
        start_output(run)
    try:
        loop.train(run)
    except NonFiniteLoss as err:
        return fail(world, str(err), EXIT_NONFINITE)
    close_world(world)
    return 0
