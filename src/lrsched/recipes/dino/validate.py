"""phase5's validation: every flag resolved and checked before anything is written.

``settle`` resolves the four schedules and the freeze, the model preset, the data (every rank lists
``--data-dir`` and must see the same files), the checkpoint to resume from and the output folder;
``check_fits`` refuses a step that cannot fit in the device's memory. A problem is a ``UsageError``:
one line naming the flag and the rule.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from lrsched import flags as shared
from lrsched.errors import UsageError
from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common.device import describe_device
from lrsched.recipes.common.distributed import World, every_rank
from lrsched.recipes.dino import plan as lr_plan
from lrsched.recipes.dino.checkpoint import check_channels, check_not_finished, check_resume
from lrsched.recipes.dino.data import Dataset, data_changes, load_dataset
from lrsched.recipes.dino.files import DATA_INDEX, read_index
from lrsched.recipes.dino.flags import DEFAULTS, LR_WARMUP, PROGRAM_ID, spelling
from lrsched.recipes.dino.model import step_bytes_lower_bound
from lrsched.recipes.dino.shards import is_shard_spec
from lrsched.recipes.dino.state import Schedules, Settings
from lrsched.recipes.dino.vit import PRESETS, Preset
from lrsched.schedules import Schedule


def resolve_schedules(args: argparse.Namespace, processes: int) -> Schedules:
    """All four schedules (LR, weight decay, teacher momentum and temperature) and the last-layer freeze.

    The LR plan is lrsched's (``--lr``, ``--warmup-steps``, ``--min-lr``, ``--max-steps``); every other
    value is its flag or its entry in ``flags.DEFAULTS``, each with its source.
    """
    lr = lr_plan.plan_from_args(args, processes)
    shared.check_peak(lr, "--lr")
    total, sources = lr.schedule.total, dict[str, str]()
    value = {name: _resolve(args, name, lr.schedule.warmup, sources) for name in DEFAULTS}
    temp_warm = value["warmup_teacher_temp_steps"]
    if total is not None and temp_warm >= total:
        raise UsageError(f"--warmup-teacher-temp-steps {temp_warm}: must be less than --max-steps {total}")
    return Schedules(
        lr=lr,
        weight_decay=Schedule("cosine", base=value["weight_decay"], final=value["weight_decay_end"], total=total),
        momentum=Schedule("cosine", base=value["momentum_teacher"], final=1.0, total=total),
        teacher_temp=Schedule(
            "constant", start=value["warmup_teacher_temp"], base=value["teacher_temp"], warmup=temp_warm, total=total
        ),
        freeze_last_layer=value["freeze_last_layer_steps"],
        sources=sources,
    )


def _resolve(args: argparse.Namespace, name: str, lr_warmup: int, sources: dict[str, str]) -> Any:
    """The flag's value, else its default (``LR_WARMUP``: the LR's warm-up); records where it came from."""
    given, default = getattr(args, name), DEFAULTS[name]
    if default == LR_WARMUP:  # a step count: --flag 2500, or "default: --warmup-steps"
        sources[name] = f"default: {LR_WARMUP}" if given is None else f"{spelling(name)} {given}"
        return lr_warmup if given is None else given
    sources[name] = "default" if given is None else f"{spelling(name)} {given:g}"
    return default if given is None else given


def resolve_preset(args: argparse.Namespace) -> Preset:
    """The preset with --out-dim, --global-size and --local-size applied; crops must fit a patch."""
    p = PRESETS[args.preset]
    p = Preset(
        **{
            **p.__dict__,
            "out_dim": args.out_dim or p.out_dim,
            "global_size": args.global_size or p.global_size,
            "local_size": args.local_size or p.local_size,
        }
    )
    for name, size in (("--global-size", p.global_size), ("--local-size", p.local_size)):
        if size < p.patch:
            raise UsageError(f"{name} {size}: must be at least the patch size {p.patch} of --preset {args.preset}")
    return p


def resolve_output(args: argparse.Namespace, resume_path: Path | None) -> Path:
    """--output-dir, else the resumed run's folder, else runs/phase5-<timestamp>.

    Whether the folder may be used is ``check_run_dir``'s answer (one run per folder).
    """
    if args.output_dir is not None:
        out = Path(args.output_dir)
    elif resume_path is not None:
        parent = resume_path.resolve().parent
        out = parent.parent if parent.name == "checkpoints" else parent
    else:
        out = Path("runs") / f"phase5-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    return out


def settle(args: argparse.Namespace, world: World) -> Settings:
    """Resolve and check everything: schedules, preset, data, checkpoint, output folder. Writes nothing."""
    if args.resume == "latest" and args.output_dir is None:
        raise UsageError("--resume latest: needs --output-dir (the run whose newest checkpoint to load)")
    schedules = resolve_schedules(args, world.size)
    preset = resolve_preset(args)
    _check_inputs(args)
    state, path = _read_resume(args, schedules)
    output = resolve_output(args, path)
    if state is not None:
        check_not_finished(state, schedules, output, path)
    show_progress = sys.stderr.isatty() and world.is_main
    data = load_dataset(
        args.data_dir, show_progress, args.follow_links, timeout=args.data_timeout, exclude=output
    )  # the run's own folder is never data
    if len(data.train) < args.batch_size * world.size:
        raise UsageError(
            f"--batch-size {args.batch_size}: more than the {len(data.train)} training images "
            f"allow across {world.size} process(es)"
        )
    if state is not None:
        _check_same_data(state, data, args, output, path)
    check_ranks_see_the_same_data(data, args, world)
    return Settings(args, preset, schedules, data, output, state, path)


def _check_same_data(
    state: dict[str, Any], data: Dataset, args: argparse.Namespace, output: Path, path: Path | None
) -> None:
    """A resume trains on the data its checkpoint saw, unless --accept-data-change; its index must parse.

    The run's ``data_index.tsv`` (when there is one) is read whole and checked against its header
    (``read_index``): one that does not parse is refused before anything is written.
    """
    read_index(output / DATA_INDEX)
    changes = data_changes(state["data"]["fingerprint"], data.fingerprint())  # check_resume saw "data"
    if changes and not args.accept_data_change:
        raise UsageError(
            f"--data-dir {args.data_dir or data.name}: not the data of the checkpoint ({'; '.join(changes)}); "
            "pass --accept-data-change to continue on the data as it is now"
        )
    check_channels(state, data.channels, path or args.resume, str(args.data_dir or data.name))


def check_ranks_see_the_same_data(data: Dataset, args: argparse.Namespace, world: World) -> None:
    """Under torchrun every rank lists ``--data-dir`` itself: the run starts only if all saw the same files."""
    fingerprints = every_rank(data.fingerprint(), world)
    for rank, theirs in enumerate(fingerprints[1:], start=1):
        changes = data_changes(fingerprints[0], theirs)
        if changes:
            raise UsageError(
                f"--data-dir {args.data_dir or data.name}: process {rank} saw other data than process 0 "
                f"({'; '.join(changes)}); the folder changed while the run started: start it again"
            )


def _check_inputs(args: argparse.Namespace) -> None:
    """Crop scale ranges in order and --data-dir a folder."""
    for name in ("global_crops_scale", "local_crops_scale"):
        lo, hi = getattr(args, name)
        if lo > hi:
            raise UsageError(f"{spelling(name)} {lo:g} {hi:g}: the low end must not exceed the high end")
    if args.data_dir is not None and not Path(args.data_dir).is_dir() and not is_shard_spec(args.data_dir):
        found = "is a file, not a folder (nor a .tar shard or a .shards/.txt list of shards)"
        raise UsageError(
            f"--data-dir {args.data_dir}: {found if Path(args.data_dir).exists() else 'no such directory'}"
        )


def _read_resume(args: argparse.Namespace, schedules: Schedules) -> tuple[dict[str, Any] | None, Path | None]:
    """The checkpoint --resume names, loaded and checked against the flags; ``(None, None)`` without it."""
    if args.resume is None:
        return None, None
    path = ckpt.resolve_resume(args.resume, Path(args.output_dir or "."), "--resume")
    assert path is not None
    state = ckpt.load_checkpoint(path, PROGRAM_ID, "--resume")
    check_resume(state, args, schedules, path)
    return state, path


def check_fits(settings: Settings, device: torch.device) -> None:
    """Refuse, before anything is allocated, a step that cannot fit in the device's memory."""
    a, s = settings.args, settings
    available = memory_available(device)
    if available is None:
        return
    parts = step_bytes_lower_bound(s.preset, s.data.channels, a.batch_size, a.local_crops, a.bf16)
    need = sum(parts.values())
    if need > available:
        biggest = max(parts, key=parts.__getitem__)
        raise UsageError(
            f"--batch-size {a.batch_size} --local-crops {a.local_crops} --out-dim {s.preset.out_dim} "
            f"(--preset {a.preset}): a step needs at least {need / 2**30:.1f} GiB ({biggest} "
            f"{parts[biggest] / 2**30:.1f} GiB), more than the {available / 2**30:.1f} GiB available "
            f"on {describe_device(device)}"
        )


def memory_available(device: torch.device) -> int | None:
    """Free bytes on a GPU, or the host's available memory (Linux); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
