"""The environment every test gives a child program: one thread, src/ importable, offline, no test hook."""

from __future__ import annotations

import os
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def child_env(**extra: str) -> dict[str, str]:
    """os.environ without LRSCHED_* hooks, on one torch thread, plus ``extra`` (hooks given on purpose)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRSCHED_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1")
    env.update(extra)
    return env
