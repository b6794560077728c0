"""Run logs: a CSV row per step (flushed, so a killed run keeps its log), JSON files, TensorBoard.

TensorBoard events are written too when the ``tensorboard`` package is installed.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class RunLog:
    """Appends rows to ``log.csv`` (and TensorBoard scalars when available)."""

    def __init__(self, output_dir: Path, columns: Sequence[str], *, resume_step: int | None = None) -> None:
        self.path = output_dir / "log.csv"
        self.columns = list(columns)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        new = not self.path.exists()
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        if new:
            self._writer.writeheader()
        self._tb = _tensorboard(output_dir)

    def _truncate_after(self, step: int) -> None:
        """Keep the rows of steps before ``step``: a resumed run writes the rest again."""
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) < step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")  # a kill here keeps the old log whole
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

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
