"""DINO on one CPU thread: k-NN against CPU minutes for a finished phase5 run, and for the old demo.

Usage: ``python bench/dino_cpu_recipe.py --run NAME RUN_DIR CPU_LOG [--run ...] [--old-run DIR]``

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
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

# isort: split
from _common import RESULTS_DIR, machine_info, markdown_table, write_json, write_text

from lrsched.recipes.common.checkpoint import step_of
from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.stopping import StopRequest
from lrsched.recipes.dino.evaluation import knn_eval
from lrsched.recipes.dino.flags import build_parser, flag_strings
from lrsched.recipes.dino.loop import build_run
from lrsched.recipes.dino.main import settle


def typed_flags(args: dict[str, str]) -> list[str]:
    """The flags of args.json that differ from the program's defaults, back on a command line."""
    defaults = flag_strings(build_parser().parse_args([]))
    out = []
    for name, value in args.items():
        if name in ("resume", "output_dir", "keep_checkpoints", "knn_features") or value == defaults.get(name):
            continue
        values = [] if value == "True" else json.loads(value) if value.startswith("[") else [value]
        out += [f"--{name.replace('_', '-')}", *(decimal(v) for v in values)]
    return out


def decimal(value: Any) -> str:
    """A value as typed: args.json keeps exact ratios as fractions (``"1/5"``), the flags take ``0.2``."""
    text = str(value)
    return str(float(Fraction(text))) if "/" in text else text


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
            run = build_run(settle(argv), World(), torch.device("cpu"))
            out[kind] = knn_eval(run, run.teacher, StopRequest())
    return out


def measure(run_dir: Path, cpu_log: Path) -> dict[str, Any]:
    """The run's flags, and per kept checkpoint its step, CPU minutes and k-NN of both kinds."""
    args = json.loads((run_dir / "args.json").read_text())
    flags = typed_flags(args)
    lines = (line.split() for line in cpu_log.read_text().splitlines())
    samples = [(float(w), int(c) / int(hz)) for w, c, hz in lines]
    points = []
    for ckpt in sorted((run_dir / "checkpoints").glob("step-*.pt")):
        points.append(
            {"step": step_of(ckpt), "cpu_min": cpu_minutes(samples, ckpt.stat().st_mtime), **evaluate(ckpt, flags)}
        )
        print(points[-1], flush=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "flags": flags,
        "points": points,
        "final": metrics["knn_top1"],
        "cpu_min": samples[-1][1] / 60,
        "raw": metrics["knn_top1_raw_pixels"],
        "init": metrics["knn_top1_at_init"],
    }


def draw(runs: dict[str, dict[str, Any]], old: list[tuple[float, float]], path: Path) -> None:
    from matplotlib.figure import Figure

    from lrsched.render import save_figure

    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, r in runs.items():
        x = [0.0] + [p["cpu_min"] for p in r["points"]]
        ax.plot(x, [r["init"]] + [p["cls"] for p in r["points"]], "o-", label=f"{name} (CLS)")
        ax.plot(x[1:], [p["cls+patch"] for p in r["points"]], "s:", label=f"{name} (CLS + mean patch)")
    if old:
        ax.plot(*zip(*old), "^-", label="old make demo-dino (tiny, 400 steps)")
    first = next(iter(runs.values()))
    ax.axhline(first["raw"], color="0.3", ls="--", lw=1, label=f"raw pixels {first['raw']:.3f}")
    ax.axhline(first["init"], color="0.6", ls="-.", lw=1, label=f"network at init {first['init']:.4f}")
    ax.set_xlabel("CPU minutes (one thread)")
    ax.set_ylabel("weighted k-NN top-1 (Fashion-MNIST)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs=3, action="append", metavar=("NAME", "RUN_DIR", "CPU_LOG"), required=True)
    parser.add_argument("--old-run", type=Path)
    opts = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = {name: measure(Path(d), Path(log)) for name, d, log in opts.run}
    old: list[tuple[float, float]] = []
    if opts.old_run:
        m = json.loads((opts.old_run / "metrics.json").read_text())
        old = [(s * m["seconds_per_step_median"] / 60, v) for s, v in m["knn_history"]]
    info = machine_info(("torch",))
    text = ["# DINO on one CPU thread: k-NN against CPU minutes", ""]
    for name, r in runs.items():
        rows = [[p["step"], f"{p['cpu_min']:.1f}", f"{p['cls']:.4f}", f"{p['cls+patch']:.4f}"] for p in r["points"]]
        passed = next((p for p in r["points"] if p["cls"] > r["raw"]), None)
        text += [
            f"## {name}",
            "",
            f"`OMP_NUM_THREADS=1 python phase5_big_run.py {' '.join(r['flags'])}` (one process, `--workers 0`): "
            f"{r['cpu_min']:.1f} CPU minutes in all, final k-NN {r['final']:.4f}; network at init {r['init']:.4f}, "
            f"raw pixels {r['raw']:.4f} (the default k-NN subsets, 10,000 train and 2,000 test images).",
            "",
            markdown_table(["step", "CPU minutes", "k-NN, CLS", "k-NN, CLS + mean patch"], rows, "rrrr"),
            "First checkpoint above raw pixels (CLS): "
            + ("none" if passed is None else f"step {passed['step']}, {passed['cpu_min']:.1f} CPU minutes")
            + ".",
            "",
        ]
    text += [
        f"Machine: {info['cpu_model']}, load {info['load_average_1_5_15min']} (shared: CPU minutes, not wall, are "
        f"comparable); commit {info['git_commit']}. Command: `{info['command']}`.",
        "",
    ]
    write_text(RESULTS_DIR / "dino_cpu_recipe.md", "\n".join(text))
    write_json(RESULTS_DIR / "dino_cpu_recipe.json", {"machine": info, "runs": runs, "old_demo": old})
    draw(runs, old, RESULTS_DIR / "dino_cpu_recipe.png")
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
