#!/usr/bin/env python3
"""DINO-X pretraining: warm-up + cosine, or warm-up + constant without --max-steps.

A thin entry point: the program lives in ``lrsched.recipes.dino`` (``main``). Run
``python phase5_big_run.py --help`` for the flags, or under ``torchrun`` for several processes.
"""

import sys
from pathlib import Path

try:
    import lrsched  # noqa: F401
except ImportError:  # a plain checkout: make src/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from lrsched.recipes.dino.main import main

if __name__ == "__main__":
    raise SystemExit(main())
