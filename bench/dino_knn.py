"""DINO on one CPU thread: k-NN of ``phase5_big_run.py`` against CPU minutes, and where LR warm-up matters.

Usage: ``python bench/dino_knn.py [--study warmup|recipe] [--seeds 0 1 2] [--report] [--quick]``. Every
cell is one run of ``make demo-dino``'s 10-minute recipe, a subprocess on one thread, with the program's
own k-NN (teacher CLS, the default 10,000 / 2,000 Fashion-MNIST images) every 1,000 steps; its CPU
minutes are the reaped process's user + system time, the k-NN at step s placed at s / S of them.
``--study warmup`` (note 000: warm-up prevents early collapse): ``--warmup-steps 500`` against 0 at the
recipe's LR, 2x and 4x it (the last layer frozen 500 steps in both); collapse shows as the lowest teacher
entropy (log 512 = 6.24: uniform; near 0: one prototype wins) or a run stopped on a non-finite loss.
``--study recipe``: the recipe and the same flags for 40,000 steps. Cells are cached per seed in
``bench/results/cache/dino_knn_seed<S>.json`` (processes with other seeds run side by side);
``--report`` trains nothing and writes ``bench/results/dino_knn.{md,json,png}``, naming missing cells.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

# isort: split
import _common as common

RECIPE_FLAGS = (
    "--preset micro --max-steps 6000 --batch-size 48 --local-crops 2 --lr 2e-3 --warmup-steps 500 --out-dim 512 "
    "--warmup-teacher-temp 0.04 --teacher-temp 0.04 --momentum-teacher 0.99 --koleo-weight 0.1 --decay-ratio 0.2 "
    "--eval-every 1000 --save-every 0 --workers 0 --freeze-last-layer-steps 500"
)
"""``make demo-dino``'s flags, with the last layer's freeze (500 steps by default with this warm-up) pinned."""
RECIPE = dict(zip(RECIPE_FLAGS.split()[::2], RECIPE_FLAGS.split()[1::2]))
QUICK = {"--max-steps": "40", "--warmup-steps": "10", "--freeze-last-layer-steps": "10", "--eval-every": "20"}
QUICK_KNN = {"--knn-train-samples": "1000", "--knn-test-samples": "500"}
LRS = ("2e-3", "4e-3", "8e-3")
CELL_VERSION = 1
"""Bump when a change alters what a cell trains: the cache then starts over."""


def arms(study: str, quick: bool) -> dict[str, dict[str, str]]:
    """The study's arms: name -> the program's flags."""
    base = {**RECIPE, **QUICK, **QUICK_KNN} if quick else RECIPE
    if study == "recipe":
        longer = {"--max-steps": "80"} if quick else {"--max-steps": "40000", "--eval-every": "2500"}
        return {"recipe": base, "recipe 40k": {**base, **longer}}
    warmup = {"on": base["--warmup-steps"], "off": "0"}
    return {f"lr {lr}, warm-up {w}": {**base, "--lr": lr, "--warmup-steps": warmup[w]} for lr in LRS for w in warmup}


def argv(flags: dict[str, str]) -> list[str]:
    return [token for pair in flags.items() for token in pair]


def run_cell(flags: dict[str, str], out_dir: Path) -> dict[str, Any]:
    """One run of the program from step 0: its k-NN curve, collapse signal and CPU minutes."""
    shutil.rmtree(out_dir, ignore_errors=True)  # a run left by an interrupted bench starts afresh
    command = [sys.executable, "phase5_big_run.py", *argv(flags), "--output-dir", str(out_dir)]
    print("[run] OMP_NUM_THREADS=1 " + " ".join(command[1:]), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=common.REPO_ROOT, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 3):  # 3: stopped on a non-finite loss
        raise RuntimeError(f"exit {done.returncode}:\n{done.stderr[-2000:]}")
    metrics = json.loads((out_dir / "metrics.json").read_text()) if (out_dir / "metrics.json").exists() else {}
    with (out_dir / "log.csv").open(newline="") as handle:
        entropy = [float(row["teacher_entropy"]) for row in csv.DictReader(handle)]
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / 60
    steps = int(flags["--max-steps"])
    return {
        "command": "OMP_NUM_THREADS=1 python " + " ".join(command[1:-2]),
        "status": "diverged" if done.returncode == 3 else "finished",
        "cpu_minutes": round(cpu, 2),
        "knn": [[s, k, round(cpu * s / steps, 2)] for s, k in metrics.get("knn_history", [])],
        "knn_at_init": metrics.get("knn_top1_at_init"),
        "knn_raw_pixels": metrics.get("knn_top1_raw_pixels"),
        "knn_final": metrics.get("knn_top1"),
        "entropy_min": min(entropy, default=math.nan),
    }


def cache(seed: int, quick: bool) -> common.CellCache:
    name = f"dino_knn{'_quick' if quick else ''}_seed{seed}"
    return common.CellCache(name, {"seed": seed, "version": CELL_VERSION}, common.RESULTS_DIR / "cache")


def train(study: str, seeds: list[int], quick: bool) -> None:
    for seed in seeds:
        cells = cache(seed, quick)
        for name, flags in arms(study, quick).items():
            folder = f"{'quick-' if quick else ''}{name}-seed{seed}".replace(" ", "").replace(",", "_")
            out = common.REPO_ROOT / "runs" / "bench-dino_knn" / folder
            key = " ".join(argv(flags))  # the recipe is also the warm-up study's "lr 2e-3, warm-up on"
            result = cells.compute(key, lambda f=flags, o=out, s=seed: run_cell({**f, "--seed": str(s)}, o))
            print(f"[done] {name}, seed {seed}: k-NN {result['knn_final']}, {result['cpu_minutes']} CPU min")


def runs_of(cells: dict[int, dict[str, Any]], flags: dict[str, str]) -> dict[int, dict[str, Any]]:
    """The cached runs of one arm, by seed."""
    key = " ".join(argv(flags))
    return {seed: c[key] for seed, c in cells.items() if key in c}


def warmup_rows(cells: dict[int, dict[str, Any]], quick: bool) -> list[list[object]]:
    """Per arm: final k-NN over seeds, lowest teacher entropy, and warm-up's paired effect."""
    rows: list[list[object]] = []
    study = arms("warmup", quick)
    for lr in LRS:
        arm = {w: runs_of(cells, study[f"lr {lr}, warm-up {w}"]) for w in ("on", "off")}
        knn = {w: {s: r["knn_final"] for s, r in runs.items() if r["knn_final"] is not None} for w, runs in arm.items()}
        diffs = [knn["on"][s] - knn["off"][s] for s in knn["on"] if s in knn["off"]]
        for w, runs in arm.items():
            effect = (common.paired_verdict(diffs, "warm-up") if diffs else "—") if w == "on" else ""
            entropy = f"{min(r['entropy_min'] for r in runs.values()):.2f}" if runs else "—"
            diverged = sum(r["status"] == "diverged" for r in runs.values())
            knn_text = common.mean_sd(list(knn[w].values()), 4)
            rows.append([f"lr {lr}, warm-up {w}", len(runs), diverged, knn_text, entropy, effect])
    return rows


def recipe_lines(cells: dict[int, dict[str, Any]], quick: bool) -> list[str]:
    lines = []
    for name, flags in arms("recipe", quick).items():
        for seed, r in runs_of(cells, flags).items():
            curve = ", ".join(f"{k:.4f} at {m:g} min" for _, k, m in r["knn"][1:])
            lines += [f"- {name}, seed {seed}: `{r['command']}`: {r['cpu_minutes']} CPU minutes; k-NN {curve}."]
    return lines


def report(seeds: list[int], quick: bool) -> None:
    cells = {seed: cache(seed, quick).cells for seed in seeds}
    every = {**arms("warmup", quick), **arms("recipe", quick)}
    missing = [f"{name} seed {s}" for name, flags in every.items() for s in seeds if s not in runs_of(cells, flags)]
    first = next((r for c in cells.values() for r in c.values()), {})
    headers = ["arm", "seeds", "diverged", "final k-NN (mean ± sd)", "lowest teacher entropy", "on minus off, 95%"]
    text = "\n".join(
        [
            "# DINO on one CPU thread: k-NN against CPU minutes, warm-up on and off",
            "",
            f"`python bench/dino_knn.py --report --seeds {' '.join(map(str, seeds))}`. k-NN on raw pixels: "
            f"{first.get('knn_raw_pixels')}; the network at init: {first.get('knn_at_init')} (the same subsets).",
            "",
            "## Warm-up (500 steps) against none: the 10-minute recipe at 1x, 2x and 4x its LR",
            "",
            common.markdown_table(headers, warmup_rows(cells, quick), "lrrrrl"),
            "## The recipe's k-NN against CPU minutes",
            "",
            *recipe_lines(cells, quick),
            "",
            "Missing cells: " + ("; ".join(missing) or "none") + ".",
            "",
            common.provenance(common.machine_info()),
            "",
        ]
    )
    name = "dino_knn" + ("_quick" if quick else "")
    common.write_text(common.RESULTS_DIR / f"{name}.md", text)
    common.write_json(common.RESULTS_DIR / f"{name}.json", {"machine": common.machine_info(), "cells": cells})
    draw(cells, quick, common.RESULTS_DIR / f"{name}.png")
    print(text)


def draw(cells: dict[int, dict[str, Any]], quick: bool, path: Path) -> None:
    from matplotlib.figure import Figure

    from lrsched.render import save_figure

    fig = Figure(figsize=(12, 3.8), layout="constrained")
    study = arms("warmup", quick)
    for ax, lr in zip(fig.subplots(1, len(LRS), sharey=True), LRS):
        for w, colour in (("on", "#1f77b4"), ("off", "#d62728")):
            for k, run in enumerate(runs_of(cells, study[f"lr {lr}, warm-up {w}"]).values()):
                xs, ys = [m for _, _, m in run["knn"]], [knn for _, knn, _ in run["knn"]]
                ax.plot(xs, ys, color=colour, alpha=0.8, label=None if k else f"warm-up {w}")
        ax.set(title=f"peak LR {lr}", xlabel="CPU minutes", ylabel="k-NN top-1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8) if ax.lines else None
    save_figure(fig, path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=["warmup", "recipe"], default="warmup", help="default warmup")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default 0 1 2")
    parser.add_argument("--report", action="store_true", help="train nothing: write the results from the cache")
    parser.add_argument("--quick", action="store_true", help="40-step runs on small k-NN subsets (a smoke test)")
    opts = parser.parse_args()
    if not opts.report:
        train(opts.study, opts.seeds, opts.quick)
    report(opts.seeds, opts.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
