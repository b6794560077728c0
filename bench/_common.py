"""What every benchmark in ``bench/`` shares: where results go, what ran them, atomic writes, markdown
tables, medians with their spread, paired verdicts and a cache of finished cells (stdlib only at import).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
T = TypeVar("T")


def machine_info(packages: Sequence[str] = ("torch", "transformers", "numpy")) -> dict[str, Any]:
    """The machine, the software and the command behind a result, JSON-able."""
    git = ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty=+dirty", "--abbrev=40"]
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return {
        "cpu_model": cpu[0] if cpu else platform.machine(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in packages},
        "git_commit": subprocess.run(git, capture_output=True, text=True).stdout.strip() or None,
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(info: dict[str, Any]) -> str:
    """One line for a results page: machine, versions, commit and the command."""
    versions = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    return (
        f"Machine: {info['cpu_model']}, {info['usable_cores']} cores (shared), load {info['load_average_1_5_15min']}; "
        f"{versions}; commit {info['git_commit']}. Command: `{info['command']}`."
    )


def write_text(path: Path, text: str) -> Path:
    """``text`` into ``path`` atomically (``lrsched``'s one atomic writer), creating its folder."""
    from lrsched.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, encoding="utf-8") as handle:
        handle.write(text)
    return path


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2) + "\n")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A markdown table; ``align`` has one of ``l``/``r`` per column (default all left)."""
    rule = {"l": ":---", "r": "---:"}
    lines = [headers, [rule[a] for a in align or "l" * len(headers)], *rows]
    return "".join("| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |\n" for line in lines)


def quantiles(sample: Sequence[float]) -> dict[str, float]:
    """``median``, ``q1`` and ``q3`` of ``sample`` (inclusive method, as numpy's default)."""
    if len(sample) < 2:
        return dict.fromkeys(("median", "q1", "q3"), float(sample[0]))
    q1, median, q3 = statistics.quantiles(sample, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3}


def spread(q: dict[str, float], fmt: str = ".1f") -> str:
    """``"49.0 (45.8 - 58.6)"``: a median and its interquartile range, from ``quantiles``."""
    return f"{q['median']:{fmt}} ({q['q1']:{fmt}} - {q['q3']:{fmt}})"


def mean_sd(xs: Sequence[float], digits: int = 3) -> str:
    """``"0.581 ± 0.022"`` (one value: itself; none: a dash)."""
    if len(xs) < 2:
        return f"{xs[0]:.{digits}f}" if xs else "—"
    return f"{statistics.fmean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Student's t, 97.5% quantile, by degrees of freedom."""


def paired_verdict(diffs: Sequence[float], who: str) -> str:
    """``"+0.012 [-0.010, +0.034] tie"``: the mean of paired differences, its 95% t-interval, and a
    verdict (``who`` better or worse) only where the interval excludes 0."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return f"{mean:+.3f} (one seed: no interval)"
    half = T_975[len(diffs) - 1] * statistics.stdev(diffs) / math.sqrt(len(diffs))
    verdict = f"{who} better" if mean - half > 0 else f"{who} worse" if mean + half < 0 else "tie"
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}] {verdict}"


class CellCache:
    """Finished cells of a benchmark in ``<root>/<name>.json``, so a rerun skips them.

    The file records ``config`` and a digest of the ``code`` files: when either differs, the
    old cells are ignored and overwritten. Values must be JSON-able.
    """

    def __init__(self, name: str, config: dict[str, Any], root: Path, code: Sequence[Path] = ()) -> None:
        self.path = root / f"{name}.json"
        digest = hashlib.sha256(b"".join(Path(p).read_bytes() for p in code)).hexdigest()[:16]
        self.config = json.loads(json.dumps({**config, "code_sha256": digest}))  # as it reads back
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.cells: dict[str, Any] = saved.get("cells", {}) if saved.get("config") == self.config else {}

    def compute(self, cell: str, run: Callable[[], T]) -> T:
        """``cell``'s cached value, or ``run()``'s, saved before it is returned."""
        if cell not in self.cells:
            self.cells[cell] = run()
            write_json(self.path, {"config": self.config, "cells": self.cells})
        return self.cells[cell]  # type: ignore[no-any-return]
