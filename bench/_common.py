"""Shared helpers for the benchmark scripts in ``bench/``.

- ``machine_info``: what ran the benchmark (CPU, cores, load, versions, git commit,
  command line, timestamp), to store beside every result;
- ``write_json`` / ``write_text``: atomic writes (temporary file, then ``os.replace``);
- ``markdown_table``: a GitHub-flavoured markdown table from rows of cells;
- ``CellCache``: finished cells of a run, cached on disk under
  ``<results>/cache/<script>.json`` so an interrupted run resumes where it stopped.
  The cache is tied to a configuration: a run with other settings starts afresh.
- ``quantiles``: median and interquartile range of a sample;
- ``process_tree_cpu_seconds``: CPU time of this process and its live descendants (Linux),
  for work spread over worker processes;
- ``pressure_stall_seconds``: the kernel's pressure-stall totals (Linux PSI), to tell a
  measurement disturbed by other jobs.

Standard library only, so any benchmark can import it before its own heavy imports.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

T = TypeVar("T")


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or ``None`` when absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """``HEAD``'s commit hash, with ``+dirty`` when tracked files differ; ``None`` outside git."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=30)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def command_line() -> str:
    """The command that started this process, quoted so that it can be pasted into a shell."""
    return shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))


def machine_info(packages: Sequence[str] = ("torch", "transformers", "numpy")) -> dict[str, Any]:
    """A description of the machine and software running the benchmark, JSON-able."""
    try:
        usable_cores: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = None
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores,
        "load_average_1_5_15min": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: package_version(name) for name in packages},
        "git_commit": git_commit(),
        "command": command_line(),
        "cwd": os.getcwd(),
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (creating its folder); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would outlive the rename
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically; returns ``path``."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A markdown table; ``align`` holds one of ``l``, ``r``, ``c`` per column (default: left)."""
    align = align or "l" * len(headers)
    if len(align) != len(headers) or any(len(row) != len(headers) for row in rows):
        raise ValueError("every row and the alignment need one entry per header")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join(rule[a] for a in align) + " |",
    ]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def quantiles(sample: Sequence[float]) -> dict[str, float]:
    """``median``, ``q1``, ``q3`` and ``iqr`` of ``sample`` (inclusive method, as numpy's default)."""
    if len(sample) < 2:
        only = float(sample[0])
        return {"median": only, "q1": only, "q3": only, "iqr": 0.0}
    q1, median, q3 = statistics.quantiles(sample, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3, "iqr": q3 - q1}


class CellCache:
    """Results of finished cells, kept in ``<root>/<script>.json`` so a rerun skips them.

    The file also records ``config`` and a digest of the ``code`` files (the benchmark
    script and its helpers); when either differs (other sizes, ``--quick``, an edited
    script), the old cells are ignored and overwritten. Values must be JSON-able.
    """

    def __init__(
        self,
        script: str,
        config: Mapping[str, Any],
        root: Path,
        *,
        code: Sequence[Path] = (),
        enabled: bool = True,
    ) -> None:
        self.path = root / f"{script}.json"
        digest = hashlib.sha256(b"".join(Path(p).read_bytes() for p in code)).hexdigest()[:16]
        self.config = json.loads(json.dumps({**config, "code_sha256": digest}))  # as it will read back
        self.enabled = enabled
        self.cells: dict[str, Any] = {}
        if enabled and self.path.exists():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = None
            if isinstance(saved, dict) and saved.get("config") == self.config:
                self.cells = dict(saved.get("cells", {}))

    def get(self, cell: str) -> Any | None:
        """The cached value of ``cell``, or ``None``."""
        return self.cells.get(cell)

    def put(self, cell: str, value: Any) -> None:
        """Record ``cell``'s value and save the cache at once."""
        self.cells[cell] = value
        if self.enabled:
            write_json(self.path, {"config": self.config, "cells": self.cells})

    def compute(self, cell: str, run: Callable[[], T], log: Callable[[str], None] = print) -> T:
        """``cell``'s cached value, or ``run()``'s result, cached before it is returned."""
        if cell in self.cells:
            log(f"[cache] {cell}: reusing the result in {self.path}")
            return self.cells[cell]  # type: ignore[no-any-return]
        value = run()
        self.put(cell, value)
        return value


def _tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants, from ``/proc/<pid>/task/*/children``."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the task or its children ended meanwhile
                todo += [int(child) for child in task.read_text().split()]
    return found


def process_tree_cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds of ``pid`` (default: this process) and its live descendants.

    Read from ``/proc`` (clock ticks, 10 ms here); descendants that have exited are not
    counted, so take both readings while worker processes live. ``None`` off Linux.
    """
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    try:
        pids = _tree_pids(os.getpid() if pid is None else pid)
    except OSError:
        return None
    if not Path(f"/proc/{pids[0]}/stat").exists():
        return None
    for current in pids:
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def pressure_stall_seconds() -> dict[str, float]:
    """Seconds since boot during which some task stalled on ``cpu``, ``memory`` and ``io`` (Linux PSI)."""
    out = {}
    for resource in ("cpu", "memory", "io"):
        try:
            line = Path(f"/proc/pressure/{resource}").read_text().splitlines()[0]
        except (OSError, IndexError):
            continue
        total = dict(item.split("=") for item in line.split()[1:]).get("total")
        if total is not None:
            out[resource] = int(total) / 1e6
    return out
