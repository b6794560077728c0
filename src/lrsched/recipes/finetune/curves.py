"""curves.png of a run: LR and loss per optimizer step, validation accuracy and macro-F1 per epoch."""

from __future__ import annotations

import json
from pathlib import Path

from lrsched import render
from lrsched.recipes.common.runlog import read_log

SMOOTH = 0.9


def smoothed(values: list[float], beta: float = SMOOTH) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def draw_curves(output_dir: Path) -> Path | None:
    """Read ``log.csv`` and ``eval.json`` of ``output_dir`` and write ``curves.png`` there."""
    rows = read_log(output_dir / "log.csv")
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    columns = {
        "learning rate": [float(r["lr"]) for r in rows],
        "training loss": loss,
        "loss (smoothed)": smoothed(loss),
    }
    extra: dict[str, tuple[list[float], list[float]]] = {}
    evals = json.loads((output_dir / "eval.json").read_text()) if (output_dir / "eval.json").exists() else {}
    history = evals.get("validation") or []
    if history:
        xs = [float(h["step"] - 1) for h in history]
        extra["validation accuracy"] = (xs, [float(h["accuracy"]) for h in history])
        extra["validation macro-F1"] = (xs, [float(h["macro_f1"]) for h in history])
    title = f"train.py: {output_dir.name}"
    return render.plot_run(output_dir / "curves.png", columns, steps, title=title, extra=extra)
