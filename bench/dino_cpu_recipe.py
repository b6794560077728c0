"""DINO on one CPU thread: k-NN against CPU minutes for a finished phase5 run, and for the old demo.

Usage: ``python bench/dino_cpu_recipe.py RUN_DIR CPU_LOG [--old-run DIR]``

``RUN_DIR`` is a phase5_big_run.py output folder whose checkpoints were kept (``--keep-checkpoints``);
``CPU_LOG`` has lines ``<unix time> <utime+stime ticks> <ticks per second>`` sampled from the run's
process every 10 s (``/proc/<pid>/stat``). A checkpoint's CPU minutes are read off that log at the
checkpoint file's modification time. Each checkpoint's teacher is evaluated with the program's own
k-NN (``knn_eval``, the default subsets: 10,000 train and 2,000 test images) on both
``--knn-features`` kinds. ``--old-run``: the earlier ``make demo-dino`` folder, whose k-NN points are
placed at ``step x`` its median seconds per step (wall clock, one thread).
Writes ``bench/results/dino_cpu_recipe.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

# isort: split
from _common import RESULTS_DIR, machine_info, markdown_table, write_json, write_text

from lrsched.recipes.common.checkpoint import step_of
from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.stopping import StopRequest
from lrsched.recipes.dino.evaluation import knn_eval
from lrsched.recipes.dino.loop import build_run
from lrsched.recipes.dino.main import settle


def flag(name: str, value: Any) -> list[str]:
    """One entry of args.json back on the command line (nothing for an unset value or a switch that is off)."""
    if value is None or value is False:
        return []
    values = [] if value is True else [str(v) for v in (value if isinstance(value, list) else [value])]
    return [f"--{name.replace('_', '-')}", *values]


def cpu_minutes(samples: list[tuple[float, float]], when: float) -> float:
    """CPU minutes of the run at wall time ``when``, interpolated between the samples around it."""
    i = min(max(bisect.bisect_left([w for w, _ in samples], when), 1), len(samples) - 1)
    (w0, c0), (w1, c1) = samples[i - 1], samples[i]
    return (c0 + (c1 - c0) * (when - w0) / (w1 - w0)) / 60


def evaluate(checkpoint: Path, flags: list[str]) -> dict[str, float | None]:
    """k-NN of the checkpoint's teacher with each feature kind, through the program's settle/build_run."""
    out = {}
    for kind in ("cls", "cls+patch"):
        with tempfile.TemporaryDirectory() as tmp:
            argv = [*flags, "--resume", str(checkpoint), "--knn-features", kind, "--output-dir", f"{tmp}/x"]
            run = build_run(settle([*argv, "--workers", "0"]), World(), torch.device("cpu"))
            out[kind] = knn_eval(run, run.teacher, StopRequest())
    return out


def draw(points: list[dict[str, Any]], old: list[tuple[float, float]], base: dict[str, float], path: Path) -> None:
    from matplotlib.figure import Figure

    from lrsched.render import save_figure

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot([p["cpu_min"] for p in points], [p["cls"] for p in points], "o-", label="new recipe (micro, CLS)")
    patch = [p["cls+patch"] for p in points]
    ax.plot([p["cpu_min"] for p in points], patch, "s--", label="new recipe, CLS + patch mean")
    if old:
        ax.plot(*zip(*old), "^-", label="old make demo-dino (tiny)")
    ax.axhline(base["raw"], color="0.3", ls=":", label=f"raw pixels {base['raw']:.3f}")
    ax.axhline(base["init"], color="0.6", ls="-.", label=f"network at init {base['init']:.3f}")
    ax.set_xlabel("CPU minutes (one thread)")
    ax.set_ylabel("weighted k-NN top-1 (Fashion-MNIST)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("cpu_log", type=Path)
    parser.add_argument("--old-run", type=Path)
    opts = parser.parse_args(argv)
    torch.set_num_threads(1)
    args = json.loads((opts.run / "args.json").read_text())
    flags = [f for k, v in args.items() if k not in ("resume", "output_dir", "workers") for f in flag(k, v)]
    lines = (line.split() for line in opts.cpu_log.read_text().splitlines())
    samples = [(float(w), int(c) / int(hz)) for w, c, hz in lines]
    points = []
    for ckpt in sorted((opts.run / "checkpoints").glob("step-*.pt")):
        knn = evaluate(ckpt, flags)
        points.append({"step": step_of(ckpt), "cpu_min": cpu_minutes(samples, ckpt.stat().st_mtime), **knn})
        print(points[-1], flush=True)
    metrics = json.loads((opts.run / "metrics.json").read_text())
    base = {"raw": metrics["knn_top1_raw_pixels"], "init": metrics["knn_top1_at_init"]}
    old: list[tuple[float, float]] = []
    if opts.old_run:
        m = json.loads((opts.old_run / "metrics.json").read_text())
        old = [(s * m["seconds_per_step_median"] / 60, v) for s, v in m["knn_history"]]
    passed = next((p for p in points if p["cls"] > base["raw"]), None)
    rows = [[p["step"], f"{p['cpu_min']:.1f}", f"{p['cls']:.4f}", f"{p['cls+patch']:.4f}"] for p in points]
    info = machine_info(("torch",))
    text = [
        "# DINO on one CPU thread: k-NN against CPU minutes",
        "",
        f"Run: `python phase5_big_run.py {' '.join(flags)}` with `OMP_NUM_THREADS=1` (one process, no workers). "
        f"Network at init {base['init']:.4f}, raw pixels {base['raw']:.4f} (the default k-NN subsets).",
        "",
        markdown_table(["step", "CPU minutes", "k-NN, CLS", "k-NN, CLS + mean patch"], rows, "rrrr"),
        "First checkpoint above raw pixels (CLS): "
        + ("none" if passed is None else f"step {passed['step']}, {passed['cpu_min']:.1f} CPU minutes")
        + f". Final (metrics.json): {metrics['knn_top1']:.4f}.",
        "",
        f"Machine: {info['cpu_model']}, load {info['load_average_1_5_15min']} (shared: CPU minutes, not wall, are "
        f"comparable); commit {info['git_commit']}. Command: `{info['command']}`.",
        "",
    ]
    write_text(RESULTS_DIR / "dino_cpu_recipe.md", "\n".join(text))
    write_json(
        RESULTS_DIR / "dino_cpu_recipe.json", {"machine": info, "flags": flags, "points": points, "old": old, **base}
    )
    draw(points, old, base, RESULTS_DIR / "dino_cpu_recipe.png")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
