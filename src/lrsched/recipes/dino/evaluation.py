"""phase5's evaluation: weighted k-NN on teacher features (or raw pixels) at step ``t``, and the baselines."""

from __future__ import annotations

import torch

from lrsched.recipes.common.device import autocast
from lrsched.recipes.common.distributed import barrier
from lrsched.recipes.common.runlog import say
from lrsched.recipes.common.stopping import StopRequest, stop_together
from lrsched.recipes.dino import knn
from lrsched.recipes.dino.augment import as_float
from lrsched.recipes.dino.data import Source
from lrsched.recipes.dino.head import DINONet
from lrsched.recipes.dino.state import State
from lrsched.recipes.dino.stream import eval_batches

RAW_PIXELS_SIDE = 32
"""k-NN on raw pixels compares whole images shrunk to at most this side (Fashion-MNIST: its own 28 px)."""


def _features(
    run: State, source: Source, ids: torch.Tensor, net: DINONet | None, stop: StopRequest
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of images ``ids`` (the teacher's ``--knn-features``, or raw pixels when ``net`` is None) and labels.

    In one process a stop request raises ``Stopped`` between batches or while waiting for one; under torchrun rank 0
    finishes (the other ranks wait for it) and every rank stops after (``stop_together``).
    """
    s = run.settings
    size = s.preset.global_size if net is not None else min(s.preset.global_size, RAW_PIXELS_SIDE)
    features, labels = [], []
    alone = None if run.world.distributed else stop
    batches = eval_batches(source, ids, size, s.args.workers, timeout=s.args.data_timeout, stop_request=alone)
    with batches:
        for pixels, y in batches:
            x = as_float(pixels.to(run.device))
            if net is None:
                features.append(x.flatten(1))
            else:
                with autocast(run.device, s.args.bf16):
                    features.append(net.backbone.features(run.photometric.normalise(x), s.args.knn_features).float())
            labels.append(y)
            if alone is not None:
                alone.check()
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def knn_eval(run: State, net: DINONet | None, stop: StopRequest) -> float | None:
    """Weighted k-NN top-1 on the teacher's features (``net``, ``--knn-features``), or on raw pixels (``None``)."""
    s = run.settings
    if s.args.no_knn or s.data.knn_train is None or s.data.knn_test is None:
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


def evaluate(run: State, stop: StopRequest) -> None:
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
                run.world,
                f"step {run.t}: k-NN top-1 {acc:.4f} (at init {run.metrics.get('knn_top1_at_init', 0):.4f}, "
                f"raw pixels {run.metrics.get('knn_top1_raw_pixels', 0):.4f})",
            )
    barrier(run.world)
    stop_together(stop, run.world, run.device)


def missed(run: State) -> bool:
    """Whether step ``t`` is an evaluation step (``--eval-every``, not the last) whose k-NN point is not in the
    history: a stop cut that evaluation (or came just before it), so a resume at ``t`` does it first."""
    every, total = run.settings.args.eval_every, run.settings.schedules.lr.schedule.total
    if not every or run.t == 0 or run.t % every != 0 or run.t == total:
        return False
    return all(point[0] != run.t for point in run.metrics.get("knn_history", []))


def baselines(run: State, stop: StopRequest) -> None:
    """k-NN on raw pixels and on the network at initialisation (until both are recorded)."""
    if run.world.is_main and "knn_top1_at_init" not in run.metrics:
        run.metrics["knn_top1_raw_pixels"] = knn_eval(run, None, stop)
        run.metrics["knn_top1_at_init"] = knn_eval(run, run.teacher, stop)
        raw, init = run.metrics["knn_top1_raw_pixels"], run.metrics["knn_top1_at_init"]
        if init is not None:
            run.metrics["knn_history"] = [[run.t, init]]  # the curve starts at the network at init
        if raw is not None and init is not None:
            say(run.world, f"k-NN top-1 before training: raw pixels {raw:.4f}, network at init {init:.4f}")
    barrier(run.world)
    stop_together(stop, run.world, run.device)
