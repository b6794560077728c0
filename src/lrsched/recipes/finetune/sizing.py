"""train.py's training examples for ``lrsched show``, counted from its data flags as train.py counts them.

Imported by ``plan.py`` only when a plan is sized from data; reads the data without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lrsched.recipes.finetune import data


def train_examples(size: Mapping[str, Any]) -> int:
    """The examples of train.py's training split for the data flags in ``size`` (``plan.RUN_SIZE``, with
    train.py's defaults filled in; a file flag absent means train.py's own corpus)."""
    flags = data.DataFlags(
        train_file=size.get("train_file"),
        validation_file=size.get("validation_file"),
        test_file=None,
        text_column=str(size["text_column"]),
        label_column=str(size["label_column"]),
        max_train_samples=size.get("max_train_samples"),
        max_eval_samples=None,
        max_test_samples=None,
        seed=0,
    )
    return len(data.load_splits(flags).train)
