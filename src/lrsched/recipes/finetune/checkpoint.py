"""train.py's checkpoints: saving one, the identity a resume may not change, checking a checkpoint,
restoring it. phase5's ``recipes/dino/checkpoint.py`` does the same jobs with the same helpers
(``recipes/common/checkpoint.py``): the step under one key, each schedule once, the identity as named
fields.

A checkpoint holds ``step``, ``model``, ``optimizer``, ``schedules`` (``{"lr": {"schedule", "target"}}``),
every rank's RNG (dropout), ``history``, ``best``, ``identity`` and ``plan``. One written before this
layout keeps the lr under ``scheduler`` with a step of its own; it resumes when that step is the
checkpoint's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from lrsched.adoption import adopt, describe
from lrsched.errors import ScheduleError, ScheduleMismatch, UsageError
from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common.distributed import World, barrier, every_rank
from lrsched.recipes.common.skeleton import AlreadyFinished, in_flags
from lrsched.recipes.finetune import data as D
from lrsched.recipes.finetune import model as M
from lrsched.recipes.finetune.flags import OUTPUT_FLAG, PROGRAM_ID, RESUME_FLAG
from lrsched.recipes.finetune.state import State
from lrsched.strategy import Plan

SCHEDULED = ("lr",)
"""The schedules a checkpoint describes, each once, under ``schedules``."""
OLDER_SCHEDULE_KEYS = {"lr": "scheduler"}
"""Where a checkpoint written before this layout keeps the lr (a ``ScheduledLR`` state, with its own step)."""


# ---------------------------------------------------------------- the identity


def identity(args: argparse.Namespace, splits: D.Splits, world: World, model: torch.nn.Module) -> ckpt.Identity:
    """What a resumed run must share with its checkpoint besides the plan: the model and the data order.

    A length-grouped order also depends on the texts' token counts, so on ``--max_seq_length``;
    a plain permutation (``--no_group_by_length``, and every checkpoint of an older lrsched) has
    ``group_by_length`` None."""
    grouped = None if args.no_group_by_length else f"tokens up to --max_seq_length {args.max_seq_length}"
    return {
        "model": ckpt.Fixed(M.fingerprint(model), "--model"),
        "labels": ckpt.Fixed(list(splits.label_names), "the labels of --train_file"),
        "train_size": ckpt.Fixed(len(splits.train), "the training examples (--train_file, --max_train_samples)"),
        "data": ckpt.Fixed(splits.source, "--train_file"),
        "seed": ckpt.Fixed(args.seed, "--seed"),
        "per_device_train_batch_size": ckpt.Fixed(args.per_device_train_batch_size, "--per_device_train_batch_size"),
        "gradient_accumulation_steps": ckpt.Fixed(args.gradient_accumulation_steps, "--gradient_accumulation_steps"),
        "world_size": ckpt.Fixed(world.size, "the number of processes (torchrun --nproc_per_node)"),
        "group_by_length": ckpt.Fixed(grouped, "--no_group_by_length/--max_seq_length"),
    }


def lr_state(state: dict[str, Any], where: str) -> dict[str, Any]:
    """The lr schedule's saved state in the one form ``adopt`` reads (``ckpt.schedule_states``)."""
    return ckpt.schedule_states(state, SCHEDULED, where, OLDER_SCHEDULE_KEYS)["lr"]


def check_resume(state: dict[str, Any], plan: Plan, now: ckpt.Identity, flag: str, replan: bool = False) -> None:
    """Refuse a checkpoint of another model, another data order or another plan (without ``replan``:
    --replan), in one line naming the flags; with ``replan``, refuse a new plan only when it would need
    a jump."""
    saved = state["identity"]
    if saved.get("model") != now["model"].value:
        raise UsageError(f"{flag}: the checkpoint is of another model (parameter names or shapes differ from --model)")
    ckpt.refuse_identity_changes(saved, now, flag)
    try:
        adopt(plan.schedule, lr_state(state, flag), "replan" if replan else "error")
    except ScheduleMismatch as err:
        raise ScheduleMismatch(
            f"{flag}: the checkpoint's schedule differs ({'; '.join(err.changes)}); "
            "resume with the flags it was started with, or pass --replan to continue from its LR without a jump",
            err.changes,
        ) from None
    except ScheduleError as err:
        step = ckpt.saved_step(state, flag)
        raise UsageError(f"--replan at step {step}: {in_flags(str(err), OUTPUT_FLAG)}") from None


def check_not_finished(state: dict[str, Any], plan: Plan, output_dir: Path, path: Path | None) -> None:
    """A finished run resumed with the plan it finished into a folder holding its whole report:
    ``AlreadyFinished`` (one line, exit 0, nothing written). A report cut short is redone by resuming;
    so is a checkpoint that is not the folder's newest; a changed plan is ``check_resume``'s to refuse
    or, with --replan, to extend."""
    where = f"{RESUME_FLAG} {path}"
    step, total = ckpt.saved_step(state, where), plan.schedule.total
    newest = path is not None and _same_file(ckpt.latest_checkpoint(output_dir / "checkpoints"), path)
    if total is None or step < total or not newest or not _report_written(output_dir):
        return
    try:
        adopt(plan.schedule, lr_state(state, where))
    except ScheduleMismatch:
        return
    raise AlreadyFinished(
        f"the run is finished (step {step} of {total}); nothing to do, nothing written "
        "(--num_epochs N --replan extends it)"
    )


def _same_file(a: Path | None, b: Path) -> bool:
    return a is not None and a.resolve() == b.resolve()


def _report_written(output_dir: Path) -> bool:
    """Whether the end's report is whole: eval.json with ``ranks`` (only the end writes them), then curves.png."""
    try:
        report = json.loads((output_dir / "eval.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and report.get("ranks") is not None and (output_dir / "curves.png").is_file()


# ---------------------------------------------------------------- saving and restoring


def checkpoint_state(run: State, rngs: list[dict[str, Any]]) -> dict[str, Any]:
    """What a resume needs; only tensors, dicts, lists, strings and numbers (``weights_only``)."""
    return {
        ckpt.STEP_KEY: run.t,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        ckpt.SCHEDULES_KEY: {"lr": {"schedule": describe(run.lr.schedule), "target": describe(run.lr.target)}},
        "rng": rngs,
        "history": run.history,
        "best": run.best,
        "identity": ckpt.identity_values(run.identity),
        "plan": run.settings.plan.to_json(),
    }


def save(run: State, together: bool = True) -> Path | None:
    """A resumable checkpoint at the current step (rank 0 writes; every rank gives its RNG): its path,
    or None with ``--save_strategy no``, or after a failure under torchrun (``together=False``: the
    other ranks' RNG states cannot be gathered).

    Not written again when this step's checkpoint is already on disk (an epoch end, then a stop)."""
    directory = run.settings.output_dir / "checkpoints"
    if run.settings.args.save_strategy == "no" or (run.world.distributed and not together):
        return None
    if run.saved_step == run.t:
        return ckpt.step_path(directory, run.t)
    rngs = every_rank(ckpt.rng_state(), run.world)
    payload = checkpoint_state(run, rngs) if run.world.is_main else {ckpt.STEP_KEY: run.t}
    keep = run.settings.args.save_total_limit
    path = ckpt.save_step_checkpoint(payload, directory, PROGRAM_ID, run.world, run_id=run.run_id, keep=keep)
    run.saved_step = run.t
    barrier(run.world)
    return path


def restore(run: State, state: dict[str, Any]) -> None:
    """Load weights, optimizer, the lr schedule (replanning on --replan), this rank's RNG, the history
    and the best; the step ``run.t`` is the checkpoint's (``load_checked_model`` has checked it against
    the flags and the data)."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.lr.load_state_dict(lr_state(state, "checkpoint"))
    run.t = ckpt.saved_step(state, "checkpoint")
    run.history, run.best = list(state["history"]), state["best"]
    ckpt.set_rng_state(state["rng"][run.world.rank])
    path = run.settings.resume_path
    if path is not None and path.resolve().parent == (run.settings.output_dir / "checkpoints").resolve():
        run.saved_step = run.t
