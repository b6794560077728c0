"""Helpers for the DINO tests: small real runs on Fashion-MNIST."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ENTRY = REPO / "phase5_big_run.py"
FASHION = Path("/usr/share/datasets/fashion-mnist")

SMALL = [
    "--preset",
    "micro",
    "--batch-size",
    "16",
    "--local-crops",
    "2",
    "--knn-train-samples",
    "600",
    "--knn-test-samples",
    "200",
    "--eval-every",
    "0",
]
"""A run small enough for a test: a 2-block, 48-wide ViT, 16 images a step, 2 local crops."""


needs_data = pytest.mark.skipif(
    not FASHION.is_dir(), reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist"
)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


PYTHON = sys.executable
