"""phase5's command line: its learning-rate flags (``plan.py``) plus DINO's schedules, model, data, run.

Every flag has both spellings (``--weight-decay`` and ``--weight_decay``). ``DEFAULTS`` is the one
table of DINO's schedule defaults; ``validate.resolve_schedules`` is the one function that applies it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lrsched import flags as shared
from lrsched.recipes.common.device import add_device_flags
from lrsched.recipes.dino import plan
from lrsched.recipes.dino.augment import GLOBAL_SCALE, LOCAL_SCALE
from lrsched.recipes.dino.stream import default_workers
from lrsched.recipes.dino.vit import PRESETS

MAX_DATA_TIMEOUT = 86_400
"""``--data-timeout`` at most one day: a longer wait is no deadline (0 says so)."""
DATA_TIMEOUT = shared.Checked(shared.number, 0, MAX_DATA_TIMEOUT, high_closed=True)

PROG = "phase5_big_run.py"
"""The program's name in its messages and --help."""
PROGRAM_ID = "phase5_big_run"
"""What run.json, run.lock and every checkpoint record as the program: a folder or checkpoint of
another program is refused (the spelling older versions wrote, so their runs still resume)."""
LR_WARMUP = "--warmup-steps"
"""A default that is the LR warm-up (``--warmup-steps``, or lrsched's default for it)."""
DEFAULTS: dict[str, float | str] = {
    "weight_decay": 0.04,
    "weight_decay_end": 0.4,
    "momentum_teacher": 0.996,
    "teacher_temp": 0.07,
    "warmup_teacher_temp": 0.04,
    "warmup_teacher_temp_steps": LR_WARMUP,
    "freeze_last_layer_steps": LR_WARMUP,
}
"""DINO's schedule flags left unset: a number, or ``LR_WARMUP`` for the steps that follow the LR warm-up."""


def spelling(name: str) -> str:
    """The flag as the messages spell it: ``weight_decay`` -> ``--weight-decay``."""
    return shared.spellings(name)[0]


def default_text(name: str) -> str:
    """``DEFAULTS[name]`` as the help says it: ``default 0.04`` or ``default: --warmup-steps``."""
    value = DEFAULTS[name]
    return f"default: {value}" if value == LR_WARMUP else f"default {value:g}"


def flag_strings(args: argparse.Namespace) -> dict[str, str]:
    """The flags as a dict of strings (what a ``weights_only`` checkpoint can hold)."""
    return {k: ("" if v is None else str(v)) for k, v in sorted(vars(args).items())}


_probability = shared.Checked(shared.number, 0, 1)
_unit_interval = shared.Checked(shared.number, 0, 1, low_open=True, high_closed=True)


RECIPES: dict[str, tuple[str, ...]] = {
    "cpu-demo": (
        *("--preset", "micro", "--max-steps", "6000", "--warmup-steps", "500", "--batch-size", "48"),
        *("--local-crops", "2", "--lr", "2e-3", "--out-dim", "512", "--warmup-teacher-temp", "0.04"),
        *("--teacher-temp", "0.04", "--momentum-teacher", "0.99", "--koleo-weight", "0.1", "--decay-ratio", "0.2"),
        *("--eval-every", "1000", "--save-every", "1000", "--workers", "0"),
    ),
}
"""Named recipes (``--recipe``): flags read as if typed before the command line, so a flag typed
there wins. ``cpu-demo``: the 10-minute CPU recipe of ``make demo-dino`` (docs/phase5.md)."""


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags (argparse's own errors exit 2); with ``--recipe``, its flags first, then ``argv``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.recipe is None:
        return args
    typed = list(sys.argv[1:] if argv is None else argv)
    return parser.parse_args([*RECIPES[args.recipe], *typed])


def build_parser() -> shared.ArgumentParser:
    """Every flag of the program, with help; schedule flags come from lrsched's one table."""
    p = shared.ArgumentParser(
        prog=PROG,
        description="DINO self-supervised ViT pretraining: linear warm-up + cosine decay, "
        "or warm-up + constant for open-ended runs (no --max-steps).",
    )
    plan.add_schedule_flags(p, title="learning-rate schedule")
    for add_group in (_dino_flags, _optimisation_flags, _model_flags, _data_flags, _eval_flags, _run_flags):
        add_group(p)
    return p


def _dino_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DINO schedules (cosine to the end value over --max-steps; held when open-ended)")
    add = shared.add_flag
    add(g, "weight_decay", type=shared.positive_float, help=f"weight decay at step 0 ({default_text('weight_decay')})")
    add(
        g,
        "weight_decay_end",
        type=shared.nonnegative_float,
        help=f"weight decay at --max-steps ({default_text('weight_decay_end')})",
    )
    add(
        g,
        "momentum_teacher",
        type=_unit_interval,
        help=f"teacher EMA momentum at step 0, rising to 1 ({default_text('momentum_teacher')})",
    )
    add(
        g,
        "teacher_temp",
        type=shared.positive_float,
        help=f"teacher temperature after its warm-up ({default_text('teacher_temp')})",
    )
    add(
        g,
        "warmup_teacher_temp",
        type=shared.positive_float,
        help=f"teacher temperature at step 0 ({default_text('warmup_teacher_temp')})",
    )
    add(
        g,
        "warmup_teacher_temp_steps",
        type=shared.nonnegative_int,
        help=f"teacher temperature warm-up steps ({default_text('warmup_teacher_temp_steps')})",
    )
    add(
        g,
        "freeze_last_layer_steps",
        type=shared.nonnegative_int,
        help=f"steps with the head's last layer frozen ({default_text('freeze_last_layer_steps')})",
    )


def _optimisation_flags(p: argparse.ArgumentParser) -> None:
    o = p.add_argument_group("optimisation")
    add = shared.add_flag
    add(
        o,
        "clip_grad",
        type=shared.nonnegative_float,
        default=3.0,
        help="clip the gradient norm to this (0: off; default 3)",
    )
    add(
        o,
        "layer_decay",
        type=_unit_interval,
        default=1.0,
        help="layer-wise LR decay: block i gets decay**(depth+1-i) (default 1: off)",
    )
    add(o, "center_momentum", type=_probability, default=0.9, help="momentum of the loss centre (default 0.9)")
    add(
        o,
        "koleo_weight",
        type=shared.nonnegative_float,
        default=0.0,
        help="weight of DINOv2's KoLeo regulariser on the student's global-crop CLS features (default 0: plain DINO)",
    )
    add(o, "student_temp", type=shared.positive_float, default=0.1, help="student temperature (default 0.1)")


def _model_flags(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model and crops")
    add = shared.add_flag
    add(m, "preset", choices=sorted(PRESETS), default="tiny", help="model size (default tiny: CPU-sized)")
    add(m, "out_dim", type=shared.positive_int, help="prototypes of the DINO head (default: the preset's)")
    add(m, "global_size", type=shared.positive_int, help="global crop size in pixels (default: the preset's)")
    add(m, "local_size", type=shared.positive_int, help="local crop size in pixels (default: the preset's)")
    add(m, "local_crops", type=shared.nonnegative_int, default=6, help="local crops per image (default 6)")
    add(
        m,
        "global_crops_scale",
        type=_unit_interval,
        nargs=2,
        metavar=("LO", "HI"),
        default=list(GLOBAL_SCALE),
        help=f"area range of global crops (default {GLOBAL_SCALE[0]} {GLOBAL_SCALE[1]})",
    )
    add(
        m,
        "local_crops_scale",
        type=_unit_interval,
        nargs=2,
        metavar=("LO", "HI"),
        default=list(LOCAL_SCALE),
        help=f"area range of local crops (default {LOCAL_SCALE[0]} {LOCAL_SCALE[1]})",
    )


def _data_flags(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    add = shared.add_flag
    add(
        d,
        "data_dir",
        type=Path,
        help="a folder of images (class sub-folders give k-NN labels), or WebDataset shards: a brace pattern "
        "('d/train-{000000..000099}.tar'), a glob ('d/train-*.tar'), a folder of .tar files, one .tar, or a "
        ".shards/.txt file listing shards one per line (key.cls members give k-NN labels) "
        "(default: Fashion-MNIST from /usr/share/datasets/fashion-mnist)",
    )
    add(
        d,
        "workers",
        type=shared.nonnegative_int,
        default=default_workers(),
        help="DataLoader processes that decode and crop images (0: in the training process; "
        f"default: usable cores minus one, at most 8: {default_workers()} here)",
    )
    add(
        d,
        "data_timeout",
        type=DATA_TIMEOUT,
        default=600.0,
        metavar="SECONDS",
        help="stop the run (checkpoint saved, exit status 4) when no batch arrives for this long, counted while "
        f"the process can run (default 600, at most {MAX_DATA_TIMEOUT:g}; 0: wait for ever)",
    )
    add(
        d,
        "accept_data_change",
        action="store_true",
        help="on --resume, continue although the data differs from the checkpoint's (files added, removed, renamed)",
    )
    add(
        d,
        "follow_links",
        action="store_true",
        help="follow symbolic links in --data-dir that lead outside it (default: not followed, with a warning)",
    )
    add(
        d,
        "batch_size",
        type=shared.positive_int,
        default=plan.BATCH_SIZE,
        help=f"images per step on each process (default {plan.BATCH_SIZE})",
    )
    add(d, "seed", type=shared.nonnegative_int, default=0, help="seed of the model, batches and crops (default 0)")


def _eval_flags(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("evaluation (weighted k-NN, k=20, T=0.07, on teacher CLS features)")
    add = shared.add_flag
    add(
        e,
        "eval_every",
        type=shared.nonnegative_int,
        default=500,
        help="k-NN every N steps (0: only at the end; default 500)",
    )
    add(e, "no_knn", action="store_true", help="no k-NN at all: no baselines, no periodic or final evaluation")
    add(
        e,
        "knn_train_samples",
        type=shared.nonnegative_int,
        default=10_000,
        help="labelled training images for k-NN (0: all; default 10000)",
    )
    add(
        e,
        "knn_test_samples",
        type=shared.nonnegative_int,
        default=2_000,
        help="test images for k-NN (0: all; default 2000)",
    )
    add(
        e,
        "knn_features",
        choices=("cls", "cls+patch"),
        default="cls",
        help="teacher features for k-NN: the CLS token, or it concatenated with the mean patch token (default cls)",
    )


def _run_flags(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("run")
    add = shared.add_flag
    add(r, "output_dir", type=Path, help="where the run writes (default runs/phase5-<timestamp>)")
    add(
        r,
        "resume",
        metavar="PATH|latest",
        help="continue from a checkpoint (latest: newest in --output-dir; default: a new run)",
    )
    add(
        r,
        "save_every",
        type=shared.nonnegative_int,
        default=1000,
        help="checkpoint every N steps (0: only at the end and on stop; default 1000)",
    )
    add(r, "keep_checkpoints", type=shared.positive_int, default=3, help="step checkpoints kept (default 3)")
    add(
        r,
        "recipe",
        choices=sorted(RECIPES),
        help="a named recipe: its flags as if typed first (flags typed here win). cpu-demo: "
        + " ".join(RECIPES["cpu-demo"])
        + " (default: none)",
    )
    add_device_flags(r)
