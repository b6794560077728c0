"""The collapse monitor: one warning per run when DINO's collapse signals say the run has collapsed.

Two signals (docs/phase5.md, "What a run writes"):

- the teacher is uniform: the teacher's entropy, averaged over the steps after every warm-up
  (LR and teacher temperature; ``e <- 0.98 e + 0.02 H``, starting at the first such step's
  ``H``), reaches ``ENTROPY_SHARE`` of its largest possible value ``log K`` (``K = --out-dim``),
  judged from ``ENTROPY_WINDOW`` steps after the warm-ups on.
  Measured here: default flags on Fashion-MNIST (``--preset micro``, K = 256) held 5.2-5.36 of
  5.55 from step 20 to 160; the CPU recipe (K = 512) peaked at 5.37 of 6.24 (86%) at step 20 and
  fell to 1.6 by step 320, inside its 500 warm-up steps;
- the features carry nothing: a k-NN top-1 at or below ``CHANCE_FACTOR`` times chance
  (``1 / C`` for ``C`` classes).

The first signal seen is printed once (with the step), recorded in ``run.metrics["collapse"]``
(so in checkpoints: a resumed run does not warn again, and in ``metrics.json``), named in the
``collapse`` column of the ``log.csv`` row written when it fires, and marked on ``curves.png``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lrsched.recipes.common.runlog import say
from lrsched.recipes.dino.state import State

ENTROPY_SHARE = 0.95
"""A smoothed teacher entropy at or above this share of ``log K`` is a uniform teacher."""
ENTROPY_SMOOTHING = 0.98
"""The weight of the past in the smoothed entropy (about the last 50 steps)."""
ENTROPY_WINDOW = 50
"""Steps after the warm-ups before the smoothed entropy is judged (it must hold that long)."""
CHANCE_FACTOR = 1.5
"""A k-NN top-1 at or below this many times chance has learned nothing."""


def entropy_signal(step: int, smoothed: float, out_dim: int) -> dict[str, Any] | None:
    """The warning for a smoothed teacher entropy at or above ``ENTROPY_SHARE * log K``, else None."""
    top = math.log(out_dim)
    if smoothed < ENTROPY_SHARE * top:
        return None
    text = (
        f"warning: collapse at step {step}: the teacher's entropy {smoothed:.2f} is {smoothed / top:.0%} of "
        f"log({out_dim}) = {top:.2f} (a uniform teacher; docs/phase5.md)"
    )
    return {"step": step, "signal": "teacher_entropy", "value": smoothed, "limit": ENTROPY_SHARE * top, "text": text}


def knn_signal(step: int, top1: float, classes: int) -> dict[str, Any] | None:
    """The warning for a k-NN top-1 at or below ``CHANCE_FACTOR`` times chance, else None."""
    if classes < 2 or top1 > CHANCE_FACTOR / classes:
        return None
    text = (
        f"warning: collapse at step {step}: k-NN top-1 {top1:.4f} is at chance ({classes} classes: "
        f"{1 / classes:.4f}; the features carry nothing; docs/phase5.md)"
    )
    return {"step": step, "signal": "knn_top1", "value": top1, "limit": CHANCE_FACTOR / classes, "text": text}


def warm_until(run: State) -> int:
    """The step after which the teacher's entropy is judged: the end of the LR and temperature warm-ups."""
    sch = run.settings.schedules
    return max(sch.lr.schedule.warmup, sch.teacher_temp.warmup)


def watch(run: State, row: dict[str, Any] | None = None) -> str:
    """After a step (its log ``row``) or an evaluation: warn once if a collapse signal fires.

    Returns the name of the signal that fired now (``teacher_entropy`` or ``knn_top1``), else "".
    """
    if "collapse" in run.metrics:
        return ""
    found = None
    if row is not None and "teacher_entropy" in row:
        found = _entropy(run, float(row["teacher_entropy"]))
    found = found or _knn(run)
    if found is not None:
        run.metrics["collapse"] = found
        say(run.world, found["text"])
        return str(found["signal"])
    return ""


def _entropy(run: State, entropy: float) -> dict[str, Any] | None:
    """The smoothed entropy of the steps after the warm-ups (the untrained teacher's are not averaged in)."""
    if run.t <= warm_until(run):
        return None
    old = run.metrics.get("teacher_entropy_smoothed")
    smoothed = entropy if old is None else ENTROPY_SMOOTHING * old + (1 - ENTROPY_SMOOTHING) * entropy
    run.metrics["teacher_entropy_smoothed"] = smoothed
    if run.t <= warm_until(run) + ENTROPY_WINDOW:
        return None
    return entropy_signal(run.t, smoothed, run.settings.preset.out_dim)


def _knn(run: State) -> dict[str, Any] | None:
    history = run.metrics.get("knn_history") or []
    if not history or history[-1][0] == run.metrics.get("knn_checked_step"):
        return None
    step, top1 = history[-1]
    run.metrics["knn_checked_step"] = step
    return knn_signal(step, top1, knn_classes(run))


def knn_classes(run: State) -> int:
    """The classes of the k-NN's labelled training images (0 without labels)."""
    data = run.settings.data.knn_train
    labels = None if data is None else data.labels
    return 0 if labels is None else int(torch.unique(labels).numel())
