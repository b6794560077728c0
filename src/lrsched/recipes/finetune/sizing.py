"""What ``lrsched show`` needs from train.py to size a plan from its data: its training examples.

Importing this module registers ``train_examples`` with ``lrsched.programs`` (which imports it by
name, ``programs.COUNTER_MODULES``, only when a plan is sized from data), so the library holds no
import of this recipe. Reads the data as train.py does, without torch.
"""

from __future__ import annotations

import argparse

from lrsched import programs
from lrsched.recipes.finetune import data


def train_examples(ns: argparse.Namespace) -> int:
    """The examples of train.py's training split for the data flags in ``ns`` (train.py's defaults for the rest)."""
    flags = data.DataFlags(
        train_file=ns.train_file,
        validation_file=ns.validation_file,
        test_file=None,
        text_column=str(programs.train_flag(ns, "text_column")),
        label_column=str(programs.train_flag(ns, "label_column")),
        max_train_samples=ns.max_train_samples,
        max_eval_samples=None,
        max_test_samples=None,
        seed=0,
    )
    return len(data.load_splits(flags).train)


programs.register_example_counter(programs.TRAIN, train_examples)
