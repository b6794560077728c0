"""curves.png of a run, three panels over the optimizer step:

1. the learning rate each update used (warm-up shaded);
2. the training loss per update (thin) and its moving average (bold);
3. validation accuracy and macro-F1 after each epoch, the test accuracy (star) at the step of the
   model tested (the best validation's) and the majority-class baseline (dotted).

Steps are as ``log.csv``, ``eval.json`` and the console count them: update ``t`` is drawn at
``t`` and a validation after ``t`` updates at ``t``. Validations are marked by faint vertical lines
in every panel. Drawn with ``lrsched.render``'s
figure, warm-up shading and axis format, written with its ``save_figure`` (atomic).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrsched import render
from lrsched.recipes.common.folders import printable
from lrsched.recipes.common.runlog import read_log

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SMOOTH = 0.9


def smoothed(values: list[float], beta: float = SMOOTH) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


TOP = 1.04
"""The score panel's upper limit: a score of 1.0 (and its marker) stays inside the panel."""


def eval_points(evals: dict[str, Any], last_step: int) -> dict[str, tuple[list[int], list[float]]]:
    """What the score panel draws, at the steps ``eval.json`` (and the console) report: each
    validation's accuracy and macro-F1, and the test accuracy at the tested model's step (the best
    validation's; the last step when ``eval.json`` names no best)."""
    history = evals.get("validation") or []
    xs = [int(h["step"]) for h in history]
    points = {
        "validation accuracy": (xs, [float(h["accuracy"]) for h in history]),
        "validation macro-F1": (xs, [float(h["macro_f1"]) for h in history]),
    }
    test = evals.get("test")
    if test and test.get("accuracy") is not None:
        tested = int((evals.get("best") or {}).get("step", last_step))
        points["test accuracy"] = ([tested], [float(test["accuracy"])])
    return points


def _eval_panel(ax: Any, evals: dict[str, Any], last_step: int) -> None:
    points = eval_points(evals, last_step)
    ax.plot(*points["validation accuracy"], "o-", label="validation accuracy")
    ax.plot(*points["validation macro-F1"], "s--", label="validation macro-F1")
    if "test accuracy" in points:
        xs, ys = points["test accuracy"]
        ax.plot(xs, ys, "*", markersize=14, label=f"test accuracy {ys[0]:.3f} (model of step {xs[0]})")
    base = (evals.get("majority_baseline") or {}).get("test") or (evals.get("majority_baseline") or {}).get(
        "validation"
    )
    if base:
        ax.axhline(base, color="0.3", linestyle=":", label=f"majority class {base:.3f}")
    ax.set_ylabel("score")
    ax.set_ylim(0, TOP)
    ax.legend(loc="best", fontsize="small")


def build_figure(output_dir: Path) -> Figure | None:
    """The figure of ``output_dir``'s ``plan.json``, ``log.csv`` and ``eval.json`` (None: no log rows yet)."""
    rows = read_log(output_dir / "log.csv")
    if not rows:
        return None
    plan = json.loads((output_dir / "plan.json").read_text())
    eval_path = output_dir / "eval.json"
    evals = json.loads(eval_path.read_text()) if eval_path.exists() else {}
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    fig, (lr_ax, loss_ax, eval_ax) = render.new_figure(3, height=8.0)
    lr_ax.plot(steps, [float(r["lr"]) for r in rows], linewidth=1.6)
    if plan["warmup_steps"]:
        render.shade_warmup(lr_ax, plan["warmup_steps"])
        lr_ax.legend(loc="upper right", fontsize="small")
    lr_ax.set_ylabel("learning rate")
    render.format_axes(lr_ax)
    lr_ax.set_ylim(bottom=0)
    loss_ax.plot(steps, loss, linewidth=0.8, alpha=0.45, label="per update")
    loss_ax.plot(steps, smoothed(loss), linewidth=2.0, label="moving average")
    loss_ax.set_ylabel("training loss")
    loss_ax.legend(loc="upper right", fontsize="small")
    _eval_panel(eval_ax, evals, steps[-1] + 1)
    for ax in (lr_ax, loss_ax, eval_ax):
        for h in evals.get("validation") or []:
            ax.axvline(h["step"], color="0.8", linewidth=0.8, zorder=0)
        ax.grid(True, alpha=0.3)
    eval_ax.set_xlabel("optimizer step (faint lines: validations)")
    cycles = f", {plan['cycles']:g} cycles" if plan.get("cycles") else ""
    name = printable(output_dir.name)
    lr_ax.set_title(
        f"train.py {name}: {plan['shape']}{cycles}, peak {plan['base_lr']:g}, {plan['total_steps']} updates"
    )
    return fig


def draw_curves(output_dir: Path) -> Path | None:
    """Write ``output_dir``'s ``curves.png`` (``build_figure``); None when there is nothing to draw."""
    fig = build_figure(output_dir)
    return None if fig is None else render.save_figure(fig, output_dir / "curves.png")
