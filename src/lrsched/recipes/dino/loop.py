"""The DINO training loop: building the run, the updates, and the metrics.

The records it works on are in ``state``, checkpoints in ``checkpoint``, k-NN in ``evaluation``.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import struct
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lrsched.adoption import OnMismatch
from lrsched.recipes.common.device import autocast, describe_device, uses_bf16
from lrsched.recipes.common.distributed import World, every_rank
from lrsched.recipes.common.faults import FAIL_AT, INJECT_NAN, STOP_AT, DataFailure, NonFiniteLoss, hook_step
from lrsched.recipes.common.runlog import say, write_json
from lrsched.recipes.common.stopping import Stopped, StopRequest
from lrsched.recipes.dino.augment import Crops, Geometry, Photometric
from lrsched.recipes.dino.checkpoint import restore, save
from lrsched.recipes.dino.collapse import watch
from lrsched.recipes.dino.data import Sampler, mix
from lrsched.recipes.dino.evaluation import evaluate, missed
from lrsched.recipes.dino.loss import DINOLoss, koleo
from lrsched.recipes.dino.model import build_networks, ema_update, param_groups, reference_group
from lrsched.recipes.dino.state import TIMING_WINDOW, Settings, State
from lrsched.recipes.dino.stream import Batch, train_loader
from lrsched.torch_sched import ScheduledField

MIN_BAD_IMAGES = 100
"""A run skips at least this many distinct unreadable images (with a warning each) before it stops."""
SKIPPED_LINES = 20
"""Unreadable images named one per line; later ones are only counted."""
NAMED_AT_END = 10
"""Unreadable images the end line names; metrics.json (``unreadable_files``) names all."""
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
    "collapse",
)


def build_run(s: Settings, world: World, device: torch.device) -> State:
    """Networks, optimizer, scheduled fields, loss and data order; restored from the checkpoint if resuming.

    A group's lr is ``lr(t) * lr_mult`` and its weight decay ``wd(t) * wd_mult`` (docs/design.md section 5).
    """
    a, sch = s.args, s.schedules
    student, teacher = build_networks(s.preset, s.data.channels, a.seed)
    student.to(device)
    teacher.to(device)
    groups = param_groups(student, sch.lr.schedule.base, sch.weight_decay.base, a.layer_decay)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    on_mismatch: OnMismatch = "replan" if a.replan else "error"  # every scheduled value, one rule
    lr = ScheduledField(optimizer, sch.lr.schedule, "lr", per_group="lr_mult", on_mismatch=on_mismatch)
    wd = ScheduledField(optimizer, sch.weight_decay, "weight_decay", per_group="wd_mult", on_mismatch=on_mismatch)
    ddp: nn.Module = student
    if world.distributed:
        ids = [device.index] if device.type == "cuda" else None
        ddp = DistributedDataParallel(student, device_ids=ids)
    run = State(
        settings=s,
        world=world,
        device=device,
        student=student,
        teacher=teacher,
        ddp=ddp,
        optimizer=optimizer,
        lr=lr,
        weight_decay=wd,
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


# --- training loop ---------------------------------------------------------------------------


def _losses(run: State, batch: Batch, temp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's views at step ``t``, student and teacher forward: (loss, teacher entropy, KoLeo)."""
    s, t = run.settings, run.t
    global_px = batch.global_px.to(run.device, non_blocking=True)
    local_px = batch.local_px.to(run.device, non_blocking=True)
    if batch.coloured:
        crops = Crops(global_px, local_px)
    else:
        crops = run.photometric(global_px, local_px, torch.Generator().manual_seed(mix(s.args.seed, t, run.world.rank)))
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
    run: State, loss: torch.Tensor, entropy: torch.Tensor, spread: torch.Tensor, stop: StopRequest
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


def _update(run: State, momentum: float) -> tuple[torch.Tensor, bool]:
    """Clip, AdamW (the last layer held while frozen), EMA, ``t += 1`` and the fields of the new step:
    (gradient norm, frozen)."""
    s = run.settings
    params = [p for p in run.student.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, s.args.clip_grad if s.args.clip_grad > 0 else math.inf)
    frozen = run.t < s.schedules.freeze_last_layer
    if frozen:
        run.student.head.last_layer.weight.grad = None
    run.optimizer.step()
    ema_update(run.teacher, run.student, momentum)
    run.t += 1
    run.follow_step()
    run.mid_step = False
    return norm, frozen


def train_step(run: State, batches: Iterator[Batch], stop: StopRequest) -> tuple[dict[str, Any], bool]:
    """One update at step ``t``: wait for the batch, colour, forward, DINO loss, backward, clip, AdamW, EMA.

    Returns the log row (values this step used) and whether any rank was asked to stop.
    """
    s, t = run.settings, run.t
    if hook_step(FAIL_AT) == t:
        raise MemoryError(f"test hook {FAIL_AT}={t}")
    start = time.perf_counter()
    batch = next(batches)
    wait = time.perf_counter() - start
    assert batch.step == t, f"the data loader is at step {batch.step}, the run at {t}"
    _count_skipped(run, batch)
    run.mid_step = True  # from here until t += 1 the state in memory is not one a checkpoint may hold
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


def train(run: State, stop: StopRequest) -> str:
    """Steps until ``--max-steps`` (or for ever), with evaluation and checkpoints; returns how it ended.

    A signal during a step stops the run after it (the flag travels with the step's all-reduce);
    during an evaluation it raises ``Stopped`` (the skeleton saves and exits 0).
    """
    from tqdm import tqdm

    a = run.settings.args
    total = run.settings.schedules.lr.schedule.total
    interval = 1.0 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not a flood
    bar = tqdm(
        total=total, initial=run.t, disable=not run.world.is_main, unit="step", mininterval=interval, file=sys.stderr
    )
    if missed(run):  # an evaluation a stop cut short: redone before training goes on
        evaluate(run, stop)
    colour_in_workers = run.device.type == "cpu"  # on an accelerator the colour work is batched there
    batches = train_loader(
        run.settings.data.train,
        run.geometry,
        run.sampler,
        rank=run.world.rank,
        start=run.t,
        stop=total,
        workers=a.workers,
        photometric=run.photometric if colour_in_workers else None,
        pin_memory=run.device.type == "cuda",
        timeout=a.data_timeout,
        stop_request=stop,
    )
    try:
        while total is None or run.t < total:
            row, stop_now = train_step(run, batches, stop)
            row["collapse"] = watch(run, row)
            if run.log is not None:
                run.log.write(row)
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
        batches.close()  # ends the workers (within a deadline) before evaluation starts its own
        _say_data_wait(run)
    evaluate(run, stop)
    watch(run)
    save(run)
    return "finished"


def bad_image_budget(images: int) -> int:
    """Distinct unreadable images a run skips before it stops: 1% of its images, at least ``MIN_BAD_IMAGES``."""
    return max(MIN_BAD_IMAGES, images // 100)


def _count_skipped(run: State, batch: Batch) -> None:
    """Record (``metrics["unreadable_files"]``, kept in every checkpoint) and report the images this batch
    replaced; a file known bad already (in an earlier epoch, before a resume) is not counted again.
    Stop when the data went away or more than ``bad_image_budget`` distinct files were unreadable."""
    if batch.lost is not None:
        raise DataFailure(batch.lost)
    if not batch.skipped:
        return
    known: list[str] = run.metrics.setdefault("unreadable_files", [])
    seen = set(known)
    for file, reason in batch.skipped:
        if file in seen:
            continue
        seen.add(file)
        known.append(file)
        if len(known) <= SKIPPED_LINES:
            say(run.world, f"warning: {reason}; using the next image")
        elif len(known) == SKIPPED_LINES + 1:
            say(run.world, "note: further unreadable images are named in metrics.json (unreadable_files), not here")
    run.metrics["skipped_images"] = len(known)
    budget = bad_image_budget(len(run.settings.data.train))
    if len(known) > budget:
        raise DataFailure(
            f"{len(known)} distinct unreadable images, more than the budget of {budget} (1% of the images)"
        )


def _say_data_wait(run: State) -> None:
    if run.seconds > 0:
        share = run.waiting / run.seconds
        hint = " (the device starved: try more --workers)" if share > 0.2 else ""
        say(run.world, f"waited for data {share:.1%} of {run.seconds:.1f} s of training{hint}")
    known = run.metrics.get("unreadable_files", [])
    if known:
        more = f" and {len(known) - NAMED_AT_END} more (metrics.json)" if len(known) > NAMED_AT_END else ""
        named = ", ".join(known[:NAMED_AT_END])
        say(
            run.world,
            f"skipped {len(known)} unreadable image(s), each replaced by the next readable one: {named}{more}",
        )


# --- metrics ---------------------------------------------------------------------------------


def write_metrics(run: State, status: str) -> None:
    """metrics.json: k-NN now, at init and on raw pixels, history, timing, how the run ended."""
    med = statistics.median(run.recent_seconds) if run.recent_seconds else None
    data = {
        "knn_top1": run.metrics.get("knn_top1"),
        "knn_top1_at_init": run.metrics.get("knn_top1_at_init"),
        "knn_top1_raw_pixels": run.metrics.get("knn_top1_raw_pixels"),
        "knn_history": run.metrics.get("knn_history", []),
        **knn_used(run),
        "collapse": run.metrics.get("collapse"),
        "step": run.t,
        "status": status,
        "seconds_per_step_median": med,
        "seconds_per_step_window": TIMING_WINDOW,
        "data_wait_fraction": run.waiting / run.seconds if run.seconds else None,
        "skipped_images": len(run.metrics.get("unreadable_files", [])),
        "unreadable_files": run.metrics.get("unreadable_files", []),
        "world_size": run.world.size,
        "device": describe_device(run.device),
        "precision": "bf16" if uses_bf16(run.device, run.settings.args.bf16) else "fp32",
    }
    data.update({k: v for k, v in run.metrics.items() if k == "ranks"})
    write_json(run.settings.output_dir / "metrics.json", data)


def knn_used(run: State) -> dict[str, int | None]:
    """The k-NN's images as used (``knn.subset``: all of a split when its flag is 0 or above its size),
    not the flag values; None when no k-NN ran (``--no-knn``, no labels)."""
    s = run.settings
    if s.args.no_knn or s.data.knn_train is None or s.data.knn_test is None:
        return {"knn_train_samples": None, "knn_test_samples": None}
    sizes = ((len(s.data.knn_train), s.args.knn_train_samples), (len(s.data.knn_test), s.args.knn_test_samples))
    train, test = (n if limit <= 0 or limit >= n else limit for n, limit in sizes)
    return {"knn_train_samples": train, "knn_test_samples": test}


def rank_fingerprints(run: State) -> None:
    """Under torchrun: every rank's hash of its LR trace and weights, gathered into the metrics."""
    if not run.world.distributed:
        return
    weights = hashlib.sha256()
    for net in (run.student, run.teacher):
        for p in net.parameters():
            weights.update(p.detach().cpu().contiguous().numpy().tobytes())
    mine = {"rank": run.world.rank, "step": run.t, "lr_trace": run.lr_hash, "weights": weights.hexdigest()}
    run.metrics["ranks"] = every_rank(mine, run.world)
