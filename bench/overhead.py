"""Overhead of ``ScheduledLR`` against its peers: time per ``scheduler.step()``, and state size.

Usage: ``python bench/overhead.py [--rounds N]``. One warm-up + cosine plan (W = T/10, T = 200,000)
as lrsched's ``ScheduledLR``, HF's ``get_cosine_schedule_with_warmup`` and torch's
``SequentialLR(LinearLR, CosineAnnealingLR)``, with 1 and 100 param groups (group i at
``BASE (1 + i/groups)``). Each round times every contender once with ``torch.utils.benchmark``'s
``blocked_autorange``, in a shuffled order; reported: the median ns per step and the median of the
per-round ratios peer / lrsched (the tests check that all three give the same LRs). The state at
step 10^9 is weighed against a table of every step's value (DINOv2's way): 8 bytes x 10^9 = 8 GB.
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import sys
import warnings

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torch.utils.benchmark import Timer
from transformers import get_cosine_schedule_with_warmup

# isort: split
from _common import RESULTS_DIR, machine_info, markdown_table, provenance, write_json, write_text

from lrsched.schedules import Schedule
from lrsched.torch_sched import ScheduledLR

BASE, T = 5e-4, 200_000
W = T // 10
NAMES = {
    "lrsched": "lrsched ScheduledLR(Schedule('cosine'))",
    "hf": "HF get_cosine_schedule_with_warmup (LambdaLR)",
    "torch": "torch SequentialLR(LinearLR, CosineAnnealingLR)",
}


def optimizer(groups: int) -> torch.optim.Optimizer:
    params = [{"params": [torch.zeros(1, requires_grad=True)], "lr": BASE * (1 + i / groups)} for i in range(groups)]
    return torch.optim.SGD(params, lr=BASE)


def scheduler(name: str, groups: int, total: int = T) -> LRScheduler:
    opt, warm = optimizer(groups), total // 10
    if name == "lrsched":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no group at the schedule's base: on purpose, groups keep ratios
            sched: LRScheduler = ScheduledLR(opt, Schedule("cosine", base=BASE, final=0.0, warmup=warm, total=total))
    elif name == "hf":
        sched = get_cosine_schedule_with_warmup(opt, warm, total)
    else:
        linear = LinearLR(opt, start_factor=1e-12, total_iters=warm)  # torch's LinearLR cannot start at 0
        sched = SequentialLR(opt, [linear, CosineAnnealingLR(opt, T_max=total - warm)], milestones=[warm])
    opt.step()  # no gradients: changes nothing, and torch does not warn about the order of step() calls
    return sched


def timing(groups: int, rounds: int) -> dict[str, dict[str, float]]:
    """Median ns per step of each contender, and the median per-round ratio against lrsched."""
    timers = {n: Timer("sched.step()", globals={"sched": scheduler(n, groups)}) for n in NAMES}
    per_round: dict[str, list[float]] = {n: [] for n in NAMES}
    for _ in range(rounds):
        for name in random.sample(list(NAMES), len(NAMES)):
            per_round[name].append(timers[name].blocked_autorange(min_run_time=0.05).median * 1e9)
    ratio = {n: statistics.median(a / b for a, b in zip(v, per_round["lrsched"])) for n, v in per_round.items()}
    return {n: {"median_ns": statistics.median(v), "ratio": ratio[n]} for n, v in per_round.items()}


def state_bytes() -> dict[str, int]:
    """Pickled size of the plan and of the scheduler's state at step 10^9, open-ended and finite."""
    out = {}
    for label, total in (("open-ended", None), ("finite", 2 * 10**9)):
        plan = Schedule("cosine", base=BASE, final=1e-6, warmup=2500, total=total)
        sched = ScheduledLR(optimizer(1), plan)
        sched.last_epoch = 10**9
        out[f"{label} Schedule"] = len(pickle.dumps(plan, protocol=5))
        out[f"{label} state_dict"] = len(pickle.dumps(sched.state_dict(), protocol=5))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=51, help="interleaved rounds per group count (default 51)")
    opts = parser.parse_args(argv)
    torch.set_num_threads(1)
    timed = {g: timing(g, opts.rounds) for g in (1, 100)}
    sizes = state_bytes()
    rows = [[NAMES[n], g, f"{r['median_ns']:,.0f}", f"{r['ratio']:.2f}"] for g in timed for n, r in timed[g].items()]
    info = machine_info(("torch", "transformers"))
    text = [
        "# Scheduler overhead",
        "",
        f"Warm-up + cosine to 0, W = {W:,}, T = {T:,}; {opts.rounds} rounds, contenders shuffled per round, each "
        "timed by torch.utils.benchmark's blocked_autorange. Ratio: peer / lrsched, median of the per-round ratios.",
        "",
        markdown_table(["contender", "groups", "median ns/step", "ratio vs lrsched"], rows, "lrrr"),
        "All three give the same LR in every group at every step (tests/test_schedules.py and "
        "tests/test_torch_sched.py hold the peers as oracles).",
        "",
        "State at step 10^9 (pickled bytes): "
        + ", ".join(f"{k} {v}" for k, v in sizes.items())
        + "; a precomputed table of every step's value (DINOv2's way) is 8 bytes x 10^9 = 8 GB.",
        "",
        provenance(info),
        "",
    ]
    write_text(RESULTS_DIR / "overhead.md", "\n".join(text))
    write_json(RESULTS_DIR / "overhead.json", {"machine": info, "timing": timed, "bytes": sizes})
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
