"""Run logs: a CSV row per step (flushed, so a killed run keeps its log), JSON files, TensorBoard,
and ``say``: a line for the person watching.

TensorBoard events are written too when the ``tensorboard`` package is installed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrsched.atomic import atomic_write
from lrsched.recipes.common.distributed import World


def say(world: World, text: str) -> None:
    """A line for the person watching (rank 0), printed above the progress bar (which is redrawn under it)."""
    if world.is_main:
        from tqdm import tqdm

        tqdm.write(text)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        f.write(json.dumps(data, indent=2, default=str) + "\n")


class RunLog:
    """Appends rows to ``log.csv`` (and TensorBoard scalars when available)."""

    def __init__(
        self, output_dir: Path, columns: Sequence[str], *, resume_step: int | None = None, history: Path | None = None
    ) -> None:
        """``resume_step``: the log keeps the rows of the steps before it, taken from ``history`` (the log
        of the checkpoint's own past, ``checkpoint.history_log``; by default this log)."""
        self.path = output_dir / "log.csv"
        self.columns = list(columns)
        source = history or self.path
        if resume_step is not None and source.exists():
            self._truncate_after(resume_step, source)
        new = not self.path.exists()
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        if new:
            self._writer.writeheader()
        self._tb = _tensorboard(output_dir)

    def _truncate_after(self, step: int, source: Path) -> None:
        """The rows of ``source`` for the steps before ``step``: a resumed run writes the rest again."""
        with source.open(newline="") as old, atomic_write(self.path, newline="") as new:  # a kill keeps the old log
            writer = csv.DictWriter(new, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(r for r in csv.DictReader(old) if r.get("step", "").isdigit() and int(r["step"]) < step)

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow(row)
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, int(row["step"]))

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _tensorboard(output_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(output_dir / "tb"))


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_log_thinned(path: Path, max_rows: int = 20_000) -> list[dict[str, str]]:
    """Rows ``0, k, 2k, ...`` of the log and its last row, at most ``max_rows + 1``, read as a stream.

    ``k`` is the smallest power of two that fits: a log of any length costs the same memory.
    """
    kept: list[dict[str, str]] = []
    stride, last = 1, None
    with path.open(newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            last = row
            if i % stride == 0:
                kept.append(row)
                if len(kept) > max_rows:
                    kept, stride = kept[::2], stride * 2
    if last is not None and (not kept or kept[-1] is not last):
        kept.append(last)
    return kept
