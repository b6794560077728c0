"""phase5's checkpoints: saving one, the identity a resume may not change, checking a checkpoint,
restoring it, plan.json. train.py's ``recipes/finetune/checkpoint.py`` does the same jobs with the same
helpers (``recipes/common/checkpoint.py``): the step under one key, each schedule once, the identity
as named fields."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrsched.adoption import OnMismatch, adopt, describe, from_description
from lrsched.errors import ScheduleError, ScheduleMismatch, UsageError
from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common.distributed import barrier
from lrsched.recipes.common.skeleton import AlreadyFinished
from lrsched.recipes.dino.flags import PROG, PROGRAM_ID, flag_strings, spelling
from lrsched.recipes.dino.state import Schedules, Settings, State
from lrsched.schedules import AnySchedule, Schedule

FIXED_ON_RESUME = (
    "preset",
    "out_dim",
    "global_size",
    "local_size",
    "layer_decay",
    "batch_size",
    "seed",
    "local_crops",
    "global_crops_scale",
    "local_crops_scale",
    "koleo_weight",
    "student_temp",
    "center_momentum",
    "clip_grad",
)
"""Flags a resumed run must keep: they define the model, its parameter groups, its batches and its loss.

The data is checked by its fingerprint instead (``--accept-data-change``), the schedules by their
targets (``--replan``). Every other flag (devices, ``--bf16``, ``--workers``, evaluation, saving)
may change; plan.json records what did (``changed_on_resume``).
"""
CHANGEABLE_UNRECORDED = ("resume", "replan", "accept_data_change", "output_dir")
OLDER_SCHEDULE_KEYS = {"lr": "lr_scheduler", "weight_decay": "wd_scheduler"}
"""Where a checkpoint written before the run had one step counter keeps the lr and the weight decay."""


def identity(args: argparse.Namespace) -> ckpt.Identity:
    """What a resumed run must share with its checkpoint: each flag of ``FIXED_ON_RESUME`` as typed."""
    now = flag_strings(args)
    return {name: ckpt.Fixed(now[name], spelling(name)) for name in FIXED_ON_RESUME}


def saved_identity(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's identity (``identity``; a checkpoint written before it had one: its ``flags``)."""
    if "identity" in state:
        return dict(state["identity"])
    return {name: state["flags"].get(name) for name in FIXED_ON_RESUME}


def check_resume(state: dict[str, Any], args: argparse.Namespace, schedules: Schedules, path: Path) -> None:
    """Refuse a checkpoint that is incomplete, of another model, or with other schedules (without --replan)."""
    needed = ("step", "student", "teacher", "optimizer", "schedules", "center")
    missing = [k for k in (*needed, "flags", "data", "metrics") if k not in state]
    if missing:
        raise ckpt.CheckpointError(f"--resume {path}: not a complete {PROG} checkpoint (missing {', '.join(missing)})")
    ckpt.refuse_identity_changes(saved_identity(state), identity(args), f"--resume {path}")
    step, states, changes = ckpt.saved_step(state, f"--resume {path}"), saved_states(state, path), []
    for name, target in schedules.targets().items():
        try:
            adopt(target, states[name])
        except ScheduleMismatch as err:
            changes += [f"{name}.{d}" for d in err.changes]
    if changes and not args.replan:
        raise UsageError(
            f"--resume {path}: the schedule flags differ from the checkpoint's "
            f"({'; '.join(changes)}); pass --replan to accept the new horizon"
        )
    if changes and args.max_steps is not None and args.max_steps <= step:
        raise UsageError(f"--max-steps {args.max_steps}: must be greater than the checkpoint's step {step}")
    for name, target in schedules.targets().items():
        try:
            adopt(target, states[name], "replan")
        except ScheduleError as err:
            raise UsageError(f"--replan at step {step}: {name}: {_as_flags(str(err))}") from None


def check_not_finished(state: dict[str, Any], schedules: Schedules, output: Path, path: Path | None) -> None:
    """A finished run resumed with the plan it finished (``check_resume`` refuses any other without
    --replan) into a folder holding its whole report: ``AlreadyFinished``, one line and exit 0, before
    anything is written. A report cut short (no ``metrics.json`` saying finished at this step, or no
    ``curves.png``) is redone by resuming, as before; so is a checkpoint that is not the folder's newest."""
    step, total = ckpt.saved_step(state, f"--resume {path}"), schedules.lr.schedule.total
    newest = path is not None and _same_file(ckpt.latest_checkpoint(output / "checkpoints"), path)
    if total is not None and step >= total and newest and _report_written(output, step):
        raise AlreadyFinished(
            f"the run is finished (step {step} of {total}); nothing to do, nothing written "
            "(--max-steps N --replan extends it)"
        )


def _same_file(a: Path | None, b: Path) -> bool:
    return a is not None and a.resolve() == b.resolve()


def _report_written(output: Path, step: int) -> bool:
    """Whether ``output`` holds the report of a run finished at ``step`` (metrics.json, then curves.png)."""
    try:
        metrics = json.loads((output / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    finished = isinstance(metrics, dict) and metrics.get("status") == "finished" and metrics.get("step") == step
    return finished and (output / "curves.png").is_file()


LIBRARY_TO_FLAG = {"warmup=": "--warmup-steps ", "total=": "--max-steps ", "decay=": "decay steps "}


def _as_flags(message: str) -> str:
    """A library error in the command line's words (``warmup=0`` -> ``--warmup-steps 0``)."""
    for name, flag in LIBRARY_TO_FLAG.items():
        message = message.replace(name, flag)
    return message


SCHEDULED = ("lr", "weight_decay", "momentum", "teacher_temp")
"""The four schedules a checkpoint describes, each once, under ``schedules``."""


def saved_states(state: dict[str, Any], path: Path | str = "checkpoint") -> dict[str, dict[str, Any]]:
    """Each schedule's saved state in the one form ``adopt`` reads (``ckpt.schedule_states``), a checkpoint
    written before the run had one step counter included (``OLDER_SCHEDULE_KEYS``)."""
    return ckpt.schedule_states(state, SCHEDULED, f"--resume {path}", OLDER_SCHEDULE_KEYS)


PATCH_WEIGHT = "backbone.patch_embed.weight"
"""The first layer's weights, ``(dim, channels, patch, patch)``: the images' channel count is its 2nd size."""


def check_channels(state: dict[str, Any], channels: int, path: Path | str, data_dir: str) -> None:
    """Refuse a checkpoint whose network takes another number of image channels than the data has now.

    ``--accept-data-change`` accepts new or removed files; it cannot accept colour files joining a
    grayscale run (or the reverse): the first layer's weights have one slice per channel.
    """
    weight = state.get("student", {}).get(PATCH_WEIGHT)
    saved = int(weight.shape[1]) if weight is not None and weight.ndim == 4 else None
    if saved is None:
        saved = state.get("data", {}).get("fingerprint", {}).get("channels")
    if saved is not None and int(saved) != channels:
        raise UsageError(
            f"--resume {path}: the checkpoint's network takes {_channels(int(saved))} images, but --data-dir "
            f"{data_dir} now has {_channels(channels)} images; --accept-data-change cannot change a network's "
            "input channels: resume on data of the checkpoint's kind, or start a new run"
        )


def _channels(n: int) -> str:
    kind = {1: " (grayscale)", 3: " (colour)"}.get(n, "")
    return f"{n}-channel{kind}"


def restore(run: State, state: dict[str, Any]) -> None:
    """Load weights, optimizer, schedulers (replanning on --replan), centre, RNG and metrics
    (``validate.settle`` has checked the checkpoint against the flags and the data)."""
    t0 = ckpt.saved_step(state, "checkpoint")
    run.student.load_state_dict(state["student"])
    run.teacher.load_state_dict(state["teacher"])
    run.optimizer.load_state_dict(state["optimizer"])
    states = saved_states(state)
    on_mismatch: OnMismatch = "replan" if run.settings.args.replan else "error"
    run.lr.load_state_dict(states["lr"])
    run.weight_decay.load_state_dict(states["weight_decay"])
    run.momentum = adopt(run.settings.schedules.momentum, states["momentum"], on_mismatch)
    run.teacher_temp = adopt(run.settings.schedules.teacher_temp, states["teacher_temp"], on_mismatch)
    run.loss.center.copy_(state["center"].to(run.device))
    ckpt.set_rng_state(state["rng"])
    run.metrics = dict(state["metrics"])
    run.t = t0
    if describe(run.lr.schedule) != describe(from_description(states["lr"]["schedule"])):
        run.replanned_at = t0


def checkpoint_state(run: State) -> dict[str, Any]:
    """What a resume needs; only tensors, dicts, lists, strings and numbers (``weights_only``)."""
    epoch, batch = run.sampler.position(run.t)
    return {
        ckpt.STEP_KEY: run.t,
        "student": run.student.state_dict(),
        "teacher": run.teacher.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        ckpt.SCHEDULES_KEY: {name: _described(run, name, schedule) for name, schedule in run.followed().items()},
        "center": run.loss.center.detach().cpu(),
        "data": {
            "fingerprint": run.settings.data.fingerprint(),
            "epoch": epoch,
            "batch": batch,
            "seed": run.sampler.seed,
            "batch_size": run.sampler.batch,
            "world_size": run.world.size,
        },
        "rng": ckpt.rng_state(),
        "plan": plan_json(run),
        "identity": ckpt.identity_values(identity(run.settings.args)),
        "flags": flag_strings(run.settings.args),
        "metrics": run.metrics,
    }


def _described(run: State, name: str, schedule: AnySchedule) -> dict[str, Any]:
    """One schedule in a checkpoint: the one followed and the one the flags ask for (no step: ``step`` is once)."""
    return {"schedule": describe(schedule), "target": describe(run.settings.schedules.targets()[name])}


def save(run: State, together: bool = True) -> Path:
    """Rank 0 writes ``checkpoints/step-<t>.pt`` atomically (once per step) and prunes old ones; all ranks
    wait (``together``), except after a failure, when the other ranks may never come."""
    directory = run.settings.output_dir / "checkpoints"
    path = ckpt.step_path(directory, run.t)
    if run.saved_step != run.t:
        keep = run.settings.args.keep_checkpoints
        ckpt.save_step_checkpoint(checkpoint_state(run), directory, PROGRAM_ID, run.world, run_id=run.run_id, keep=keep)
    run.saved_step = run.t
    if together:
        barrier(run.world)
    return path


def changed_on_resume(s: Settings) -> dict[str, list[str]]:
    """Flags this resume changed that may change (``[checkpoint's, now]``); empty for a fresh run."""
    if s.resume is None:
        return {}
    saved, now = s.resume["flags"], flag_strings(s.args)
    ignored = set(FIXED_ON_RESUME) | set(CHANGEABLE_UNRECORDED)
    return {k: [saved.get(k, ""), v] for k, v in now.items() if k not in ignored and saved.get(k, "") != v}


def plan_json(run: State) -> dict[str, Any]:
    """Every schedule the run follows (possibly replanned), its target and the source of each value."""
    sch = run.settings.schedules
    src = sch.sources

    def entry(schedule: AnySchedule, target: Schedule, keys: Sequence[str]) -> dict[str, Any]:
        return {"schedule": describe(schedule), "target": describe(target), "sources": {k: src[k] for k in keys}}

    return {
        "lr": {**sch.lr.to_json(), "schedule": describe(run.lr.schedule), "target": describe(sch.lr.schedule)},
        "weight_decay": entry(run.weight_decay.schedule, sch.weight_decay, ("weight_decay", "weight_decay_end")),
        "momentum": entry(run.momentum, sch.momentum, ("momentum_teacher",)),
        "teacher_temp": entry(
            run.teacher_temp,
            sch.teacher_temp,
            ("warmup_teacher_temp", "teacher_temp", "warmup_teacher_temp_steps"),
        ),
        "freeze_last_layer_steps": {"value": sch.freeze_last_layer, "source": src["freeze_last_layer_steps"]},
        "replanned_at": run.replanned_at,
        "changed_on_resume": changed_on_resume(run.settings),
        "param_groups": [
            {"name": g["name"], "lr_mult": g["lr_mult"], "wd_mult": g["wd_mult"], "params": len(g["params"])}
            for g in run.optimizer.param_groups
        ],
    }
