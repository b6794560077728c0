"""Schedule study: does train.py's ``auto`` strategy pick well, at each run length?

Usage: ``python bench/schedule_study.py [--sizes 256 1024] [--seeds 0 1 2 3] [--stop-after MIN] [--report]``.
Each cell is one train.py run (its ``main``, one thread, ``--save_strategy no``) on a fixed subset of its
tweet split: N training tweets (256 at 1, 3, 10 epochs; 1,024 at 1, 3), 64 validation, 256 test, batch 16.
Contenders: each ``--lr_strategy`` with the run-length row's values (docs/design.md section 4), wsd with
a 20% decay, HF Trainer's default (linear, 5e-5, no warm-up) and note 004's legacy restarts x2. ``auto``
is its row's contender (checked: the same LR at every step); a contender with the same LRs as an earlier
one is that run. ``--seed`` moves the head's init, dropout and batch order, never the data, so
``auto - contender`` pairs by seed. Cells are cached per size and seed in ``bench/results/cache/`` (keyed
on ``CELL_VERSION``); ``--report`` trains nothing and writes ``schedule_study.{md,json}``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# isort: split
import _common as common

BUDGETS = {256: (1, 3, 10), 1024: (1, 3)}
AUTO_ROW = {1: "constant", 3: "linear", 10: "cosine"}
CONTENDERS = {
    "constant": "--lr_strategy constant",
    "linear": "--lr_strategy linear",
    "cosine": "--lr_strategy cosine",
    "cosine_restarts": "--lr_strategy cosine_restarts",
    "wsd": "--lr_strategy wsd --decay_ratio 0.2",
    "hf_default": "--lr_strategy linear --learning_rate 5e-5 --warmup_steps 0",
    "legacy": "--lr_strategy cosine_restarts --num_cycles 2 --learning_rate 5e-5 --warmup_ratio 0.1",
}
BATCH, VALIDATION, TEST = 16, 64, 256
CELL_VERSION = 1
"""Bump when a change (here or in train.py's numerics) alters what a cell trains: the cache then starts over."""


def write_subset(n: int, folder: Path) -> list[str]:
    """The fixed subset (n training tweets) as CSV files; train.py's flags that read them."""
    from lrsched.recipes.finetune import data as D

    splits = D.load_splits(D.DataFlags(None, None, None, "text", "label", n, VALIDATION, TEST, seed=0))
    argv = []
    for name, part in (("train", splits.train), ("validation", splits.validation), ("test", splits.test)):
        assert part is not None
        buf = io.StringIO()
        csv.writer(buf).writerows(
            [("text", "label"), *((t, splits.label_names[y]) for t, y in zip(part.texts, part.labels))]
        )
        argv += [f"--{name}_file", str(common.write_text(folder / f"{name}.csv", buf.getvalue()))]
    return [*argv, "--per_device_train_batch_size", str(BATCH), "--per_device_eval_batch_size", "64"]


def schedule(argv: list[str], n: int) -> list[float]:
    """The LR at every step of the schedule train.py resolves for ``argv`` (``n`` tweets, one process)."""
    from lrsched.recipes.finetune.flags import parse
    from lrsched.recipes.finetune.plan import plan_from_args

    lr = plan_from_args(parse(argv), math.ceil(n / BATCH)).schedule
    assert lr.total is not None
    return [lr(t) for t in range(lr.total + 1)]


def run_cell(argv: list[str]) -> dict[str, Any]:
    """train.py with ``argv`` in a temporary folder: its LR and loss per update, and its test result."""
    from lrsched.recipes.finetune.main import main

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="schedule_study-") as out:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            status = main([*argv, "--save_strategy", "no", "--disable_tqdm", "--output_dir", out])
        if status != 0:
            raise RuntimeError(f"train.py {' '.join(argv)} exited with {status}:\n{printed.getvalue()}")
        report = json.loads(Path(out, "eval.json").read_text())
        with Path(out, "log.csv").open() as f:
            rows = list(csv.DictReader(f))
    return {
        "lr": [float(r["lr"]) for r in rows],
        "loss": [float(r["loss"]) for r in rows],
        "test": report["test"],
        "best_epoch": report["best"]["epoch"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def cell_cache(n: int, seed: int, cache_dir: Path) -> common.CellCache:
    config = {"n": n, "seed": seed, "batch": BATCH, "validation": VALIDATION, "test": TEST, "version": CELL_VERSION}
    return common.CellCache(f"schedule_study_n{n}_seed{seed}", config, cache_dir)


def instability(loss: list[float]) -> float:
    """Mean ``|loss(t) - loss(t-1)|`` over the second half of the run: how much the loss bounces."""
    half = loss[len(loss) // 2 :]
    return statistics.fmean(abs(b - a) for a, b in itertools.pairwise(half))


def train(n: int, seeds: list[int], cache_dir: Path, stop_after: float) -> None:
    """Every missing cell of size ``n`` (a whole seed at a time), cached as it finishes."""
    base = write_subset(n, cache_dir / f"schedule_study_n{n}_data")
    started = time.perf_counter()
    for seed, e, name in itertools.product(seeds, BUDGETS[n], CONTENDERS):
        cache = cell_cache(n, seed, cache_dir)
        key = f"E{e}/{name}/seed{seed}"
        argv = [*base, "--num_epochs", str(e), "--seed", str(seed), *CONTENDERS[name].split()]
        if key in cache.cells or twin_of(n, e, name) is not None:
            continue
        if stop_after and time.perf_counter() - started > 60 * stop_after:
            print(f"--stop-after {stop_after:g}: stopping before {key}", flush=True)
            return
        cell = cache.compute(key, lambda argv=argv: run_cell(argv))
        print(f"n={n} {key}: test accuracy {cell['test']['accuracy']:.3f} ({cell['seconds']:.0f} s)", flush=True)


def twin_of(n: int, e: int, name: str) -> str | None:
    """The earlier contender whose LR equals ``name``'s at every step (this size and budget), if any."""
    probe = ["--num_epochs", str(e)]
    mine = schedule([*probe, *CONTENDERS[name].split()], n)
    earlier = list(CONTENDERS)[: list(CONTENDERS).index(name)]
    return next((c for c in earlier if schedule([*probe, *CONTENDERS[c].split()], n) == mine), None)


def compare(n: int, e: int, cells: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
    """Per contender: mean accuracy, and auto minus it (paired by seed) with its interval."""
    auto = AUTO_ROW[e]
    assert schedule(["--num_epochs", str(e)], n) == schedule(["--num_epochs", str(e), *CONTENDERS[auto].split()], n)

    def get(name: str, seed: int) -> dict[str, Any] | None:
        return cells.get(f"E{e}/{twin_of(n, e, name) or name}/seed{seed}")

    rows = []
    for name in CONTENDERS:
        pairs = [(a["test"], c["test"], c["loss"]) for s in seeds if (a := get(auto, s)) and (c := get(name, s))]
        if pairs:
            acc = [c["accuracy"] for _, c, _ in pairs]
            rows.append(
                {
                    "contender": f"**{name} = auto**" if name == auto else name,
                    "seeds": len(pairs),
                    "accuracy": common.mean_sd(acc),
                    "macro_f1": f"{statistics.fmean(c['macro_f1'] for _, c, _ in pairs):.3f}",
                    "instability": f"{statistics.fmean(instability(loss) for _, _, loss in pairs):.3f}",
                    "auto_minus_it": ""
                    if name == auto
                    else common.paired_verdict([a["accuracy"] - c["accuracy"] for a, c, _ in pairs], "auto"),
                }
            )
    return rows


def stability(rows: list[dict[str, Any]]) -> str:
    """Note 004's 1-epoch claim (constant stops the LR bouncing), auto against the legacy restarts."""
    by = {r["contender"]: r for r in rows}
    if "legacy" not in by:
        return "1-epoch stability: not measured yet."
    a, b = by["**constant = auto**"], by["legacy"]
    return (
        f"1-epoch stability, auto (constant) against legacy (restarts x2): loss instability {a['instability']} "
        f"vs {b['instability']}; test accuracy over seeds (mean ± sd) {a['accuracy']} vs {b['accuracy']}."
    )


def report(sizes: list[int], seeds: list[int], cache_dir: Path, out: Path) -> None:
    """schedule_study.{md,json} from the cached cells."""
    tables, data = [], {}
    for n in sizes:
        cells = {k: v for s in seeds for k, v in cell_cache(n, s, cache_dir).cells.items()}
        for e in BUDGETS[n]:
            rows = compare(n, e, cells, seeds)
            data[f"n{n}/E{e}"] = rows
            body = [list(r.values()) for r in rows]
            head = ["contender", "seeds", "test accuracy (mean ± sd)", "macro-F1", "loss instability"]
            tables += [f"### {n} training tweets, {e} epoch(s)", ""]
            if not rows:
                tables += [f"Not run yet: `python bench/schedule_study.py --sizes {n}`.", ""]
                continue
            tables += [common.markdown_table([*head, "auto minus it, 95% interval"], body, "lrrrrl"), ""]
            if e == 1:
                tables += [stability(rows), ""]
    info = common.machine_info(("torch", "transformers"))
    text = [
        "# Schedule study: train.py's `auto` against each strategy",
        "",
        f"MiniLM-L6, 3-class tweets, batch {BATCH}, {VALIDATION} validation and {TEST} test tweets (majority "
        "class 0.430), fp32, one CPU thread. Test = the best-validation epoch's model. Loss instability: mean "
        "|loss(t) - loss(t-1)| over the second half of the run. The last column is auto's accuracy minus the "
        "contender's, paired by seed, with a 95% t-interval: a verdict only where it excludes 0.",
        "",
        *tables,
        common.provenance(info),
        "",
    ]
    common.write_text(out / "schedule_study.md", "\n".join(text))
    common.write_json(out / "schedule_study.json", {"machine": info, "contenders": CONTENDERS, "comparisons": data})
    print("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--stop-after", type=float, default=0, help="start no cell after MIN minutes (0: no limit)")
    parser.add_argument("--report", action="store_true", help="train nothing; write the results from the cache")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    opts = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if not opts.report:
        for n in opts.sizes:
            train(n, opts.seeds, opts.out / "cache", opts.stop_after)
    report(sorted(BUDGETS), opts.seeds, opts.out / "cache", opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
