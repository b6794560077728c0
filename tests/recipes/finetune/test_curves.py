"""train.py's curves.png tells what the run did: points at the steps eval.json and the console report,
the test point at the tested model's step, nothing clipped (read from the figure's artists)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from lrsched.recipes.finetune import curves

UPDATES_PER_EPOCH, EPOCHS = 4, 3


def write_run(folder: Path, validation: list[dict[str, Any]], best_step: int, test_accuracy: float) -> Path:
    """A finished run's plan.json, log.csv (steps 0..11) and eval.json, as train.py writes them."""
    folder.mkdir()
    total = UPDATES_PER_EPOCH * EPOCHS
    plan = {"shape": "linear", "base_lr": 4e-5, "total_steps": total, "warmup_steps": 1, "cycles": None}
    (folder / "plan.json").write_text(json.dumps(plan))
    with (folder / "log.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", "epoch", "lr", "loss", "grad_norm", "seconds"])
        for t in range(total):
            writer.writerow([t, t // UPDATES_PER_EPOCH + 1, 4e-5 * (total - t) / total, 1.1 - 0.02 * t, 1.0, 0.5])
    best = next(h for h in validation if h["step"] == best_step)
    evals = {
        "validation": validation,
        "best": best,
        "test": {"loss": 0.7, "accuracy": test_accuracy, "macro_f1": 0.6, "model": f"best (step {best_step})"},
        "majority_baseline": {"validation": 0.43, "test": 0.43},
    }
    (folder / "eval.json").write_text(json.dumps(evals))
    return folder


def validations(accuracies: list[float]) -> list[dict[str, Any]]:
    return [
        {"epoch": e + 1, "step": (e + 1) * UPDATES_PER_EPOCH, "loss": 0.9, "accuracy": a, "macro_f1": a - 0.05}
        for e, a in enumerate(accuracies)
    ]


def line(ax: Any, label_start: str) -> Any:
    found = [ln for ln in ax.get_lines() if ln.get_label().startswith(label_start)]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


@pytest.fixture
def figure(tmp_path: Path) -> Any:
    folder = write_run(tmp_path / "run", validations([0.6, 0.7, 0.65]), best_step=8, test_accuracy=0.68)
    fig = curves.build_figure(folder)
    assert fig is not None
    return fig


def test_validation_points_sit_at_the_steps_eval_json_reports(figure: Any) -> None:
    score = figure.axes[2]
    assert list(line(score, "validation accuracy").get_xdata()) == [4, 8, 12]
    assert list(line(score, "validation macro-F1").get_xdata()) == [4, 8, 12]
    for ax in figure.axes:
        verticals = {ln.get_xdata()[0] for ln in ax.get_lines() if len(set(ln.get_xdata())) == 1}
        assert {4, 8, 12} <= verticals and not {3, 7, 11} & verticals, verticals


def test_the_test_point_is_drawn_at_the_tested_models_step(figure: Any) -> None:
    star = line(figure.axes[2], "test accuracy")
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([8], [0.68])
    assert "step 8" in star.get_label()


def test_a_score_of_one_is_inside_the_panel(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "run", validations([1.0, 1.0, 1.0]), best_step=12, test_accuracy=1.0)
    fig = curves.build_figure(folder)
    assert fig is not None
    bottom, top = fig.axes[2].get_ylim()
    assert bottom == 0 and top > 1.0
    fig.canvas.draw()
    marker = line(fig.axes[2], "validation accuracy")
    radius = marker.get_markersize() / 2 * fig.dpi / 72  # points to pixels
    panel = fig.axes[2].get_window_extent()
    y_pixels = fig.axes[2].transData.transform([(4, 1.0)])[0][1]
    assert y_pixels + radius <= panel.y1, "the marker of a 1.0 is cut at the top of the panel"


def test_eval_points_without_a_best_puts_the_test_at_the_end() -> None:
    evals = {"validation": validations([0.5]), "test": {"accuracy": 0.4}}
    assert curves.eval_points(evals, last_step=12)["test accuracy"] == ([12], [0.4])
