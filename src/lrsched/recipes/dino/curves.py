"""curves.png of a DINO run: its scheduled values and loss against the step, the k-NN points and the
step where the collapse monitor warned (``recipes/dino/collapse.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrsched.recipes.common.folders import printable
from lrsched.recipes.common.runlog import read_log_thinned

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def draw_curves(out: Path, metrics: dict[str, Any]) -> None:
    """Write ``out``'s curves.png (``build_figure``), when its log has rows."""
    from lrsched.render import save_figure

    fig = build_figure(out, metrics)
    if fig is not None:
        save_figure(fig, out / "curves.png")


def build_figure(out: Path, metrics: dict[str, Any]) -> Figure | None:
    """curves.png: LR, weight decay, momentum, teacher temperature, loss (and k-NN points) against step;
    a red line at the step where the collapse monitor warned (``metrics["collapse"]``)."""
    rows = read_log_thinned(out / "log.csv")
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    names = ("lr", "weight_decay", "momentum", "teacher_temp", "loss")
    columns = {n: [float(r[n]) for r in rows] for n in names}
    history = metrics.get("knn_history", [])
    extra = {"knn_top1": ([h[0] for h in history], [h[1] for h in history])} if history else None
    from lrsched.render import run_figure

    title = f"DINO pretraining: {printable(out.name)}"
    if metrics.get("knn_top1") is not None:
        title += (
            f"\nk-NN top-1 {metrics['knn_top1']:.3f} (network at init {metrics.get('knn_top1_at_init') or 0:.3f},"
            f" raw pixels {metrics.get('knn_top1_raw_pixels') or 0:.3f})"
        )
    collapse = metrics.get("collapse")
    marks = {f"collapse ({collapse['signal']}) at step {collapse['step']}": collapse["step"]} if collapse else None
    return run_figure(columns, steps, title=title, extra=extra, marks=marks)
