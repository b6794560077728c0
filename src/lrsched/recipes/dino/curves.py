"""curves.png of a DINO run: its scheduled values and loss against the step, and the k-NN points."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lrsched.recipes.common.folders import printable
from lrsched.recipes.common.runlog import read_log_thinned


def draw_curves(out: Path, metrics: dict[str, Any]) -> None:
    """curves.png: LR, weight decay, momentum, teacher temperature, loss (and k-NN points) against step."""
    rows = read_log_thinned(out / "log.csv")
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    names = ("lr", "weight_decay", "momentum", "teacher_temp", "loss")
    columns = {n: [float(r[n]) for r in rows] for n in names}
    history = metrics.get("knn_history", [])
    extra = {"knn_top1": ([h[0] for h in history], [h[1] for h in history])} if history else None
    from lrsched.render import plot_run

    title = f"DINO pretraining: {printable(out.name)}"
    if metrics.get("knn_top1") is not None:
        title += (
            f"\nk-NN top-1 {metrics['knn_top1']:.3f} (network at init {metrics.get('knn_top1_at_init') or 0:.3f},"
            f" raw pixels {metrics.get('knn_top1_raw_pixels') or 0:.3f})"
        )
    plot_run(out / "curves.png", columns, steps, title=title, extra=extra)
