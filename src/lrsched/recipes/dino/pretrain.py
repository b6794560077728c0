"""phase5_big_run.py: DINO self-supervised ViT pretraining with lrsched's schedules (DESIGN 5).

Sections: flags -> settings (validated before anything is written) -> model and optimizer ->
checkpoints -> evaluation -> training loop -> outputs -> main.

Every scheduled value is a function of the step ``t`` (optimizer updates completed so far):
the LR (``ScheduledLR``), the weight decay (``ScheduledField``), the teacher momentum and the
teacher temperature (``Schedule`` objects evaluated at ``t``). Exit status: 0 finished or
stopped on request (SIGINT/SIGTERM, checkpoint saved), 2 bad input, 3 non-finite loss.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lrsched import args as flags
from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common.device import add_device_flags, autocast, describe_device, pick_device
from lrsched.recipes.common.distributed import World, barrier, close_world, init_world
from lrsched.recipes.common.runlog import RunLog, read_log, write_json
from lrsched.recipes.common.stopping import StopRequest
from lrsched.recipes.dino import knn
from lrsched.recipes.dino.augment import GLOBAL_SCALE, LOCAL_SCALE, MultiCrop, eval_view
from lrsched.recipes.dino.data import Dataset, Sampler, load_dataset, mix
from lrsched.recipes.dino.head import DINOHead, DINONet
from lrsched.recipes.dino.loss import DINOLoss, koleo
from lrsched.recipes.dino.vit import PRESETS, Preset, ViT
from lrsched.schedules import AnySchedule, Schedule, describe, differences, from_description, replan
from lrsched.strategy import Plan, UsageError
from lrsched.torch_sched import OnMismatch, ScheduledField, ScheduledLR

PROG = "phase5_big_run.py"
PROGRAM = "phase5_big_run"
EXIT_NONFINITE = 3
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
)
FIXED_ON_RESUME = ("preset", "out_dim", "global_size", "local_size", "data_dir", "image_size", "layer_decay")
"""Flags a resumed run must keep: they define the model, its parameter groups and its data."""
DEFAULTS: dict[str, Any] = {
    "weight_decay": 0.04,
    "weight_decay_end": 0.4,
    "momentum_teacher": 0.996,
    "teacher_temp": 0.07,
    "warmup_teacher_temp": 0.04,
}
INJECT_NAN = "LRSCHED_INJECT_NAN_AT_STEP"
"""Test hook: the loss of this step is made NaN (fault tests of the non-finite-loss stop)."""
STOP_AT = "LRSCHED_STOP_AT_STEP"
"""Test hook: behave as if SIGTERM arrived once this many steps are done."""


# --- flags -----------------------------------------------------------------------------------


def _probability(text: str) -> float:
    value = flags.nonnegative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"{text}: must be in [0, 1)")
    return value


def _unit_interval(text: str) -> float:
    value = flags.positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"{text}: must be in (0, 1]")
    return value


def build_parser() -> flags.ArgumentParser:
    """Every flag of the program, with help; schedule flags come from lrsched's one table."""
    p = flags.ArgumentParser(
        prog=PROG,
        description="DINO self-supervised ViT pretraining: linear warm-up + cosine decay, "
        "or warm-up + constant for open-ended runs (no --max-steps).",
    )
    flags.add_schedule_flags(p, flags.PRETRAIN_FLAGS, title="learning-rate schedule")
    g = p.add_argument_group("DINO schedules (cosine to the end value over --max-steps; held when open-ended)")
    add = flags.add_flag
    add(g, "weight_decay", type=flags.positive_float, help="weight decay at step 0 (default 0.04)")
    add(g, "weight_decay_end", type=flags.nonnegative_float, help="weight decay at --max-steps (default 0.4)")
    add(g, "momentum_teacher", type=_unit_interval, help="teacher EMA momentum at step 0, rising to 1 (default 0.996)")
    add(g, "teacher_temp", type=flags.positive_float, help="teacher temperature after its warm-up (default 0.07)")
    add(g, "warmup_teacher_temp", type=flags.positive_float, help="teacher temperature at step 0 (default 0.04)")
    add(
        g,
        "warmup_teacher_temp_steps",
        type=flags.nonnegative_int,
        help="teacher temperature warm-up steps (default: --warmup-steps)",
    )
    add(
        g,
        "freeze_last_layer_steps",
        type=flags.nonnegative_int,
        help="steps with the head's last layer frozen (default: --warmup-steps)",
    )
    o = p.add_argument_group("optimisation")
    add(
        o,
        "clip_grad",
        type=flags.nonnegative_float,
        default=3.0,
        help="clip the gradient norm to this (0: off; default 3)",
    )
    add(
        o,
        "layer_decay",
        type=_unit_interval,
        default=1.0,
        help="layer-wise LR decay: block i gets decay**(depth+1-i) (default 1: off)",
    )
    add(o, "center_momentum", type=_probability, default=0.9, help="momentum of the loss centre (default 0.9)")
    add(
        o,
        "koleo_weight",
        type=flags.nonnegative_float,
        default=0.0,
        help="weight of DINOv2's KoLeo regulariser on the student's global-crop CLS features (default 0: plain DINO)",
    )
    add(o, "student_temp", type=flags.positive_float, default=0.1, help="student temperature (default 0.1)")
    m = p.add_argument_group("model and crops")
    add(m, "preset", choices=sorted(PRESETS), default="tiny", help="model size (default tiny: CPU-sized)")
    add(m, "out_dim", type=flags.positive_int, help="prototypes of the DINO head (default: the preset's)")
    add(m, "global_size", type=flags.positive_int, help="global crop size in pixels (default: the preset's)")
    add(m, "local_size", type=flags.positive_int, help="local crop size in pixels (default: the preset's)")
    add(m, "local_crops", type=flags.nonnegative_int, default=6, help="local crops per image (default 6)")
    add(
        m,
        "global_crops_scale",
        type=_unit_interval,
        nargs=2,
        metavar=("LO", "HI"),
        default=list(GLOBAL_SCALE),
        help=f"area range of global crops (default {GLOBAL_SCALE[0]} {GLOBAL_SCALE[1]})",
    )
    add(
        m,
        "local_crops_scale",
        type=_unit_interval,
        nargs=2,
        metavar=("LO", "HI"),
        default=list(LOCAL_SCALE),
        help=f"area range of local crops (default {LOCAL_SCALE[0]} {LOCAL_SCALE[1]})",
    )
    d = p.add_argument_group("data")
    add(
        d,
        "data_dir",
        type=Path,
        help="a folder of images (class sub-folders give k-NN labels; "
        "default: Fashion-MNIST from /usr/share/datasets/fashion-mnist)",
    )
    add(d, "image_size", type=flags.positive_int, help="--data-dir images are resized to this (default: global size)")
    add(d, "batch_size", type=flags.positive_int, default=64, help="images per step on each process (default 64)")
    add(d, "seed", type=flags.nonnegative_int, default=0, help="seed of the model, batches and crops (default 0)")
    e = p.add_argument_group("evaluation (weighted k-NN, k=20, T=0.07, on teacher CLS features)")
    add(e, "eval_every", type=flags.nonnegative_int, default=500, help="k-NN every N steps (0: only at the end)")
    add(
        e,
        "knn_train_samples",
        type=flags.nonnegative_int,
        default=10_000,
        help="labelled training images for k-NN (0: all; default 10000)",
    )
    add(
        e,
        "knn_test_samples",
        type=flags.nonnegative_int,
        default=2_000,
        help="test images for k-NN (0: all; default 2000)",
    )
    r = p.add_argument_group("run")
    add(r, "output_dir", type=Path, help="where the run writes (default runs/phase5-<timestamp>)")
    add(r, "resume", metavar="PATH|latest", help="continue from a checkpoint (latest: newest in --output-dir)")
    add(
        r,
        "save_every",
        type=flags.nonnegative_int,
        default=1000,
        help="checkpoint every N steps (0: only at the end and on stop; default 1000)",
    )
    add(r, "keep_checkpoints", type=flags.positive_int, default=3, help="step checkpoints kept (default 3)")
    add_device_flags(r)
    return p


# --- settings: every check before anything is written ----------------------------------------


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


def _pick(args: argparse.Namespace, name: str, default: Any, sources: dict[str, str]) -> Any:
    """The flag's value, or ``default``; records ``--flag value`` or ``default`` as its source."""
    value = getattr(args, name)
    sources[name] = "default" if value is None else f"{flags.spellings(name)[0]} {value:g}"
    return default if value is None else value


def resolve_schedules(args: argparse.Namespace) -> Schedules:
    """LR plan (lrsched's resolver) plus DINO's weight decay, momentum and temperature schedules."""
    plan = flags.pretrain_plan(args)
    total, warm = plan.schedule.total, plan.schedule.warmup
    src: dict[str, str] = {}
    wd = Schedule(
        "cosine",
        base=_pick(args, "weight_decay", DEFAULTS["weight_decay"], src),
        final=_pick(args, "weight_decay_end", DEFAULTS["weight_decay_end"], src),
        total=total,
    )
    momentum = Schedule(
        "cosine", base=_pick(args, "momentum_teacher", DEFAULTS["momentum_teacher"], src), final=1.0, total=total
    )
    temp_warm = warm if args.warmup_teacher_temp_steps is None else args.warmup_teacher_temp_steps
    src["warmup_teacher_temp_steps"] = (
        "default: --warmup-steps"
        if args.warmup_teacher_temp_steps is None
        else (f"--warmup-teacher-temp-steps {temp_warm}")
    )
    if total is not None and temp_warm >= total:
        raise UsageError(f"--warmup-teacher-temp-steps {temp_warm}: must be less than --max-steps {total}")
    temp = Schedule(
        "constant",
        start=_pick(args, "warmup_teacher_temp", DEFAULTS["warmup_teacher_temp"], src),
        base=_pick(args, "teacher_temp", DEFAULTS["teacher_temp"], src),
        warmup=temp_warm,
        total=total,
    )
    freeze = warm if args.freeze_last_layer_steps is None else args.freeze_last_layer_steps
    src["freeze_last_layer_steps"] = (
        "default: --warmup-steps" if args.freeze_last_layer_steps is None else (f"--freeze-last-layer-steps {freeze}")
    )
    return Schedules(plan, wd, momentum, temp, freeze, src)


def resolve_preset(args: argparse.Namespace) -> Preset:
    """The preset with --out-dim, --global-size and --local-size applied; crops must fit a patch."""
    p = PRESETS[args.preset]
    p = Preset(
        **{
            **p.__dict__,
            "out_dim": args.out_dim or p.out_dim,
            "global_size": args.global_size or p.global_size,
            "local_size": args.local_size or p.local_size,
        }
    )
    for name, size in (("--global-size", p.global_size), ("--local-size", p.local_size)):
        if size < p.patch:
            raise UsageError(f"{name} {size}: must be at least the patch size {p.patch} of --preset {args.preset}")
    return p


def flag_strings(args: argparse.Namespace) -> dict[str, str]:
    """The flags as a dict of strings (what a ``weights_only`` checkpoint can hold)."""
    return {k: ("" if v is None else str(v)) for k, v in sorted(vars(args).items())}


def check_resume(state: dict[str, Any], args: argparse.Namespace, schedules: Schedules, path: Path) -> None:
    """Refuse a checkpoint that is incomplete, of another model, or with other schedules (without --replan)."""
    needed = ("step", "student", "teacher", "optimizer", "lr_scheduler", "wd_scheduler", "schedules", "center", "flags")
    missing = [k for k in needed if k not in state]
    if missing:
        raise ckpt.CheckpointError(f"--resume {path}: not a complete {PROG} checkpoint (missing {', '.join(missing)})")
    saved, now = state["flags"], flag_strings(args)
    fixed = [
        f"{flags.spellings(k)[0]} {saved.get(k)!r} -> {now[k]!r}" for k in FIXED_ON_RESUME if saved.get(k) != now[k]
    ]
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


def _saved_targets(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    s = state["schedules"]
    return {
        "lr": state["lr_scheduler"]["target"],
        "weight_decay": state["wd_scheduler"]["target"],
        "momentum": s["momentum"]["target"],
        "teacher_temp": s["teacher_temp"]["target"],
    }


def resolve_output(args: argparse.Namespace, resume_path: Path | None) -> Path:
    """--output-dir, else the resumed run's folder, else runs/phase5-<timestamp>; never overwrite a run."""
    if args.output_dir is not None:
        out = Path(args.output_dir)
    elif resume_path is not None:
        parent = resume_path.resolve().parent
        out = parent.parent if parent.name == "checkpoints" else parent
    else:
        out = Path("runs") / f"phase5-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if resume_path is None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--output-dir {out}: already holds a run; pass --resume latest or choose another folder")
    return out


def settle(argv: Sequence[str] | None) -> Settings:
    """Parse and check everything: flags, schedules, data, checkpoint, output folder. Writes nothing."""
    args = build_parser().parse_args(argv)
    if args.resume == "latest" and args.output_dir is None:
        raise UsageError("--resume latest: needs --output-dir (the run whose newest checkpoint to load)")
    schedules = resolve_schedules(args)
    preset = resolve_preset(args)
    for name in ("global_crops_scale", "local_crops_scale"):
        lo, hi = getattr(args, name)
        if lo > hi:
            raise UsageError(f"{flags.spellings(name)[0]} {lo:g} {hi:g}: the low end must not exceed the high end")
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no such directory")
    state, path = None, None
    if args.resume is not None:
        path = ckpt.resolve_resume(args.resume, Path(args.output_dir or "."), "--resume")
        assert path is not None
        state = ckpt.load_checkpoint(path, PROGRAM, "--resume")
        check_resume(state, args, schedules, path)
    output = resolve_output(args, path)
    data = load_dataset(args.data_dir, args.image_size or preset.global_size)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if len(data.train) < args.batch_size * world_size:
        raise UsageError(
            f"--batch-size {args.batch_size}: more than the {len(data.train)} training images "
            f"allow across {world_size} process(es)"
        )
    return Settings(args, preset, schedules, data, output, state, path)


# --- model and optimizer ---------------------------------------------------------------------


def build_networks(preset: Preset, channels: int, seed: int) -> tuple[DINONet, DINONet]:
    """Student (backbone + head) and the teacher: a copy that only the EMA updates."""
    torch.manual_seed(seed)
    student = DINONet(
        ViT(preset, channels),
        DINOHead(preset.dim, preset.head_hidden, preset.head_bottleneck, preset.out_dim),
    )
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


def param_groups(net: DINONet, lr: float, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """AdamW groups keyed by ``(lr_mult, wd_mult)``.

    ``wd_mult = 0`` for biases, norms (1-D parameters), the CLS token and position embedding;
    ``lr_mult = layer_decay ** (depth + 1 - layer_id)`` for backbone parameters, 1 for the head.
    A group starts at ``lr * lr_mult`` and ``weight_decay * wd_mult``; the schedulers scale them.
    """
    backbone = net.backbone
    top = backbone.depth + 1
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, param in net.named_parameters():
        inner = name.split(".", 1)[1]
        layer = backbone.layer_id(inner) if name.startswith("backbone.") else top
        no_wd = param.ndim <= 1 or name.endswith(".bias") or inner in ("cls_token", "pos_embed")
        key = (layer_decay ** (top - layer), 0.0 if no_wd else 1.0)
        if key not in groups:
            groups[key] = {
                "params": [],
                "name": f"layer{layer}" + ("-no_wd" if no_wd else ""),
                "lr_mult": key[0],
                "wd_mult": key[1],
                "lr": lr * key[0],
                "weight_decay": weight_decay * key[1],
            }
        groups[key]["params"].append(param)
    return list(groups.values())


def reference_group(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The group whose LR and weight decay are the schedules' own values (``lr_mult = wd_mult = 1``)."""
    return next(g for g in optimizer.param_groups if g["lr_mult"] == 1.0 and g["wd_mult"] == 1.0)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- m * teacher + (1 - m) * student``, parameter by parameter."""
    t_params = [p.detach() for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


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
    crops: MultiCrop
    sampler: Sampler
    t: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    step_seconds: list[float] = field(default_factory=list)
    lr_trace: list[float] = field(default_factory=list)
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
        crops=MultiCrop(
            s.preset.global_size,
            s.preset.local_size,
            a.local_crops,
            s.data.mean,
            s.data.std,
            global_scale=(a.global_crops_scale[0], a.global_crops_scale[1]),
            local_scale=(a.local_crops_scale[0], a.local_crops_scale[1]),
        ),
        sampler=Sampler(len(s.data.train), a.batch_size, world.size, a.seed),
    )
    if s.resume is not None:
        restore(run, s.resume)
    return run


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


def save(run: Run) -> Path | None:
    """Rank 0 writes ``checkpoints/step-<t>.pt`` atomically and prunes old ones; all ranks wait."""
    path = None
    if run.world.is_main:
        directory = run.settings.output_dir / "checkpoints"
        path = ckpt.save_checkpoint(checkpoint_state(run), ckpt.step_path(directory, run.t), PROGRAM)
        ckpt.prune_checkpoints(directory, run.settings.args.keep_checkpoints)
    barrier(run.world)
    return path


# --- evaluation ------------------------------------------------------------------------------


def _batches(images: torch.Tensor, run: Run, size: int = 256) -> Iterator[torch.Tensor]:
    s = run.settings
    for i in range(0, images.shape[0], size):
        chunk = images[i : i + size].to(run.device)
        yield eval_view(chunk, s.preset.global_size, s.data.mean, s.data.std)


@torch.no_grad()
def knn_eval(run: Run, net: DINONet | None) -> float | None:
    """Weighted k-NN top-1 on teacher CLS features (``net``), or on raw pixels when ``net`` is None."""
    s = run.settings
    if s.data.knn_train is None or s.data.knn_test is None:
        return None
    tr = knn.subset(len(s.data.knn_train), s.args.knn_train_samples)
    te = knn.subset(len(s.data.knn_test), s.args.knn_test_samples, seed=1)
    train_x, test_x = s.data.knn_train.images[tr], s.data.knn_test.images[te]
    if net is None:
        train_f = train_x.flatten(1).to(run.device).float()
        test_f = test_x.flatten(1).to(run.device).float()
    else:
        was_training = net.training
        net.eval()
        with autocast(run.device, s.args.bf16):
            train_f = torch.cat([net.backbone(b).float() for b in _batches(train_x, run)])
            test_f = torch.cat([net.backbone(b).float() for b in _batches(test_x, run)])
        net.train(was_training)
    return knn.knn_top1(train_f, s.data.knn_train.labels[tr], test_f, s.data.knn_test.labels[te])


def evaluate(run: Run) -> None:
    """k-NN of the teacher at step ``t`` on rank 0 (recorded in the metrics); others wait."""
    if run.world.is_main:
        acc = knn_eval(run, run.teacher)
        if acc is not None:
            run.metrics["knn_top1"] = acc
            run.metrics.setdefault("knn_history", []).append([run.t, acc])
            _say(
                run,
                f"step {run.t}: k-NN top-1 {acc:.4f} (at init {run.metrics.get('knn_top1_at_init', 0):.4f}, "
                f"raw pixels {run.metrics.get('knn_top1_raw_pixels', 0):.4f})",
            )
    barrier(run.world)


def baselines(run: Run) -> None:
    """k-NN on raw pixels and on the network at initialisation (fresh runs only)."""
    if run.world.is_main and "knn_top1_at_init" not in run.metrics:
        run.metrics["knn_top1_raw_pixels"] = knn_eval(run, None)
        run.metrics["knn_top1_at_init"] = knn_eval(run, run.teacher)
        raw, init = run.metrics["knn_top1_raw_pixels"], run.metrics["knn_top1_at_init"]
        if init is not None:
            run.metrics["knn_history"] = [[run.t, init]]  # the curve starts at the network at init
        if raw is not None and init is not None:
            _say(run, f"k-NN top-1 before training: raw pixels {raw:.4f}, network at init {init:.4f}")
    barrier(run.world)


# --- training loop ---------------------------------------------------------------------------


class NonFiniteLoss(RuntimeError):
    """The loss of a step was NaN or infinite; nothing of that step was applied or saved."""


def _say(run: Run, text: str) -> None:
    if run.world.is_main:
        from tqdm import tqdm

        tqdm.write(text)


def _env_step(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.strip().lstrip("-").isdigit() else None


def train_step(run: Run, stop: StopRequest) -> tuple[dict[str, Any], bool]:
    """One update at step ``t``: crops, forward, DINO loss, backward, clip, AdamW, EMA.

    Returns the log row (values this step used) and whether any rank was asked to stop.
    """
    s, t = run.settings, run.t
    start = time.perf_counter()
    lr, wd = reference_group(run.optimizer)["lr"], reference_group(run.optimizer)["weight_decay"]
    momentum, temp = run.momentum(t), run.teacher_temp(t)
    idx = run.sampler.indices(t, run.world.rank)
    images = s.data.train.images[idx].to(run.device, non_blocking=True)
    crops = run.crops(images, torch.Generator().manual_seed(mix(s.args.seed, t, run.world.rank)))
    with autocast(run.device, s.args.bf16):
        features, student_out = run.ddp([crops.global_crops, crops.local_crops])
        with torch.no_grad():
            _, teacher_out = run.teacher([crops.global_crops])
    loss, entropy = run.loss(student_out, teacher_out, 2, temp)
    spread = torch.stack([koleo(f) for f in features[: crops.global_crops.shape[0]].chunk(2)]).mean()
    if s.args.koleo_weight > 0:
        loss = loss + s.args.koleo_weight * spread
    if _env_step(INJECT_NAN) == t:
        loss = loss * float("nan")
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    stop_flag = torch.tensor(float(stop.requested is not None), device=loss.device)
    stats = torch.stack([loss.detach(), entropy, spread.detach(), stop_flag])
    if run.world.distributed:
        dist.all_reduce(stats)
        stats[:3] /= run.world.size
    if not math.isfinite(float(stats[0])):
        raise NonFiniteLoss(f"non-finite loss ({float(stats[0])}) at step {t}")
    params = [p for p in run.student.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, s.args.clip_grad if s.args.clip_grad > 0 else math.inf)
    frozen = t < s.schedules.freeze_last_layer
    if frozen:
        run.student.head.last_layer.weight.grad = None
    run.optimizer.step()
    ema_update(run.teacher, run.student, momentum)
    run.lr_sched.step()
    run.wd_sched.step()
    run.t += 1
    run.lr_trace.append(lr)
    seconds = time.perf_counter() - start
    run.step_seconds.append(seconds)
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
    }
    return row, bool(stats[3] > 0) or _env_step(STOP_AT) == run.t


def train(run: Run, log: RunLog | None) -> str:
    """Steps until ``--max-steps`` (or for ever), with evaluation and checkpoints; returns how it ended."""
    from tqdm import tqdm

    a = run.settings.args
    total = run.settings.schedules.lr.schedule.total
    interval = 1.0 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not a flood
    bar = tqdm(
        total=total, initial=run.t, disable=not run.world.is_main, unit="step", mininterval=interval, file=sys.stderr
    )
    try:
        with StopRequest() as stop:
            while total is None or run.t < total:
                row, stop_now = train_step(run, stop)
                if log is not None:
                    log.write(row)
                bar.update(1)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.3g}", img_s=f"{row['images_per_s']:.0f}")
                if a.eval_every and run.t % a.eval_every == 0 and run.t != total:
                    evaluate(run)
                if stop_now:
                    path = save(run)
                    _say(run, f"stopped on request at step {run.t}; checkpoint {path}")
                    return f"stopped at step {run.t}"
                if a.save_every and run.t % a.save_every == 0 and run.t != total:
                    save(run)
    finally:
        bar.close()
    evaluate(run)
    save(run)
    return "finished"


# --- outputs ---------------------------------------------------------------------------------


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
        "param_groups": [
            {"name": g["name"], "lr_mult": g["lr_mult"], "wd_mult": g["wd_mult"], "params": len(g["params"])}
            for g in run.optimizer.param_groups
        ],
    }


def plan_lines(run: Run) -> list[str]:
    """The plan as people read it: the LR plan with sources, then DINO's other schedules."""
    sch, total = run.settings.schedules, run.settings.schedules.lr.schedule.total
    horizon = "held after warm-up (open-ended)" if total is None else f"cosine to step {total}"
    wd, m, tt = sch.weight_decay, sch.momentum, sch.teacher_temp
    lines = ["learning rate:", *sch.lr.lines()]
    if run.replanned_at is not None:
        t0 = run.replanned_at
        lines.append(
            f"  note: --replan at step {t0}: cosine from {run.lr_sched.schedule(t0):.4g} to "
            f"{run.lr_sched.schedule.end_value:.4g} by step {total if total is not None else 'never'}"
        )
    lines += [
        f"weight decay:     {wd.base:g} -> {wd.final:g}, {horizon}",
        f"teacher momentum: {m.base:g} -> {m.final:g}, {horizon}",
        f"teacher temp:     {tt.start:g} -> {tt.base:g} over {tt.warmup} steps, then constant",
        f"last layer frozen for the first {sch.freeze_last_layer} steps",
    ]
    return lines


def write_metrics(run: Run, status: str) -> None:
    """metrics.json: k-NN now, at init and on raw pixels, history, timing, how the run ended."""
    med = statistics.median(run.step_seconds) if run.step_seconds else None
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
        "world_size": run.world.size,
        "device": describe_device(run.device),
    }
    data.update({k: v for k, v in run.metrics.items() if k == "ranks"})
    write_json(run.settings.output_dir / "metrics.json", data)


def draw_curves(out: Path, metrics: dict[str, Any]) -> None:
    """curves.png: LR, weight decay, momentum, teacher temperature, loss (and k-NN points) against step."""
    rows = read_log(out / "log.csv")
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    names = ("lr", "weight_decay", "momentum", "teacher_temp", "loss")
    columns = {n: [float(r[n]) for r in rows] for n in names}
    history = metrics.get("knn_history", [])
    extra = {"knn_top1": ([h[0] for h in history], [h[1] for h in history])} if history else None
    from lrsched.render import plot_run

    title = f"DINO pretraining: {out.name}"
    if metrics.get("knn_top1") is not None:
        title += (
            f"\nk-NN top-1 {metrics['knn_top1']:.3f} (network at init {metrics.get('knn_top1_at_init') or 0:.3f},"
            f" raw pixels {metrics.get('knn_top1_raw_pixels') or 0:.3f})"
        )
    plot_run(out / "curves.png", columns, steps, title=title, extra=extra)


def rank_fingerprints(run: Run) -> None:
    """Under torchrun: every rank's hash of its LR trace and weights, gathered into the metrics."""
    if not run.world.distributed:
        return
    weights = hashlib.sha256()
    for net in (run.student, run.teacher):
        for p in net.parameters():
            weights.update(p.detach().cpu().contiguous().numpy().tobytes())
    lrs = hashlib.sha256(json.dumps(run.lr_trace).encode()).hexdigest()
    mine = {"rank": run.world.rank, "step": run.t, "lr_trace": lrs, "weights": weights.hexdigest()}
    gathered: list[Any] = [None] * run.world.size
    dist.all_gather_object(gathered, mine)
    run.metrics["ranks"] = gathered


# --- main ------------------------------------------------------------------------------------


def start_outputs(run: Run) -> RunLog | None:
    """Rank 0: create the folder, write plan.json and args.json, open log.csv, print the plan."""
    if not run.world.is_main:
        return None
    out = run.settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", plan_json(run))
    write_json(out / "args.json", flag_strings(run.settings.args))
    print(f"{PROG}: {describe_device(run.device)}, {run.world.size} process(es), output {out}")
    print("\n".join(plan_lines(run)), flush=True)
    return RunLog(out, LOG_COLUMNS, resume_step=run.t if run.settings.resume is not None else None)


def finish(run: Run, log: RunLog | None, status: str) -> None:
    """Metrics, curves and closing the log (rank 0)."""
    rank_fingerprints(run)
    if log is None:
        return
    log.close()
    write_metrics(run, status)
    try:
        draw_curves(run.settings.output_dir, run.metrics)
    except ImportError as err:
        print(f"{PROG}: note: curves.png not drawn ({err})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program; returns the exit status (0 done or stopped, 2 bad input, 3 non-finite loss)."""
    with flags.usage_errors(PROG):
        settings = settle(argv)
        try:
            device = pick_device(settings.args.device)
        except RuntimeError as err:  # an unknown device, or one this machine lacks
            raise UsageError(f"--device {settings.args.device}: {err}") from None
    world = init_world(device.type)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    try:
        run = build_run(settings, world, device)
        barrier(world)
        log = start_outputs(run)
        if settings.resume is None:
            baselines(run)
        try:
            status = train(run, log)
        except NonFiniteLoss as err:
            last = ckpt.latest_checkpoint(settings.output_dir / "checkpoints")
            print(f"{PROG}: error: {err}; stopping. Last good checkpoint: {last or 'none'}", file=sys.stderr)
            if log is not None:
                log.close()
                write_metrics(run, str(err))
            return EXIT_NONFINITE
        finish(run, log, status)
        return 0
    finally:
        close_world(world)
