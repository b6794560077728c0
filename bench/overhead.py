"""Overhead of ``ScheduledLR`` against its peers: time per ``scheduler.step()`` and memory.

Usage: ``python bench/overhead.py [--quick] [--out DIR] [--no-cache]``.

1. Time per ``scheduler.step()`` for one warm-up + cosine plan (peak ``BASE``, floor 0,
   ``W = T // 10`` warm-up steps, ``T = rounds * block`` steps) driven by three contenders:

   - ``lrsched``: ``ScheduledLR(opt, Schedule("cosine", BASE, final=0, warmup=W, total=T))``;
   - ``hf``: transformers' ``get_cosine_schedule_with_warmup(opt, W, T)`` (a ``LambdaLR``);
   - ``torch``: ``SequentialLR([LinearLR(start_factor=1e-12, total_iters=W),
     CosineAnnealingLR(T_max=T - W)], milestones=[W])``.

   Each is measured with 1 and with 100 param groups (one 1-element tensor each, group
   ``i`` with LR ``BASE * (1 + i / groups)``). The contenders are interleaved in one process:
   in each round, each runs one block of ``block`` consecutive ``scheduler.step()`` calls, in
   an order shuffled per round, with the garbage collector off. Each contender keeps one
   scheduler for the whole cell, so the blocks continue along the curve and round ``r`` ends
   at step ``(r + 1) * block``; after the last round every scheduler stands at ``T``. A
   throw-away warm-up block per contender runs first. Reported per contender: the median
   ns/step over rounds, its interquartile range, the ratio of medians peer / lrsched, and the
   median of the per-round ratios (peer and lrsched timed in the same round). Defaults:
   101 rounds of 1,000 steps (T = 101,000); ``--quick``: 7 rounds of 200 steps.

   Before timing, ``optimizer.step()`` runs once with no gradients (it changes nothing), so
   torch does not warn about ``scheduler.step()`` before ``optimizer.step()``.

2. Correctness: at the end of every block, every group's LR of ``hf`` and ``torch`` must equal
   lrsched's to a relative 1e-9 (absolute floor ``1e-12 * BASE``, for values at or next to the
   cosine's end at 0, where a relative test means nothing). Any miss fails the script.

3. Memory of a 10^9-step plan, open-ended and finite: pickled bytes of the ``Schedule`` and of
   ``ScheduledLR.state_dict()`` at step 10^9, against a precomputed table of every step's
   value (DINOv2's ``CosineScheduler`` approach: numpy ``linspace`` + ``arange`` + ``cos`` +
   ``concatenate``): 8 bytes x 10^9 analytically, and the peak measured while building a
   10^6- and a 10^7-step table in a fresh subprocess (tracemalloc peak and growth of the peak
   RSS, ``VmHWM``), scaled linearly to 10^9 steps. Nothing near 8 GB is allocated.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import pickle
import random
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from transformers import get_cosine_schedule_with_warmup

# isort: split
from _common import BENCH_DIR, RESULTS_DIR, CellCache, machine_info, markdown_table, quantiles, write_json, write_text

from lrsched.schedules import Schedule
from lrsched.torch_sched import ScheduledLR

SCRIPT = "overhead"
BASE = 1e-3
REL_TOL = 1e-9
ABS_TOL = 1e-12 * BASE
BIG_STEPS = 10**9
PLANS = ("open-ended", "finite")
TABLE_PROBE_STEPS = (10**6, 10**7)
LINEAR_START_FACTOR = 1e-12  # LinearLR refuses 0: its LR sits BASE * 1e-12 * (1 - t / W) above ours in warm-up

CONTENDERS: dict[str, str] = {
    "lrsched": "lrsched ScheduledLR(Schedule('cosine'))",
    "hf": "HF get_cosine_schedule_with_warmup (LambdaLR)",
    "torch": "torch SequentialLR(LinearLR, CosineAnnealingLR)",
}
SHORT_LABELS = {"lrsched": "lrsched\nScheduledLR", "hf": "HF\nLambdaLR", "torch": "torch\nSequentialLR"}
COLOURS = {"lrsched": "#1f77b4", "hf": "#ff7f0e", "torch": "#2ca02c"}


class AgreementError(AssertionError):
    """The contenders disagree on an LR they should share."""


@dataclass(frozen=True)
class Config:
    """The sizes of one run; the cache is keyed by it."""

    rounds: int
    block: int
    groups: tuple[int, ...]
    seed: int

    @property
    def total(self) -> int:
        return self.rounds * self.block

    @property
    def warmup(self) -> int:
        return self.total // 10


# --- timing --------------------------------------------------------------------------------


def make_optimizer(groups: int) -> torch.optim.Optimizer:
    """SGD over ``groups`` param groups of one tiny tensor each, group ``i`` at ``BASE * (1 + i / groups)``."""
    param_groups = [
        {"params": [torch.zeros(1, requires_grad=True)], "lr": BASE * (1 + i / groups)} for i in range(groups)
    ]
    return torch.optim.SGD(param_groups, lr=BASE)


def make_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int) -> LRScheduler:
    """Contender ``name``'s scheduler for warm-up + cosine to 0 at ``total``."""
    if name == "lrsched":
        return ScheduledLR(optimizer, Schedule("cosine", BASE, final=0.0, warmup=warmup, total=total))
    if name == "hf":
        return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total)
    if name == "torch":
        ramp = LinearLR(optimizer, start_factor=LINEAR_START_FACTOR, end_factor=1.0, total_iters=warmup)
        decay = CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=0.0)
        return SequentialLR(optimizer, [ramp, decay], milestones=[warmup])
    raise ValueError(f"unknown contender {name!r}")


def build(name: str, groups: int, cfg: Config) -> LRScheduler:
    """A fresh optimizer and scheduler, with the one no-op ``optimizer.step()`` torch expects first."""
    optimizer = make_optimizer(groups)
    scheduler = make_scheduler(name, optimizer, cfg.warmup, cfg.total)
    optimizer.step()  # no gradients: changes nothing, but marks the optimizer as stepped
    return scheduler


def time_block(scheduler: LRScheduler, steps: int) -> float:
    """Nanoseconds per ``scheduler.step()`` over ``steps`` consecutive calls, garbage collector off."""
    step = scheduler.step
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(steps):
            step()
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / steps


def worst_disagreement(schedulers: dict[str, LRScheduler], step: int) -> float:
    """The largest relative LR gap of any peer to lrsched over all groups; raises past the tolerance."""
    reference = schedulers["lrsched"]
    if any(s.last_epoch != step for s in schedulers.values()):
        steps = {name: s.last_epoch for name, s in schedulers.items()}
        raise AgreementError(f"contenders at different steps {steps}, expected {step}")
    expected = [float(lr) for lr in reference.get_last_lr()]
    worst = 0.0
    for name, scheduler in schedulers.items():
        for group, (want, got) in enumerate(zip(expected, scheduler.get_last_lr())):
            gap = abs(float(got) - want)
            if gap > max(REL_TOL * abs(want), ABS_TOL):
                raise AgreementError(f"step {step}, group {group}: {name} lr={float(got)!r}, lrsched lr={want!r}")
            if want != 0.0:
                worst = max(worst, gap / abs(want))
    return worst


def timing_cell(groups: int, cfg: Config) -> dict[str, Any]:
    """Interleaved rounds for ``groups`` param groups: per-contender ns/step samples and summaries."""
    rng = random.Random(f"{cfg.seed}-{groups}")
    names = list(CONTENDERS)
    for name in names:  # warm-up: caches, allocator, first-call paths; thrown away
        time_block(build(name, groups, cfg), min(cfg.block, cfg.warmup))
    schedulers = {name: build(name, groups, cfg) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    orders: list[list[str]] = []
    worst = 0.0
    started = time.perf_counter()
    for round_index in range(cfg.rounds):
        order = names[:]
        rng.shuffle(order)
        orders.append(order)
        for name in order:
            samples[name].append(time_block(schedulers[name], cfg.block))
        worst = max(worst, worst_disagreement(schedulers, (round_index + 1) * cfg.block))
    wall = time.perf_counter() - started
    reference = samples["lrsched"]
    contenders: dict[str, Any] = {}
    for name in names:
        summary = quantiles(samples[name])
        paired = [peer / own for peer, own in zip(samples[name], reference)]
        contenders[name] = {
            "label": CONTENDERS[name],
            **{f"{key}_ns_per_step": value for key, value in summary.items()},
            "ratio_of_medians_vs_lrsched": summary["median"] / quantiles(reference)["median"],
            "paired_ratio_vs_lrsched": quantiles(paired),
            "samples_ns_per_step": [round(x, 1) for x in samples[name]],
        }
    return {
        "groups": groups,
        "rounds": cfg.rounds,
        "block_steps": cfg.block,
        "wall_s": round(wall, 2),
        "agreement": {
            "checked_steps": [(r + 1) * cfg.block for r in range(cfg.rounds)],
            "rel_tol": REL_TOL,
            "abs_tol": ABS_TOL,
            "worst_rel_gap": worst,
            "ok": True,
        },
        "orders": ["".join(n[0] for n in order) for order in orders],
        "contenders": contenders,
    }


# --- memory --------------------------------------------------------------------------------

# Runs in a fresh interpreter with only numpy loaded. Builds a table of every step's value the
# way DINOv2's CosineScheduler does, and reports the allocation peak and the growth of peak RSS.
TABLE_PROBE = """
import json, resource, sys, tracemalloc
import numpy as np

def peak_rss():
    # VmHWM: this process's own peak RSS (ru_maxrss can carry the parent's peak across exec)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def table(base, final, total, warmup):
    warm = np.linspace(0.0, base, warmup)
    iters = np.arange(total - warmup)
    decay = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((np.zeros(0), warm, decay))

steps = int(sys.argv[1])
rss_before = peak_rss()
tracemalloc.start()
values = table(5e-4, 1e-6, steps, steps // 100)
traced_now, traced_peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
rss_after = peak_rss()
print(json.dumps({"steps": steps, "table_nbytes": int(values.nbytes), "tracemalloc_peak": traced_peak,
                  "rss_peak_growth": rss_after - rss_before}))
"""


def probe_table(steps: int) -> dict[str, int]:
    """Measure building a ``steps``-long precomputed table in a subprocess."""
    done = subprocess.run(
        [sys.executable, "-c", TABLE_PROBE, str(steps)], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def pickled_size(obj: object) -> int:
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def scheduler_state_at(scheduler: LRScheduler, step: int) -> dict[str, Any]:
    """``scheduler``'s state dict after ``step`` updates, without running them."""
    if isinstance(scheduler, ScheduledLR):
        state = scheduler.state_dict()
        state["step"] = step
        scheduler.load_state_dict(state)  # closed form: the LR at ``step`` at once
    else:
        scheduler.last_epoch = step  # the state's counters; these peers are O(1) either way
        if isinstance(scheduler, SequentialLR):
            for inner in scheduler._schedulers:
                inner.last_epoch = step - scheduler._milestones[0]
    return scheduler.state_dict()


def memory_cell() -> dict[str, Any]:
    """Bytes needed to hold a 10^9-step plan: lrsched and its peers against a precomputed table."""
    warmup, peak, floor = 2500, 5e-4, 1e-6  # phase5_big_run.py's defaults
    plans = {
        PLANS[0]: Schedule("cosine", peak, final=floor, warmup=warmup, total=None),
        PLANS[1]: Schedule("cosine", peak, final=floor, warmup=warmup, total=BIG_STEPS),
    }
    states = {plan: scheduler_state_at(ScheduledLR(make_optimizer(1), s), BIG_STEPS) for plan, s in plans.items()}
    rows: list[dict[str, Any]] = [
        {"what": "lrsched Schedule object", **{plan: pickled_size(s) for plan, s in plans.items()}},
        {"what": "lrsched ScheduledLR.state_dict() at step 10^9", **{p: pickled_size(s) for p, s in states.items()}},
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("hf", "torch"):
            peer = make_scheduler(name, make_optimizer(1), warmup, BIG_STEPS)
            size = pickled_size(scheduler_state_at(peer, BIG_STEPS))
            rows.append({"what": f"{CONTENDERS[name]} state_dict() at step 10^9", "open-ended": None, "finite": size})
    probes = [probe_table(steps) for steps in TABLE_PROBE_STEPS]
    largest = probes[-1]
    scale = BIG_STEPS / largest["steps"]
    probed = f"10^{round(math.log10(largest['steps']))} steps x{scale:.0f}"
    table_rows = {
        "precomputed table, 8 B x 10^9 (analytic)": 8 * BIG_STEPS,
        f"precomputed table, peak while building (tracemalloc, {probed})": round(largest["tracemalloc_peak"] * scale),
        f"precomputed table, peak RSS growth (VmHWM, {probed})": round(largest["rss_peak_growth"] * scale),
    }
    rows += [{"what": what, **{plan: size for plan in plans}} for what, size in table_rows.items()]
    return {
        "steps": BIG_STEPS,
        "warmup": warmup,
        "base": peak,
        "final": floor,
        "pickle_protocol": pickle.HIGHEST_PROTOCOL,
        "table_method": (
            "a fresh python with numpy only builds the table with DINOv2 CosineScheduler's numpy operations "
            "(linspace warm-up, arange, cos, concatenate); tracemalloc peak and growth of peak RSS (VmHWM) are "
            "measured and scaled linearly from the largest probe to 10^9 steps; the open-ended plan needs a table as "
            "long as the run, so it is sized to the same 10^9 steps"
        ),
        "table_probes": probes,
        "rows": rows,
    }


# --- reporting -----------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def bytes_cell(n: int | None) -> str:
    """``1,234 (1.2 KB)``; plain ``123`` below a kilobyte; ``—`` for nothing measured."""
    if n is None:
        return "—"
    return f"{n:,}" if n < 1000 else f"{n:,} ({human_bytes(n)})"


def render_markdown(report: dict[str, Any]) -> str:
    machine, cfg = report["machine"], report["config"]
    rows = []
    for cell in report["timing"]:
        for c in cell["contenders"].values():
            paired = c["paired_ratio_vs_lrsched"]
            rows.append(
                [
                    c["label"],
                    cell["groups"],
                    f"{c['median_ns_per_step']:,.0f}",
                    f"{c['q1_ns_per_step']:,.0f} – {c['q3_ns_per_step']:,.0f} ({c['iqr_ns_per_step']:,.0f})",
                    f"{c['ratio_of_medians_vs_lrsched']:.2f}",
                    f"{paired['median']:.2f} ({paired['q1']:.2f} – {paired['q3']:.2f})",
                ]
            )
    timing = markdown_table(
        [
            "contender",
            "groups",
            "median ns/step",
            "IQR: q1 – q3 (width)",
            "ratio vs lrsched (medians)",
            "per-round ratio: median (q1 – q3)",
        ],
        rows,
        "lrrrrr",
    )
    agree = "; ".join(
        f"{c['groups']} group(s): {len(c['agreement']['checked_steps'])} block ends, "
        f"worst relative gap {c['agreement']['worst_rel_gap']:.1e}"
        for c in report["timing"]
    )
    memory = report["memory"]
    mem_rows = [[r["what"], *(bytes_cell(r[plan]) for plan in PLANS)] for r in memory["rows"]]
    probes = "; ".join(
        f"{p['steps']:.0e} steps: table {human_bytes(p['table_nbytes'])}, tracemalloc peak "
        f"{human_bytes(p['tracemalloc_peak'])}, RSS peak growth {human_bytes(p['rss_peak_growth'])}"
        for p in memory["table_probes"]
    )
    return (
        "# Scheduler overhead\n\n"
        f"Command: `{machine['command']}`  \n"
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable core(s) of {machine['cpu_count']}, "
        f"load {machine['load_average_1_5_15min']} at start (shared; timings are noisy: medians and ratios only)  \n"
        f"Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
        + f"; commit {machine['git_commit']}; {machine['timestamp_utc']}\n\n"
        "## Time per `scheduler.step()`\n\n"
        f"Warm-up + cosine to 0, W = {cfg['warmup']:,}, T = {cfg['total']:,}. {cfg['rounds']} interleaved rounds; "
        f"in each, every contender runs {cfg['block']:,} consecutive steps (order shuffled per round, GC off), "
        "continuing one scheduler per contender along the curve. Ratios > 1: the peer is slower than lrsched.\n\n"
        + timing
        + f"\nAgreement check (relative {REL_TOL:g}, absolute floor {ABS_TOL:g}) at every block end: "
        f"passed ({agree}).\n\n"
        "## Memory of a 10^9-step plan\n\n"
        f"Peak {memory['base']:g}, floor {memory['final']:g}, warm-up {memory['warmup']:,}; "
        f"pickle protocol {memory['pickle_protocol']}.\n\n"
        + markdown_table(["what", *(f"{plan} plan, bytes" for plan in PLANS)], mem_rows, "lrr")
        + f"\nTable method: {memory['table_method']}. Probes: {probes}.\n"
    )


def render_figure(report: dict[str, Any], path: Path) -> None:
    """Top: one bar chart of median µs/step per cell, whiskers at the IQR. Bottom: memory, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = report["timing"]
    fig = plt.figure(figsize=(13, 10.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 0.8])
    for ax, cell in zip(top.subplots(1, len(cells)), cells):
        names = list(cell["contenders"])
        stats = [cell["contenders"][n] for n in names]
        medians_us = [s["median_ns_per_step"] / 1000 for s in stats]
        low = [(s["median_ns_per_step"] - s["q1_ns_per_step"]) / 1000 for s in stats]
        high = [(s["q3_ns_per_step"] - s["median_ns_per_step"]) / 1000 for s in stats]
        bars = ax.bar(
            [SHORT_LABELS[n] for n in names], medians_us, yerr=[low, high], capsize=8, color=[COLOURS[n] for n in names]
        )
        for bar, name, s in zip(bars, names, stats):
            ax.annotate(
                f"{s['median_ns_per_step'] / 1000:.1f} µs\n×{s['ratio_of_medians_vs_lrsched']:.2f}"
                + (f"\npaired ×{s['paired_ratio_vs_lrsched']['median']:.2f}" if name != "lrsched" else ""),
                (bar.get_x() + bar.get_width() / 2, s["q3_ns_per_step"] / 1000),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=11,
            )
        ax.set_ylim(0, max(s["q3_ns_per_step"] for s in stats) / 1000 * 1.4)
        plural = "s" if cell["groups"] > 1 else ""
        ax.set_title(f"scheduler.step(), {cell['groups']} param group{plural}\n({cell['rounds']} rounds)")
        ax.set_ylabel("µs per step: median, whiskers q1–q3")
        ax.grid(axis="y", alpha=0.3)
    ax = bottom.subplots()
    finite = [r for r in report["memory"]["rows"] if r["finite"] is not None]
    values = [r["finite"] for r in finite]
    colours = ["#d62728" if "table" in r["what"] else COLOURS["lrsched"] for r in finite]
    ax.barh(range(len(values)), values, color=colours)
    for i, v in enumerate(values):
        ax.annotate(human_bytes(v), (v, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=10)
    ax.set_yticks(range(len(values)), [r["what"] for r in finite], fontsize=9)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(10, max(values) * 30)
    ax.set_xlabel("bytes (log scale)")
    ax.set_title("Memory of a finite 10^9-step plan (open-ended: the same sizes, see overhead.md)")
    ax.grid(axis="x", alpha=0.3)
    machine = report["machine"]
    fig.suptitle(
        f"lrsched vs peers: ×n = median / lrsched's median; paired = median of per-round ratios. "
        f"{machine['cpu_model']}, "
        f"{machine['usable_cores']} shared cores, torch {machine['packages']['torch']}",
        fontsize=12,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run for a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default: bench/results)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per cell (default 101, quick 7)")
    parser.add_argument("--block", type=int, help="steps per block (default 1000, quick 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round order")
    parser.add_argument("--no-cache", action="store_true", help="ignore and do not write <out>/cache/overhead.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config(
        rounds=args.rounds or (7 if args.quick else 101),
        block=args.block or (200 if args.quick else 1000),
        groups=(1, 100),
        seed=args.seed,
    )
    if cfg.rounds < 1 or cfg.block < 1 or cfg.warmup < 1:
        print(f"--rounds {cfg.rounds} x --block {cfg.block}: need at least 10 steps in all", file=sys.stderr)
        return 2
    machine = machine_info()
    cache_config = {**asdict(cfg), "quick": args.quick, "torch": machine["packages"]["torch"]}
    cache = CellCache(
        SCRIPT,
        cache_config,
        args.out / "cache",
        code=[Path(__file__), BENCH_DIR / "_common.py"],
        enabled=not args.no_cache,
    )
    print(f"overhead: {cfg.rounds} rounds x {cfg.block} steps, T={cfg.total}, W={cfg.warmup}, groups {cfg.groups}")

    timing = []
    for groups in cfg.groups:
        try:
            cell = cache.compute(f"timing/groups={groups}", functools.partial(timing_cell, groups, cfg))
        except AgreementError as error:
            print(f"FAIL: the contenders disagree: {error}", file=sys.stderr)
            return 1
        timing.append(cell)
        agreement = cell["agreement"]
        print(
            f"agreement: lrsched, hf and torch give the same LR (rel {REL_TOL:g}) at all "
            f"{len(agreement['checked_steps'])} block ends up to T={cfg.total} with {groups} group(s); "
            f"worst relative gap {agreement['worst_rel_gap']:.1e}"
        )
        for name, c in cell["contenders"].items():
            print(
                f"  {groups:>3} group(s) {name:<8} median {c['median_ns_per_step']:>9,.0f} ns/step  "
                f"IQR {c['iqr_ns_per_step']:>8,.0f}  x{c['ratio_of_medians_vs_lrsched']:.2f} vs lrsched"
            )
    memory = cache.compute("memory", memory_cell)
    for row in memory["rows"]:
        sizes = "  ".join(f"{plan} {human_bytes(row[plan]) if row[plan] is not None else '—':>8}" for plan in PLANS)
        print(f"  memory {row['what']:<90} {sizes}")

    report = {"machine": machine, "config": {**asdict(cfg), "total": cfg.total, "warmup": cfg.warmup}}
    report |= {"timing": timing, "memory": memory}
    out: Path = args.out
    written = [
        write_json(out / f"{SCRIPT}.json", report),
        write_text(out / f"{SCRIPT}.md", render_markdown(report)),
    ]
    render_figure(report, out / f"{SCRIPT}.png")
    written.append(out / f"{SCRIPT}.png")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
