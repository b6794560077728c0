"""train.py's command line: its learning-rate flags (``plan.py``) plus data, model, loop, output.

Every flag has both spellings (``--max_train_samples`` and ``--max-train-samples``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from lrsched.flags import (
    ArgumentParser,
    add_flag,
    add_schedule_flags,
    nonnegative_float,
    nonnegative_int,
    positive_int,
)
from lrsched.recipes.common.device import add_device_flags
from lrsched.recipes.finetune import plan
from lrsched.recipes.finetune.metrics import BEST_METRICS, DEFAULT_BEST_METRIC

SEED_LIMIT = 2**32
"""Seeds are below 2**32: the streams derived from them (``seed * 1000 + rank``, ...) must fit torch's 64-bit seeds."""

PROG = "train.py"
"""The program's name in its messages and --help."""
PROGRAM_ID = "train.py"
"""What run.json, run.lock and every checkpoint record as the program: a folder or checkpoint of
another program is refused (the spelling older versions wrote, so their runs still resume)."""
DESCRIPTION = (
    "Fine-tune a pretrained transformer (default: all-MiniLM-L6-v2) for text classification "
    "(default: 3-class tweet sentiment) with the run-length LR strategy of lrsched. "
    "The resolved plan is printed before training; see docs/train.md."
)
RESUME_FLAG, OUTPUT_FLAG, OVERWRITE_FLAG = "--resume_from_checkpoint", "--output_dir", "--overwrite_output_dir"


def seed_value(text: str) -> int:
    """An integer in [0, 2**32)."""
    value = nonnegative_int(text)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{text}: must be below 2**32 ({SEED_LIMIT})")
    return value


def _data_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    add_flag(g, "train_file", type=Path, metavar="FILE", help="CSV or JSONL training data (default: the tweet corpus)")
    add_flag(
        g,
        "validation_file",
        type=Path,
        metavar="FILE",
        help="CSV or JSONL validation data (default with --train_file: 10%% of it, by label)",
    )
    add_flag(g, "test_file", type=Path, metavar="FILE", help="CSV or JSONL test data (default: none with --train_file)")
    add_flag(g, "text_column", default="text", metavar="NAME", help="text column of the files (default text)")
    add_flag(g, "label_column", default="label", metavar="NAME", help="label column of the files (default label)")
    add_flag(
        g,
        "max_train_samples",
        type=positive_int,
        metavar="N",
        help="train on a stratified, seeded subset (default: all)",
    )
    add_flag(
        g,
        "max_eval_samples",
        type=positive_int,
        metavar="N",
        help="validate on a stratified, seeded subset (default: all)",
    )
    add_flag(
        g, "max_test_samples", type=positive_int, metavar="N", help="test on a stratified subset (default: as eval)"
    )
    add_flag(g, "max_seq_length", type=positive_int, default=128, metavar="L", help="truncate texts (default 128)")
    add_flag(
        g,
        "no_group_by_length",
        action="store_true",
        help="batches from a plain seeded permutation; by default each epoch's order groups texts of similar "
        "length into a batch (sorted within seeded mega-batches of up to 50 batches, then the batches shuffled), "
        "so a batch carries less padding",
    )


def _loop_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model and loop")
    add_flag(g, "model", type=Path, metavar="DIR", help="local Hugging Face model directory (default: MiniLM-L6)")
    add_flag(g, "per_device_train_batch_size", type=positive_int, default=32, metavar="N", help="default 32")
    add_flag(g, "per_device_eval_batch_size", type=positive_int, default=64, metavar="N", help="default 64")
    add_flag(
        g,
        "gradient_accumulation_steps",
        type=positive_int,
        default=1,
        metavar="A",
        help="batches per optimizer update; the schedule counts updates (default 1)",
    )
    add_flag(g, "weight_decay", type=nonnegative_float, default=0.01, metavar="WD", help="AdamW (default 0.01)")
    add_flag(g, "max_grad_norm", type=nonnegative_float, default=1.0, metavar="N", help="clip, 0 = off (default 1.0)")
    add_flag(g, "seed", type=seed_value, default=42, metavar="S", help="head init, dropout, data order (default 42)")
    add_device_flags(g)


def _output_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output")
    add_flag(g, "output_dir", type=Path, metavar="DIR", help="default runs/train-<timestamp>")
    add_flag(g, "overwrite_output_dir", action="store_true", help="replace a finished or stopped run in --output_dir")
    add_flag(
        g,
        "save_strategy",
        choices=("epoch", "no"),
        default="epoch",
        help="epoch: a resumable checkpoint at each epoch end (and every --save_steps); no: none, so a stop "
        "cannot be resumed (best/ and last/ are still written; default epoch)",
    )
    add_flag(
        g,
        "save_steps",
        type=positive_int,
        metavar="N",
        help="also checkpoint every N updates, mid-epoch (default: at epoch ends only)",
    )
    add_flag(
        g, "save_total_limit", type=positive_int, default=2, metavar="K", help="keep K step checkpoints (default 2)"
    )
    add_flag(
        g,
        "resume_from_checkpoint",
        metavar="PATH|latest",
        help="continue a run: same plan, LRs, data order and weights (latest: newest in --output_dir; "
        "default: a new run)",
    )
    add_flag(
        g,
        "replan",
        action="store_true",
        help="with --resume_from_checkpoint, accept a new plan (e.g. more --num_epochs): the LR continues from "
        "the checkpoint's without a jump (a finished run re-warms to the peak over --warmup_steps)",
    )
    add_flag(g, "disable_tqdm", action="store_true", help="no progress bar")
    _best_model_flags(parser)


def _best_model_flags(parser: argparse.ArgumentParser) -> None:
    """Which validation's model best/ keeps (and the test evaluates), as HF Trainer's flags of these names."""
    g = parser.add_argument_group("best model")
    add_flag(
        g,
        "metric_for_best_model",
        choices=BEST_METRICS,
        default=DEFAULT_BEST_METRIC,
        help=f"validation metric that picks best/ (default {DEFAULT_BEST_METRIC}); ties go to the lower "
        "validation loss (to the higher accuracy for loss), then to the later validation",
    )
    add_flag(
        g,
        "greater_is_better",
        type=yes_no,
        metavar="true|false",
        help="whether a larger metric is better (default: true, false for loss)",
    )


def yes_no(text: str) -> bool:
    """``true``/``false`` (also yes/no, 1/0), as HF's boolean flags."""
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"{text}: must be true or false")
    return value


def build_parser() -> ArgumentParser:
    """The full train.py parser."""
    parser = ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_schedule_flags(
        parser, plan.SCHEDULE_FLAGS, title="learning-rate strategy (see lrsched show)", help=plan.SCHEDULE_HELP
    )
    _data_flags(parser)
    _loop_flags(parser)
    _output_flags(parser)
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.save_strategy == "no" and args.save_steps is not None:
        parser.error(f"--save_steps {args.save_steps}: needs --save_strategy epoch (no writes no checkpoints)")
    return args
