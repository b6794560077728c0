"""The DINO training loop: run state, updates, checkpoints, evaluation and the metrics.

Every scheduled value is a function of the step ``t`` (optimizer updates completed so far):
the LR (``ScheduledLR``), the weight decay (``ScheduledField``), the teacher momentum and the
teacher temperature (``Schedule`` objects evaluated at ``t``). ``Settings`` and ``Schedules``
(what ``main`` resolves from the flags) are defined here, the module that consumes them.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import statistics
import struct
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lrsched.errors import ScheduleError, UsageError
from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common.device import autocast, describe_device
from lrsched.recipes.common.distributed import World, any_rank, barrier
from lrsched.recipes.common.faults import INJECT_NAN, STOP_AT, NonFiniteLoss, hook_step
from lrsched.recipes.common.runlog import RunLog, write_json
from lrsched.recipes.common.stopping import Stopped, StopRequest
from lrsched.recipes.dino import knn
from lrsched.recipes.dino.augment import Geometry, Photometric, as_float
from lrsched.recipes.dino.data import Dataset, Sampler, Source, mix
from lrsched.recipes.dino.flags import PROG, PROGRAM_ID, flag_strings, spelling
from lrsched.recipes.dino.head import DINONet
from lrsched.recipes.dino.loss import DINOLoss, koleo
from lrsched.recipes.dino.model import build_networks, ema_update, param_groups, reference_group
from lrsched.recipes.dino.stream import Batch, eval_batches, train_loader
from lrsched.recipes.dino.vit import Preset
from lrsched.schedules import (
    AnySchedule,
    Schedule,
    describe,
    differences,
    from_description,
    replan,
)
from lrsched.strategy import Plan
from lrsched.torch_sched import OnMismatch, ScheduledField, ScheduledLR

LOG_COLUMNS = (
    "step",
    "lr",
    "weight_decay",
    "momentum",
    "teacher_temp",
    "loss",
    "images_per_s",
    "teacher_entropy",
    "koleo",
    "grad_norm",
    "last_layer_frozen",
    "data_wait_s",
)
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
TIMING_WINDOW = 1000
"""Steps whose durations are kept for the median: a run of any length holds the same amount."""
RAW_PIXELS_SIDE = 32
"""k-NN on raw pixels compares whole images shrunk to at most this side (Fashion-MNIST: its own 28 px)."""


# --- what main resolves ------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedules:
    """The four targets the flags ask for, and where each value came from."""

    lr: Plan
    weight_decay: Schedule
    momentum: Schedule
    teacher_temp: Schedule
    freeze_last_layer: int
    sources: dict[str, str]

    def targets(self) -> dict[str, Schedule]:
        return {
            "lr": self.lr.schedule,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "teacher_temp": self.teacher_temp,
        }


@dataclass
class Settings:
    """Parsed flags resolved and checked: the model size, the schedules, data, resume point."""

    args: argparse.Namespace
    preset: Preset
    schedules: Schedules
    data: Dataset
    output_dir: Path
    resume: dict[str, Any] | None
    resume_path: Path | None


# --- the state of a run ----------------------------------------------------------------------


@dataclass
class Run:
    """Everything the loop changes; ``t`` (updates done) is the single source of truth."""

    settings: Settings
    world: World
    device: torch.device
    student: DINONet
    teacher: DINONet
    ddp: nn.Module
    optimizer: torch.optim.AdamW
    lr_sched: ScheduledLR
    wd_sched: ScheduledField
    momentum: AnySchedule
    teacher_temp: AnySchedule
    loss: DINOLoss
    geometry: Geometry
    photometric: Photometric
    sampler: Sampler
    t: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    recent_seconds: deque[float] = field(default_factory=partial(deque, maxlen=TIMING_WINDOW))
    seconds: float = 0.0
    waiting: float = 0.0
    run_id: str | None = None
    saved_at: int | None = None
    """The step of the last checkpoint this process wrote: a step is never saved twice."""
    lr_hash: str = ""
    """``h(t+1) = sha256(h(t) || lr(t))`` over the steps this process ran: equal on every rank."""
    replanned_at: int | None = None


def adopt(target: Schedule, saved: dict[str, Any], step: int) -> AnySchedule:
    """The saved schedule when the target is unchanged, else ``replan`` from ``step`` (--replan)."""
    if saved["target"] == describe(target):
        return from_description(saved["schedule"])
    return replan(from_description(saved["schedule"]), step, target)


def build_run(s: Settings, world: World, device: torch.device) -> Run:
    """Networks, optimizer, schedulers, loss and data order; restored from the checkpoint if resuming."""
    a, sch = s.args, s.schedules
    student, teacher = build_networks(s.preset, s.data.channels, a.seed)
    student.to(device)
    teacher.to(device)
    groups = param_groups(student, sch.lr.schedule.base, sch.weight_decay.base, a.layer_decay)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    on_mismatch: OnMismatch = "replan" if a.replan else "error"
    lr_sched = ScheduledLR(optimizer, sch.lr.schedule, on_mismatch=on_mismatch)
    wd_sched = ScheduledField(optimizer, sch.weight_decay, "weight_decay", on_mismatch=on_mismatch)
    ddp: nn.Module = student
    if world.distributed:
        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(student, device_ids=ids)
    run = Run(
        settings=s,
        world=world,
        device=device,
        student=student,
        teacher=teacher,
        ddp=ddp,
        optimizer=optimizer,
        lr_sched=lr_sched,
        wd_sched=wd_sched,
        momentum=sch.momentum,
        teacher_temp=sch.teacher_temp,
        loss=DINOLoss(s.preset.out_dim, a.student_temp, a.center_momentum).to(device),
        geometry=_geometry(s),
        photometric=Photometric(s.data.mean, s.data.std),
        sampler=Sampler(len(s.data.train), a.batch_size, world.size, a.seed),
    )
    if s.resume is not None:
        restore(run, s.resume)
    return run


def _geometry(s: Settings) -> Geometry:
    """The crops of the preset's sizes and the flags' counts and scales."""
    a = s.args
    return Geometry(
        s.preset.global_size,
        s.preset.local_size,
        a.local_crops,
        s.data.channels,
        global_scale=(a.global_crops_scale[0], a.global_crops_scale[1]),
        local_scale=(a.local_crops_scale[0], a.local_crops_scale[1]),
    )


# --- checkpoints -----------------------------------------------------------------------------


def check_resume(state: dict[str, Any], args: argparse.Namespace, schedules: Schedules, path: Path) -> None:
    """Refuse a checkpoint that is incomplete, of another model, or with other schedules (without --replan)."""
    needed = ("step", "student", "teacher", "optimizer", "lr_scheduler", "wd_scheduler", "schedules", "center", "flags")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ckpt.CheckpointError(f"--resume {path}: not a complete {PROG} checkpoint (missing {', '.join(missing)})")
    saved, now = state["flags"], flag_strings(args)
    fixed = [f"{spelling(k)} {saved.get(k)!r} -> {now[k]!r}" for k in FIXED_ON_RESUME if saved.get(k) != now[k]]
    if fixed:
        raise UsageError(f"--resume {path}: these flags cannot change on resume: {'; '.join(fixed)}")
    step = int(state["step"])
    changes = []
    for name, target in schedules.targets().items():
        changes += [f"{name}.{d}" for d in differences(_saved_targets(state)[name], describe(target))]
    if changes and not args.replan:
        raise UsageError(
            f"--resume {path}: the schedule flags differ from the checkpoint's "
            f"({'; '.join(changes)}); pass --replan to accept the new horizon"
        )
    if changes and args.max_steps is not None and args.max_steps <= step:
        raise UsageError(f"--max-steps {args.max_steps}: must be greater than the checkpoint's step {step}")
    for name, saved in _saved_schedules(state).items():
        try:
            replan(from_description(saved), step, schedules.targets()[name])
        except ScheduleError as err:
            raise UsageError(f"--replan at step {step}: {name}: {_as_flags(str(err))}") from None


LIBRARY_TO_FLAG = {"warmup=": "--warmup-steps ", "total=": "--max-steps ", "decay=": "decay steps "}


def _as_flags(message: str) -> str:
    """A library error in the command line's words (``warmup=0`` -> ``--warmup-steps 0``)."""
    for name, flag in LIBRARY_TO_FLAG.items():
        message = message.replace(name, flag)
    return message


def _saved_schedules(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    s = state["schedules"]
    return {
        "lr": state["lr_scheduler"]["schedule"],
        "weight_decay": state["wd_scheduler"]["schedule"],
        "momentum": s["momentum"]["schedule"],
        "teacher_temp": s["teacher_temp"]["schedule"],
    }


def _saved_targets(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    s = state["schedules"]
    return {
        "lr": state["lr_scheduler"]["target"],
        "weight_decay": state["wd_scheduler"]["target"],
        "momentum": s["momentum"]["target"],
        "teacher_temp": s["teacher_temp"]["target"],
    }


def restore(run: Run, state: dict[str, Any]) -> None:
    """Load weights, optimizer, schedulers (replanning on --replan), centre, RNG and metrics."""
    t0 = int(state["step"])
    run.student.load_state_dict(state["student"])
    run.teacher.load_state_dict(state["teacher"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.lr_sched.load_state_dict(state["lr_scheduler"])
    run.wd_sched.load_state_dict(state["wd_scheduler"])
    sch = run.settings.schedules
    run.momentum = adopt(sch.momentum, state["schedules"]["momentum"], t0)
    run.teacher_temp = adopt(sch.teacher_temp, state["schedules"]["teacher_temp"], t0)
    run.loss.center.copy_(state["center"].to(run.device))
    ckpt.set_rng_state(state["rng"])
    run.metrics = dict(state.get("metrics", {}))
    run.t = t0
    before = describe(from_description(state["lr_scheduler"]["schedule"]))
    if describe(run.lr_sched.schedule) != before:
        run.replanned_at = t0


def checkpoint_state(run: Run) -> dict[str, Any]:
    """What a resume needs; only tensors, dicts, lists, strings and numbers (``weights_only``)."""
    epoch, batch = run.sampler.position(run.t)
    return {
        "step": run.t,
        "student": run.student.state_dict(),
        "teacher": run.teacher.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "lr_scheduler": run.lr_sched.state_dict(),
        "wd_scheduler": run.wd_sched.state_dict(),
        "schedules": {
            "momentum": {"schedule": describe(run.momentum), "target": describe(run.settings.schedules.momentum)},
            "teacher_temp": {
                "schedule": describe(run.teacher_temp),
                "target": describe(run.settings.schedules.teacher_temp),
            },
        },
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
        "flags": flag_strings(run.settings.args),
        "metrics": run.metrics,
    }


def save(run: Run) -> Path:
    """Rank 0 writes ``checkpoints/step-<t>.pt`` atomically (once per step) and prunes old ones; all ranks wait."""
    directory = run.settings.output_dir / "checkpoints"
    path = ckpt.step_path(directory, run.t)
    if run.world.is_main and run.saved_at != run.t:
        ckpt.save_checkpoint(checkpoint_state(run), path, PROGRAM_ID, run_id=run.run_id)
        ckpt.prune_checkpoints(directory, run.settings.args.keep_checkpoints)
    run.saved_at = run.t
    barrier(run.world)
    return path


def changed_on_resume(s: Settings) -> dict[str, list[str]]:
    """Flags this resume changed that may change (``[checkpoint's, now]``); empty for a fresh run."""
    if s.resume is None:
        return {}
    saved, now = s.resume["flags"], flag_strings(s.args)
    ignored = set(FIXED_ON_RESUME) | set(CHANGEABLE_UNRECORDED)
    return {k: [saved.get(k, ""), v] for k, v in now.items() if k not in ignored and saved.get(k, "") != v}


def plan_json(run: Run) -> dict[str, Any]:
    """Every schedule the run follows (possibly replanned), its target and the source of each value."""
    sch = run.settings.schedules
    src = sch.sources

    def entry(schedule: AnySchedule, target: Schedule, keys: Sequence[str]) -> dict[str, Any]:
        return {"schedule": describe(schedule), "target": describe(target), "sources": {k: src[k] for k in keys}}

    return {
        "lr": {**sch.lr.to_json(), "schedule": describe(run.lr_sched.schedule), "target": describe(sch.lr.schedule)},
        "weight_decay": entry(run.wd_sched.schedule, sch.weight_decay, ("weight_decay", "weight_decay_end")),
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


# --- evaluation ------------------------------------------------------------------------------


def _features(
    run: Run, source: Source, ids: torch.Tensor, net: DINONet | None, stop: StopRequest
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of images ``ids`` (teacher CLS, or raw pixels when ``net`` is None) and labels, a batch at a time.

    In one process a stop request raises ``Stopped`` between batches; under torchrun rank 0
    finishes (the other ranks wait for it) and every rank stops after (``stop_point``).
    """
    s = run.settings
    size = s.preset.global_size if net is not None else min(s.preset.global_size, RAW_PIXELS_SIDE)
    features, labels = [], []
    for pixels, y in eval_batches(source, ids, size, s.args.workers):
        if not run.world.distributed:
            stop.check()
        x = as_float(pixels.to(run.device))
        if net is None:
            features.append(x.flatten(1))
        else:
            with autocast(run.device, s.args.bf16):
                features.append(net.backbone(run.photometric.normalise(x)).float())
        labels.append(y)
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def knn_eval(run: Run, net: DINONet | None, stop: StopRequest) -> float | None:
    """Weighted k-NN top-1 on teacher CLS features (``net``), or on raw pixels when ``net`` is None."""
    s = run.settings
    if s.data.knn_train is None or s.data.knn_test is None:
        return None
    tr = knn.subset(len(s.data.knn_train), s.args.knn_train_samples)
    te = knn.subset(len(s.data.knn_test), s.args.knn_test_samples, seed=1)
    was_training = net.training if net is not None else False
    if net is not None:
        net.eval()
    try:
        train_f, train_y = _features(run, s.data.knn_train, tr, net, stop)
        test_f, test_y = _features(run, s.data.knn_test, te, net, stop)
    finally:
        if net is not None:
            net.train(was_training)
    return knn.knn_top1(train_f, train_y, test_f, test_y)


def stop_point(run: Run, stop: StopRequest) -> None:
    """A point every rank passes: ``Stopped`` on all of them when any rank got a signal."""
    if any_rank(stop.requested is not None, run.world, run.device):
        raise Stopped(stop.requested or "a signal to another rank")


def evaluate(run: Run, stop: StopRequest) -> None:
    """k-NN of the teacher at step ``t`` on rank 0 (recorded in the metrics); others wait."""
    if run.world.is_main:
        acc = knn_eval(run, run.teacher, stop)
        if acc is not None:
            run.metrics["knn_top1"] = acc
            history = run.metrics.setdefault("knn_history", [])
            if history and history[-1][0] == run.t:  # evaluated at this step already (a resumed, finished run)
                history.pop()
            history.append([run.t, acc])
            say(
                run,
                f"step {run.t}: k-NN top-1 {acc:.4f} (at init {run.metrics.get('knn_top1_at_init', 0):.4f}, "
                f"raw pixels {run.metrics.get('knn_top1_raw_pixels', 0):.4f})",
            )
    barrier(run.world)
    stop_point(run, stop)


def baselines(run: Run, stop: StopRequest) -> None:
    """k-NN on raw pixels and on the network at initialisation (until both are recorded)."""
    if run.world.is_main and "knn_top1_at_init" not in run.metrics:
        run.metrics["knn_top1_raw_pixels"] = knn_eval(run, None, stop)
        run.metrics["knn_top1_at_init"] = knn_eval(run, run.teacher, stop)
        raw, init = run.metrics["knn_top1_raw_pixels"], run.metrics["knn_top1_at_init"]
        if init is not None:
            run.metrics["knn_history"] = [[run.t, init]]  # the curve starts at the network at init
        if raw is not None and init is not None:
            say(run, f"k-NN top-1 before training: raw pixels {raw:.4f}, network at init {init:.4f}")
    barrier(run.world)
    stop_point(run, stop)


# --- training loop ---------------------------------------------------------------------------


def say(run: Run, text: str) -> None:
    """A line for the person watching (rank 0), printed above the progress bar."""
    if run.world.is_main:
        from tqdm import tqdm

        tqdm.write(text)


def _losses(run: Run, batch: Batch, temp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's views at step ``t``, student and teacher forward: (loss, teacher entropy, KoLeo)."""
    s, t = run.settings, run.t
    g = torch.Generator().manual_seed(mix(s.args.seed, t, run.world.rank))
    global_px = batch.global_px.to(run.device, non_blocking=True)
    crops = run.photometric(global_px, batch.local_px.to(run.device, non_blocking=True), g)
    with autocast(run.device, s.args.bf16):
        features, student_out = run.ddp([crops.global_crops, crops.local_crops])
        with torch.no_grad():
            _, teacher_out = run.teacher([crops.global_crops])
    loss, entropy = run.loss(student_out, teacher_out, 2, temp)
    spread = torch.stack([koleo(f) for f in features[: crops.global_crops.shape[0]].chunk(2)]).mean()
    if s.args.koleo_weight > 0:
        loss = loss + s.args.koleo_weight * spread
    if hook_step(INJECT_NAN) == t:
        loss = loss * float("nan")
    return loss, entropy, spread


def _backward(
    run: Run, loss: torch.Tensor, entropy: torch.Tensor, spread: torch.Tensor, stop: StopRequest
) -> torch.Tensor:
    """Gradients of ``loss``; returns ``[loss, entropy, spread, stop flag]`` averaged (the flag summed) over ranks.

    Raises ``NonFiniteLoss`` before anything of the step is applied.
    """
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    stop_flag = torch.tensor(float(stop.requested is not None), device=loss.device)
    stats = torch.stack([loss.detach(), entropy, spread.detach(), stop_flag])
    if run.world.distributed:
        dist.all_reduce(stats)
        stats[:3] /= run.world.size
    if not math.isfinite(float(stats[0])):
        raise NonFiniteLoss(f"non-finite loss ({float(stats[0])}) at step {run.t}")
    return stats


def _update(run: Run, momentum: float) -> tuple[torch.Tensor, bool]:
    """Clip, AdamW (the last layer held while frozen), EMA, schedulers, ``t += 1``: (gradient norm, frozen)."""
    s = run.settings
    params = [p for p in run.student.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, s.args.clip_grad if s.args.clip_grad > 0 else math.inf)
    frozen = run.t < s.schedules.freeze_last_layer
    if frozen:
        run.student.head.last_layer.weight.grad = None
    run.optimizer.step()
    ema_update(run.teacher, run.student, momentum)
    run.lr_sched.step()
    run.wd_sched.step()
    run.t += 1
    return norm, frozen


def train_step(run: Run, batches: Iterator[Batch], stop: StopRequest) -> tuple[dict[str, Any], bool]:
    """One update at step ``t``: wait for the batch, colour, forward, DINO loss, backward, clip, AdamW, EMA.

    Returns the log row (values this step used) and whether any rank was asked to stop.
    """
    s, t = run.settings, run.t
    start = time.perf_counter()
    batch = next(batches)
    wait = time.perf_counter() - start
    assert batch.step == t, f"the data loader is at step {batch.step}, the run at {t}"
    lr, wd = reference_group(run.optimizer)["lr"], reference_group(run.optimizer)["weight_decay"]
    momentum, temp = run.momentum(t), run.teacher_temp(t)
    loss, entropy, spread = _losses(run, batch, temp)
    stats = _backward(run, loss, entropy, spread, stop)
    norm, frozen = _update(run, momentum)
    run.lr_hash = hashlib.sha256(run.lr_hash.encode() + struct.pack("<d", lr)).hexdigest()
    seconds = time.perf_counter() - start
    run.recent_seconds.append(seconds)
    run.seconds += seconds
    run.waiting += wait
    row = {
        "step": t,
        "lr": lr,
        "weight_decay": wd,
        "momentum": momentum,
        "teacher_temp": temp,
        "loss": float(stats[0]),
        "images_per_s": s.args.batch_size * run.world.size / seconds,
        "teacher_entropy": float(stats[1]),
        "koleo": float(stats[2]),
        "grad_norm": float(norm),
        "last_layer_frozen": int(frozen),
        "data_wait_s": wait,
    }
    return row, bool(stats[3] > 0) or hook_step(STOP_AT) == run.t


def train(run: Run, log: RunLog | None, stop: StopRequest) -> str:
    """Steps until ``--max-steps`` (or for ever), with evaluation and checkpoints; returns how it ended.

    A signal during a step stops the run after it (the flag travels with the step's all-reduce);
    during an evaluation it raises ``Stopped`` (``main`` saves and exits 0).
    """
    from tqdm import tqdm

    a = run.settings.args
    total = run.settings.schedules.lr.schedule.total
    interval = 1.0 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not a flood
    bar = tqdm(
        total=total, initial=run.t, disable=not run.world.is_main, unit="step", mininterval=interval, file=sys.stderr
    )
    batches = train_loader(
        run.settings.data.train,
        run.geometry,
        run.sampler,
        rank=run.world.rank,
        start=run.t,
        stop=total,
        workers=a.workers,
        pin_memory=run.device.type == "cuda",
    )
    try:
        while total is None or run.t < total:
            row, stop_now = train_step(run, batches, stop)
            if log is not None:
                log.write(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.3g}", img_s=f"{row['images_per_s']:.0f}")
            if stop_now:
                raise Stopped(stop.requested or "a stop request")
            if a.eval_every and run.t % a.eval_every == 0 and run.t != total:
                evaluate(run, stop)
            if a.save_every and run.t % a.save_every == 0 and run.t != total:
                save(run)
    finally:
        bar.close()
        batches.close()  # stops the workers before evaluation starts its own
        _say_data_wait(run)
    evaluate(run, stop)
    save(run)
    return "finished"


def _say_data_wait(run: Run) -> None:
    if run.seconds > 0:
        share = run.waiting / run.seconds
        hint = " (the device starved: try more --workers)" if share > 0.2 else ""
        say(run, f"waited for data {share:.1%} of {run.seconds:.1f} s of training{hint}")


# --- metrics ---------------------------------------------------------------------------------


def write_metrics(run: Run, status: str) -> None:
    """metrics.json: k-NN now, at init and on raw pixels, history, timing, how the run ended."""
    med = statistics.median(run.recent_seconds) if run.recent_seconds else None
    data = {
        "knn_top1": run.metrics.get("knn_top1"),
        "knn_top1_at_init": run.metrics.get("knn_top1_at_init"),
        "knn_top1_raw_pixels": run.metrics.get("knn_top1_raw_pixels"),
        "knn_history": run.metrics.get("knn_history", []),
        "knn_train_samples": run.settings.args.knn_train_samples,
        "knn_test_samples": run.settings.args.knn_test_samples,
        "step": run.t,
        "status": status,
        "seconds_per_step_median": med,
        "seconds_per_step_window": TIMING_WINDOW,
        "data_wait_fraction": run.waiting / run.seconds if run.seconds else None,
        "world_size": run.world.size,
        "device": describe_device(run.device),
    }
    data.update({k: v for k, v in run.metrics.items() if k == "ranks"})
    write_json(run.settings.output_dir / "metrics.json", data)


def rank_fingerprints(run: Run) -> None:
    """Under torchrun: every rank's hash of its LR trace and weights, gathered into the metrics."""
    if not run.world.distributed:
        return
    weights = hashlib.sha256()
    for net in (run.student, run.teacher):
        for p in net.parameters():
            weights.update(p.detach().cpu().contiguous().numpy().tobytes())
    mine = {"rank": run.world.rank, "step": run.t, "lr_trace": run.lr_hash, "weights": weights.hexdigest()}
    gathered: list[Any] = [None] * run.world.size
    dist.all_gather_object(gathered, mine)
    run.metrics["ranks"] = gathered
