"""DINO quality per compute: k-NN of ``phase5_big_run.py`` after a fixed CPU budget, warm-up on/off.

Usage: ``python bench/dino_knn.py [--steps N] [--seeds 0 1] [--lr-mults 1 4] [--jobs 2]
[--quick] [--no-cache] [--out DIR]`` (``make bench`` runs it with the defaults).

Every cell is one run of the documented CPU recipe of ``phase5_big_run.py`` (docs/phase5.md:
``--preset tiny``, batch 48, 2 local crops, 512 prototypes, teacher temperature 0.04 constant,
teacher momentum 0.99, ``--koleo-weight 0.1``, ``OMP_NUM_THREADS=1``), run as a subprocess for
a fixed number of steps ``--steps`` (default 300), with its own k-NN evaluation (weighted k-NN,
k=20, T=0.07, cosine, teacher CLS features, 10,000 training and 2,000 test images of
Fashion-MNIST, the same fixed subsets in every run) every ``--eval-every`` steps (default 50).

1. **Quality per compute.** Each run's ``metrics.json`` gives k-NN on raw pixels and of the
   network at initialisation (both on the same subsets), the k-NN history, and its median
   seconds per step; the bench adds the wall time of the whole subprocess.
2. **Warm-up on against off at the same peak LR** (note 000's claim: warm-up prevents early
   collapse). Arms: ``--warmup-steps W`` with ``W = steps // 10`` against ``--warmup-steps 0``,
   at the recipe's peak LR (1e-3) times each of ``--lr-mults`` (default 1 and 4), for each of
   ``--seeds`` (default 0 and 1). Only the LR warm-up differs between the arms: the other
   schedules that default to ``--warmup-steps`` are pinned to the same values in both
   (``--freeze-last-layer-steps W``, ``--warmup-teacher-temp-steps 0``; the teacher temperature
   is constant anyway). The collapse signals come from each run's ``log.csv``, one row per
   step: ``teacher_entropy`` (near ``log(out_dim)``: uniform teacher; near 0: one prototype
   wins) and ``koleo`` (DINOv2's KoLeo term: high when the student's CLS features crowd
   together), plus ``loss`` and ``grad_norm``. A run that stops on a non-finite loss (exit 3)
   is recorded as diverged, with its log up to that step.

The two runs of a warm-up pair (same LR and seed) run at the same time (``--jobs 2``, one
thread each) so they share the machine's load; pairs run one after another, seed 0 of every LR
first. Outputs, under ``--out`` (default ``bench/results``): ``dino_knn.json`` (machine,
versions, the exact bench command and every run's command, per-step logs, summaries),
``dino_knn.md`` (tables) and ``dino_knn.png`` (k-NN, teacher entropy and KoLeo against step,
one column per LR). Finished runs are cached in ``<out>/cache/dino_knn.json``; an interrupted
bench reruns only the unfinished runs (from step 0: their partial run folders under
``runs/bench-dino_knn/`` are deleted, so every recorded wall time is one uninterrupted run).
``--quick`` (20 steps, small k-NN subsets, one seed, LR x1) checks that the script works;
``--render-only`` runs nothing and writes the outputs from the cached runs (the missing ones listed).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# isort: split
from _common import REPO_ROOT, RESULTS_DIR, CellCache, machine_info, markdown_table, write_json, write_text

SCRIPT = "dino_knn"
PROGRAM = REPO_ROOT / "phase5_big_run.py"
RUNS_DIR = REPO_ROOT / "runs" / "bench-dino_knn"
BASE_LR = 1e-3
OUT_DIM = 512
# The documented CPU recipe (docs/phase5.md), less the flags this bench sets per cell.
RECIPE = [
    "--preset", "tiny",
    "--batch-size", "48",
    "--local-crops", "2",
    "--out-dim", str(OUT_DIM),
    "--warmup-teacher-temp", "0.04",
    "--teacher-temp", "0.04",
    "--momentum-teacher", "0.99",
    "--koleo-weight", "0.1",
]  # fmt: skip
LOG_COLUMNS = ("lr", "loss", "teacher_entropy", "koleo", "grad_norm")
ARMS = ("warm-up", "no warm-up")
COLOURS = {"warm-up": "#1f77b4", "no warm-up": "#d62728"}
SEED_STYLES = ("-", "--", ":", "-.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 300; --quick 20)")
    p.add_argument("--eval-every", type=int, default=None, help="k-NN every N steps (default 50; --quick 10)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds per arm (default 0 1; --quick 0)")
    p.add_argument("--lr-mults", type=float, nargs="+", default=None, help="peak LR = 1e-3 x each (default 1 4)")
    p.add_argument("--jobs", type=int, default=2, help="runs at the same time, one thread each (default 2)")
    p.add_argument("--knn-train-samples", type=int, default=None, help="default 10000 (--quick 1000)")
    p.add_argument("--knn-test-samples", type=int, default=None, help="default 2000 (--quick 500)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 20 steps, small k-NN, one seed, LR x1")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the cell cache")
    p.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: write the results from the cached runs (missing ones are listed)",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default bench/results)")
    args = p.parse_args(argv)
    q = args.quick
    args.steps = args.steps or (20 if q else 300)
    args.eval_every = args.eval_every or (10 if q else 50)
    args.seeds = args.seeds if args.seeds is not None else ([0] if q else [0, 1])
    args.lr_mults = args.lr_mults or ([1.0] if q else [1.0, 4.0])
    args.knn_train_samples = args.knn_train_samples or (1000 if q else 10000)
    args.knn_test_samples = args.knn_test_samples or (500 if q else 2000)
    if args.steps < 10 or args.jobs < 1:
        p.error("--steps must be at least 10 and --jobs at least 1")
    return args


# --- one run -----------------------------------------------------------------------------------


def cell_name(lr: float, warmup: int, seed: int) -> str:
    return f"lr={lr:g}/warmup={warmup}/seed={seed}"


def run_command(args: argparse.Namespace, lr: float, warmup: int, seed: int, out_dir: Path) -> list[str]:
    """The exact ``phase5_big_run.py`` command line of one cell."""
    freeze = max(1, args.steps // 10)
    return [
        sys.executable,
        str(PROGRAM.relative_to(REPO_ROOT)),
        *RECIPE,
        "--max-steps", str(args.steps),
        "--lr", f"{lr:g}",
        "--warmup-steps", str(warmup),
        "--freeze-last-layer-steps", str(freeze),
        "--warmup-teacher-temp-steps", "0",
        "--seed", str(seed),
        "--eval-every", str(args.eval_every),
        "--knn-train-samples", str(args.knn_train_samples),
        "--knn-test-samples", str(args.knn_test_samples),
        "--save-every", "0",
        "--keep-checkpoints", "1",
        "--output-dir", str(out_dir.relative_to(REPO_ROOT)),
    ]  # fmt: skip


def read_log(path: Path) -> dict[str, list[float]]:
    """``log.csv``'s step and the columns in ``LOG_COLUMNS``, as lists (empty when absent)."""
    cols: dict[str, list[float]] = {"step": [], **{c: [] for c in LOG_COLUMNS}}
    if not path.exists():
        return cols
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            cols["step"].append(int(row["step"]))
            for c in LOG_COLUMNS:
                cols[c].append(float(row[c]) if row.get(c) not in (None, "") else math.nan)
    return cols


def run_cell(args: argparse.Namespace, lr: float, warmup: int, seed: int) -> dict[str, Any]:
    """Run one cell from step 0 and return its metrics, per-step log and wall time."""
    out_dir = RUNS_DIR / ("quick" if args.quick else "full") / cell_name(lr, warmup, seed).replace("/", "_")
    shutil.rmtree(out_dir, ignore_errors=True)  # a run left by an interrupted bench starts afresh
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = run_command(args, lr, warmup, seed, out_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(f"[run] {cell_name(lr, warmup, seed)}: OMP_NUM_THREADS=1 {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    (out_dir / "bench-stderr.txt").write_text(done.stderr)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"{cell_name(lr, warmup, seed)}: exit {done.returncode}\n{done.stderr[-2000:]}")
    metrics_path = out_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    log = read_log(out_dir / "log.csv")
    status = "diverged (non-finite loss)" if done.returncode == 3 else metrics.get("status", "?")
    print(
        f"[done] {cell_name(lr, warmup, seed)}: {status}, k-NN {metrics.get('knn_top1')}, wall {wall:.0f} s",
        flush=True,
    )
    return {
        "lr": lr,
        "warmup_steps": warmup,
        "seed": seed,
        "steps": args.steps,
        "exit_status": done.returncode,
        "status": status,
        "wall_s": round(wall, 1),
        "command": "OMP_NUM_THREADS=1 " + " ".join(cmd[1:]).replace(sys.executable, "python"),
        "metrics": metrics,
        "log": log,
    }


# --- summaries ---------------------------------------------------------------------------------


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.fmean(xs) if xs else math.nan


def summarise(cell: dict[str, Any]) -> dict[str, Any]:
    """Per-run numbers for the tables: k-NN, collapse signals early / late, timing."""
    log, m, steps = cell["log"], cell["metrics"], cell["steps"]
    early = max(1, steps // 10)
    ent, kol, gn = log["teacher_entropy"], log["koleo"], log["grad_norm"]
    return {
        "lr": cell["lr"],
        "warmup_steps": cell["warmup_steps"],
        "seed": cell["seed"],
        "status": cell["status"],
        "steps_done": len(log["step"]),
        "knn_final": m.get("knn_top1"),
        "knn_at_init": m.get("knn_top1_at_init"),
        "knn_raw_pixels": m.get("knn_top1_raw_pixels"),
        "knn_best": max((h[1] for h in m.get("knn_history", [])), default=None),
        "entropy_early_mean": _mean(ent[:early]),
        "entropy_min": min(ent) if ent else math.nan,
        "entropy_last50_mean": _mean(ent[-50:]),
        "koleo_early_mean": _mean(kol[:early]),
        "koleo_max": max(kol) if kol else math.nan,
        "koleo_last50_mean": _mean(kol[-50:]),
        "grad_norm_early_max": max(gn[:early]) if gn else math.nan,
        "seconds_per_step_median": m.get("seconds_per_step_median"),
        "wall_s": cell["wall_s"],
    }


def fmt(x: Any, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return format(x, spec)


def render_markdown(report: dict[str, Any]) -> str:
    machine, cfg, rows = report["machine"], report["config"], report["summaries"]
    lines = [
        "# DINO k-NN per compute, warm-up on/off (`bench/dino_knn.py`)\n",
        f"Command: `{machine['command']}`  \n"
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable core(s) of {machine['cpu_count']}, "
        f"load {machine['load_average_1_5_15min']} at start (shared with other jobs)  \n"
        f"Python {machine['python']}, " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()) + f"; "
        f"commit {machine['git_commit']}; {machine['timestamp_utc']}  \n"
        f"Bench wall time: {report['bench_wall_s']:.0f} s for the {report['runs_done']} run(s) done by this "
        f"invocation ({report['runs_cached']} taken from the cache). The runs themselves, pairs two at a time: "
        f"{report['runs_wall_s']:.0f} s ({report['runs_wall_s'] / 60:.1f} min; the sum over pairs of the longer "
        "run's wall time).\n",
        f"Each run: the documented CPU recipe of `phase5_big_run.py` for **{cfg['steps']} steps** (batch 48, "
        f"{cfg['steps'] * 48:,} images, {cfg['steps'] * 48 / 60000:.2f} epoch), k-NN every {cfg['eval_every']} "
        f"steps on {cfg['knn_train_samples']:,} train / {cfg['knn_test_samples']:,} test images (the same subsets "
        f"in every run), `--jobs {cfg['jobs']}` runs at a time. Warm-up arm: `--warmup-steps "
        f"{cfg['warmup_steps']}`; the other arm `--warmup-steps 0`; both `--freeze-last-layer-steps "
        f"{cfg['warmup_steps']} --warmup-teacher-temp-steps 0`, so only the LR warm-up differs.  \n"
        f"Why these sizes: {cfg['choice']}\n",
        "## k-NN top-1 (weighted, k=20, T=0.07) after the budget\n",
    ]
    raw = {r["knn_raw_pixels"] for r in rows if r["knn_raw_pixels"] is not None}
    lines.append(
        f"Raw pixels on the same subsets: **{', '.join(fmt(x) for x in sorted(raw))}** "
        "(docs/design.md section 11: 0.846 on the full 60k/10k sets).\n"
    )
    head = ["peak LR", "warm-up", "seed", "status", "k-NN at init", "k-NN best", "k-NN final", "final - init"]
    body = []
    for r in rows:
        gain = None if r["knn_final"] is None or r["knn_at_init"] is None else r["knn_final"] - r["knn_at_init"]
        body.append(
            [
                f"{r['lr']:g}",
                r["warmup_steps"],
                r["seed"],
                r["status"],
                fmt(r["knn_at_init"]),
                fmt(r["knn_best"]),
                f"**{fmt(r['knn_final'])}**",
                fmt(gain, "+.4f"),
            ]
        )
    lines.append(markdown_table(head, body, "rrrlrrrr"))
    lines.append("\n## Compute per run\n")
    head = ["peak LR", "warm-up", "seed", "steps", "median s/step", "wall time (s)", "k-NN final"]
    body = [
        [
            f"{r['lr']:g}",
            r["warmup_steps"],
            r["seed"],
            r["steps_done"],
            fmt(r["seconds_per_step_median"], ".3f"),
            fmt(r["wall_s"], ".0f"),
            fmt(r["knn_final"]),
        ]
        for r in rows
    ]
    lines.append(markdown_table(head, body, "rrrrrrr"))
    lines.append(
        "\nWall time: the whole subprocess (start-up, data loading, k-NN on raw pixels, at init and every "
        f"{cfg['eval_every']} steps, training), with {cfg['jobs']} runs sharing the 2 cores and with whatever "
        "else ran on the machine (see the load above): compare runs of one pair, not across pairs.\n"
    )
    early = max(1, cfg["steps"] // 10)
    lines.append(f"\n## Collapse signals from `log.csv` (first {early} steps = the warm-up; last 50 steps)\n")
    lines.append(
        f"`teacher_entropy` of the centred, sharpened teacher (log {OUT_DIM} = {math.log(OUT_DIM):.2f}: uniform; "
        "0: one prototype wins); `koleo` (high: the student's CLS features crowd together).\n"
    )
    head = [
        "peak LR",
        "warm-up",
        "seed",
        "entropy early",
        "entropy min",
        "entropy last 50",
        "KoLeo early",
        "KoLeo max",
        "KoLeo last 50",
        "grad norm early max",
    ]
    body = [
        [
            f"{r['lr']:g}",
            r["warmup_steps"],
            r["seed"],
            fmt(r["entropy_early_mean"], ".3f"),
            fmt(r["entropy_min"], ".3f"),
            fmt(r["entropy_last50_mean"], ".3f"),
            fmt(r["koleo_early_mean"], ".3f"),
            fmt(r["koleo_max"], ".3f"),
            fmt(r["koleo_last50_mean"], ".3f"),
            fmt(r["grad_norm_early_max"], ".2f"),
        ]
        for r in rows
    ]
    lines.append(markdown_table(head, body, "rrr" + "r" * 7))
    lines.append("\n## Warm-up on minus off, per LR (mean over seeds)\n")
    n_test = cfg["knn_test_samples"]
    lines.append(
        f"One k-NN value on {n_test:,} test images has a binomial standard error of about "
        f"{math.sqrt(0.58 * 0.42 / n_test):.3f} (at 0.58); a difference of two runs, about "
        f"{math.sqrt(2 * 0.58 * 0.42 / n_test):.3f}, before any seed-to-seed variation.\n"
    )
    head = [
        "peak LR",
        "seeds",
        "k-NN final on",
        "k-NN final off",
        "on - off (mean)",
        "on - off per seed",
        "entropy last 50 on / off",
    ]
    body = []
    for d in report["paired"]:
        body.append(
            [
                f"{d['lr']:g}",
                d["seeds"],
                fmt(d["knn_on"]),
                fmt(d["knn_off"]),
                fmt(d["diff"], "+.4f"),
                ", ".join(fmt(x, "+.4f") for x in d["per_seed_diff"]),
                f"{fmt(d['entropy_on'], '.3f')} / {fmt(d['entropy_off'], '.3f')}",
            ]
        )
    lines.append(markdown_table(head, body, "rlrrrrr"))
    if report.get("missing"):
        lines.append("\nMissing cells (not run or failed): " + ", ".join(report["missing"]) + "\n")
    lines.append(f"\n![k-NN and collapse signals per arm]({report['stem']}.png)\n")
    return "\n".join(lines)


def paired(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warm-up on against off per LR, over the seeds that have both arms."""
    out = []
    for lr in sorted({r["lr"] for r in rows}):
        on = {r["seed"]: r for r in rows if r["lr"] == lr and r["warmup_steps"] > 0}
        off = {r["seed"]: r for r in rows if r["lr"] == lr and r["warmup_steps"] == 0}
        seeds = sorted(set(on) & set(off))
        if not seeds:
            continue

        def mean(arm: dict[int, dict[str, Any]], key: str, seeds: list[int] = seeds) -> float:
            return _mean([arm[s][key] if arm[s][key] is not None else math.nan for s in seeds])

        k_on, k_off = mean(on, "knn_final"), mean(off, "knn_final")
        out.append(
            {
                "lr": lr,
                "seeds": ", ".join(map(str, seeds)),
                "knn_on": k_on,
                "knn_off": k_off,
                "diff": k_on - k_off,
                "per_seed_diff": [(on[s]["knn_final"] or math.nan) - (off[s]["knn_final"] or math.nan) for s in seeds],
                "entropy_on": mean(on, "entropy_last50_mean"),
                "entropy_off": mean(off, "entropy_last50_mean"),
            }
        )
    return out


# --- figure ------------------------------------------------------------------------------------


def smooth(xs: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= window:
            acc -= xs[i - window]
        out.append(acc / min(i + 1, window))
    return out


def render_figure(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = report["cells"]
    lrs = sorted({c["lr"] for c in cells})
    seeds = sorted({c["seed"] for c in cells})
    fig, axes = plt.subplots(3, len(lrs), figsize=(6.5 * len(lrs), 11), squeeze=False, sharex=True)
    window = max(1, report["config"]["steps"] // 30)
    for j, lr in enumerate(lrs):
        ax_knn, ax_ent, ax_kol = axes[0][j], axes[1][j], axes[2][j]
        for c in sorted((c for c in cells if c["lr"] == lr), key=lambda c: (-c["warmup_steps"], c["seed"])):
            arm = ARMS[0] if c["warmup_steps"] > 0 else ARMS[1]
            style = SEED_STYLES[seeds.index(c["seed"]) % len(SEED_STYLES)]
            label = f"{arm} ({c['warmup_steps']} steps), seed {c['seed']}"
            hist = c["metrics"].get("knn_history", [])
            ax_knn.plot(
                [h[0] for h in hist], [h[1] for h in hist], style, marker="o", color=COLOURS[arm], label=label, lw=2
            )
            log = c["log"]
            for ax, key in ((ax_ent, "teacher_entropy"), (ax_kol, "koleo")):
                ax.plot(log["step"], log[key], color=COLOURS[arm], alpha=0.15, lw=0.8)
                ax.plot(log["step"], smooth(log[key], window), style, color=COLOURS[arm], lw=2, label=label)
        inits = sorted({c["metrics"]["knn_top1_at_init"] for c in cells if c["metrics"].get("knn_top1_at_init")})
        for k, init in enumerate(inits):
            ax_knn.axhline(init, color="grey", ls="--", lw=1, label="network at init" if k == 0 else None)
        raw = [c["metrics"].get("knn_top1_raw_pixels") for c in cells if c["metrics"].get("knn_top1_raw_pixels")]
        title = f"peak LR {lr:g}"
        if raw:
            title += f"  (raw-pixel k-NN on these subsets: {raw[0]:.3f})"
        ax_knn.set_title(title, fontsize=12)
        ax_knn.set_ylabel("k-NN top-1 (teacher CLS, k=20)")
        ax_ent.axhline(math.log(OUT_DIM), color="grey", ls=":", lw=1)
        ax_ent.text(0, math.log(OUT_DIM), f" log {OUT_DIM} (uniform teacher)", va="bottom", fontsize=9, color="grey")
        ax_ent.set_ylim(top=math.log(OUT_DIM) + 0.35)
        ax_ent.set_ylabel(f"teacher entropy (nats, {window}-step mean)")
        ax_kol.set_ylabel(f"KoLeo (high = features crowd, {window}-step mean)")
        ax_kol.set_xlabel("step")
        for ax in (ax_knn, ax_ent, ax_kol):
            ax.axvline(report["config"]["warmup_steps"], color="#1f77b4", ls=":", lw=1)
            ax.grid(alpha=0.3)
        ax_knn.legend(fontsize=8, loc="best")
    fig.suptitle(
        f"phase5_big_run.py CPU recipe, {report['config']['steps']} steps:\nLR warm-up "
        f"({report['config']['warmup_steps']} steps, dotted line) against none at the same peak LR",
        fontsize=13,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warmup = max(1, args.steps // 10)
    choice = (
        f"{args.steps} steps per run, {len(args.seeds)} seed(s) x 2 arms x {len(args.lr_mults)} LR(s) = "
        f"{2 * len(args.seeds) * len(args.lr_mults)} runs, 2 at a time. A 30-step probe of two concurrent runs "
        "took 0.56-0.6 s per step and about 11 s per k-NN evaluation of 10k+2k images, so a pair of "
        f"{args.steps}-step runs with k-NN every {args.eval_every} steps takes about "
        f"{(args.steps * 0.6 + (args.steps // args.eval_every + 2) * 11 + 10) / 60:.1f} min and the bench about "
        f"{len(args.seeds) * len(args.lr_mults) * (args.steps * 0.6 + (args.steps // args.eval_every + 2) * 11 + 10) / 60:.0f}"  # noqa: E501
        " min on an otherwise idle machine, inside the 30-35 min budget; 300 steps (not 400) is what leaves room"
        " for 2 seeds at 2 LRs. Other jobs on the shared cores can make it take up to twice as long (the runs'"
        " wall times below say how long it took)."
    )
    if args.quick:
        choice = "--quick: a smoke run of the script, not a measurement."
    machine = machine_info()
    config = {
        "steps": args.steps,
        "warmup_steps": warmup,
        "eval_every": args.eval_every,
        "seeds": args.seeds,
        "lr_mults": args.lr_mults,
        "base_lr": BASE_LR,
        "jobs": args.jobs,
        "knn_train_samples": args.knn_train_samples,
        "knn_test_samples": args.knn_test_samples,
        "quick": args.quick,
        "recipe": RECIPE,
        "torch": machine["packages"]["torch"],
    }
    name = SCRIPT + ("_quick" if args.quick else "")
    # The cache is keyed by the measured code (the program and its package) and the runs' command
    # lines, not by this script's tables and figure, so re-rendering them reuses the runs.
    code = [PROGRAM, *sorted((REPO_ROOT / "src" / "lrsched" / "recipes" / "dino").glob("*.py"))]
    config["command_template"] = run_command(args, 1.0, 1, 0, RUNS_DIR / "x")
    cache = CellCache(name, config, args.out / "cache", code=code, enabled=not args.no_cache)
    lock = threading.Lock()
    pairs = [(BASE_LR * m, seed) for seed in args.seeds for m in args.lr_mults]
    print(f"dino_knn: {len(pairs)} pair(s) of {args.steps}-step runs (warm-up {warmup} / 0), {args.jobs} at a time")

    start = time.perf_counter()
    failures: list[str] = []

    cached: list[str] = []

    def one(lr: float, w: int, seed: int) -> None:
        key = cell_name(lr, w, seed)
        if cache.get(key) is not None:
            print(f"[cache] {key}: reusing the result in {cache.path}")
            cached.append(key)
            return
        try:
            value = run_cell(args, lr, w, seed)
        except Exception as error:  # one failed run must not lose the others
            print(f"[fail] {key}: {error}", file=sys.stderr, flush=True)
            failures.append(key)
            return
        with lock:
            cache.put(key, value)

    jobs = [(lr, w, seed) for lr, seed in pairs for w in (warmup, 0)]
    if args.render_only:
        cached += [cell_name(*job) for job in jobs if cache.get(cell_name(*job)) is not None]
    else:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda job: one(*job), jobs))
    bench_wall = time.perf_counter() - start

    cells = [cache.get(cell_name(*job)) for job in jobs]
    missing = [cell_name(*job) for job, c in zip(jobs, cells, strict=True) if c is None]
    cells = [c for c in cells if c is not None]
    if not cells:
        print("no run finished", file=sys.stderr)
        return 1
    cells.sort(key=lambda c: (c["lr"], c["seed"], -c["warmup_steps"]))
    summaries = [summarise(c) for c in cells]
    pair_walls: dict[tuple[float, int], float] = {}
    for c in cells:  # the two runs of a pair run together: a pair lasts as long as its longer run
        pair_walls[(c["lr"], c["seed"])] = max(pair_walls.get((c["lr"], c["seed"]), 0.0), c["wall_s"])
    config["choice"] = choice
    report = {
        "machine": machine,
        "config": config,
        "bench_wall_s": round(bench_wall, 1),
        "runs_wall_s": round(sum(pair_walls.values()), 1),
        "runs_done": len(cells) - len(cached),
        "runs_cached": len(cached),
        "stem": name,
        "missing": missing,
        "summaries": summaries,
        "paired": paired(summaries),
        "cells": cells,
    }
    out: Path = args.out
    stem = name
    written = [write_json(out / f"{stem}.json", report), write_text(out / f"{stem}.md", render_markdown(report))]
    render_figure(report, out / f"{stem}.png")
    written.append(out / f"{stem}.png")
    for r in summaries:
        print(
            f"  lr {r['lr']:g} warm-up {r['warmup_steps']:>3} seed {r['seed']}: k-NN {fmt(r['knn_final'])} "
            f"(init {fmt(r['knn_at_init'])}, raw {fmt(r['knn_raw_pixels'])}), entropy last 50 "
            f"{fmt(r['entropy_last50_mean'], '.3f')}, wall {r['wall_s']:.0f} s"
        )
    print("wrote " + ", ".join(str(p) for p in written))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
