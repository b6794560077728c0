"""phase5_big_run.py: DINO self-supervised ViT pretraining with lrsched's schedules (docs/design.md section 5).

Order of work, so that bad input never leaves a trace: parse the flags (``flags``), resolve and
check everything -- the four schedules and the freeze, the preset, the data, the checkpoint to
resume from, the output folder -- then build the run and train (``loop``), then report.

Exit statuses: ``recipes/common/exits.py`` (the table: docs/design.md, "Exit statuses").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from lrsched import flags as shared
from lrsched.errors import UsageError
from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common.device import describe_device, pick_device
from lrsched.recipes.common.distributed import World, close_world, every_rank, init_world
from lrsched.recipes.common.exits import EXIT_DATA, EXIT_ERROR, EXIT_FAILED, EXIT_NONFINITE, EXIT_USAGE
from lrsched.recipes.common.faults import NonFiniteLoss
from lrsched.recipes.common.folders import print_any_path
from lrsched.recipes.common.rundir import Folder, check_run_dir, claim_run_dir
from lrsched.recipes.common.runlock import check_not_in_use
from lrsched.recipes.common.runlog import RunLog, write_json
from lrsched.recipes.common.stopping import Stopped, StopRequest
from lrsched.recipes.dino.curves import draw_curves
from lrsched.recipes.dino.data import Dataset, data_changes, load_dataset
from lrsched.recipes.dino.evaluation import baselines
from lrsched.recipes.dino.files import read_index, read_index_header, write_index
from lrsched.recipes.dino.flags import DEFAULTS, LR_WARMUP, PROG, PROGRAM_ID, build_parser, spelling
from lrsched.recipes.dino.loop import LOG_COLUMNS, build_run, rank_fingerprints, train, write_metrics
from lrsched.recipes.dino.model import step_bytes_lower_bound
from lrsched.recipes.dino.resume import check_channels, check_resume, plan_json, save
from lrsched.recipes.dino.state import Schedules, Settings, State, say
from lrsched.recipes.dino.stream import DataFailure, one_line
from lrsched.recipes.dino.vit import PRESETS, Preset
from lrsched.schedules import Schedule

RUN_FILES = (
    "log.csv",
    "metrics.json",
    "plan.json",
    "args.json",
    "data_index.tsv",
    "checkpoints",
    "curves.png",
    "tb",
    "error.log",
)
"""What a phase5 run leaves in its folder (cleared when a run that never saved restarts there)."""
FOLDER = Folder(PROGRAM_ID, RUN_FILES, output_flag="--output-dir", resume_flag="--resume")
"""What phase5 tells ``rundir`` about its output folders."""
DATA_INDEX = "data_index.tsv"
"""The run's record of its data: the fingerprint, then one line per file (``label<TAB>path``)."""


# --- settings: every check before anything is written ----------------------------------------


def resolve_schedules(args: argparse.Namespace) -> Schedules:
    """All four schedules (LR, weight decay, teacher momentum and temperature) and the last-layer freeze.

    The LR plan is lrsched's (``--lr``, ``--warmup-steps``, ``--min-lr``, ``--max-steps``); every other
    value is its flag or its entry in ``flags.DEFAULTS``, each with its source.
    """
    lr = shared.pretrain_plan(args)
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


def world_size() -> int:
    """Processes in the run (torchrun's ``WORLD_SIZE``; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


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


def settle(argv: Sequence[str] | None) -> Settings:
    """Parse and check everything: flags, schedules, data, checkpoint, output folder. Writes nothing."""
    args = build_parser().parse_args(argv)
    if args.resume == "latest" and args.output_dir is None:
        raise UsageError("--resume latest: needs --output-dir (the run whose newest checkpoint to load)")
    if args.output_dir is not None:
        check_not_in_use(Path(args.output_dir))  # a live run's folder: say so before anything about it
    schedules = resolve_schedules(args)
    preset = resolve_preset(args)
    _check_inputs(args)
    state, path = _read_resume(args, schedules)
    output = resolve_output(args, path)
    show_progress = sys.stderr.isatty() and os.environ.get("RANK", "0") == "0"
    data = load_dataset(args.data_dir, progress=show_progress, follow_links=args.follow_links)
    if len(data.train) < args.batch_size * world_size():
        raise UsageError(
            f"--batch-size {args.batch_size}: more than the {len(data.train)} training images "
            f"allow across {world_size()} process(es)"
        )
    if state is not None:
        _check_same_data(state, data, args, output, path)
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
    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no such directory")


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


# --- outputs ---------------------------------------------------------------------------------


def plan_lines(run: State) -> list[str]:
    """The plan as people read it: the LR plan with sources, then DINO's other schedules."""
    sch, total = run.settings.schedules, run.settings.schedules.lr.schedule.total
    wd, m, tt = sch.weight_decay, sch.momentum, sch.teacher_temp
    lines = ["learning rate:", *sch.lr.lines()]
    if run.lr_sched.replanned is not None:
        lines.append(f"  note: --replan {run.lr_sched.replanned}")
    lines += [
        f"weight decay:     {_cosine_text(wd.base, wd.final, total)}",
        f"teacher momentum: {_cosine_text(m.base, m.final, total)}",
        f"teacher temp:     {tt.start:g} -> {tt.base:g} over {tt.warmup} steps, then constant",
        f"last layer frozen for the first {sch.freeze_last_layer} steps",
    ]
    return lines


def _cosine_text(start: float, end: float, total: int | None) -> str:
    """How a cosine-scheduled value moves, in the plan's words (an open-ended run holds its start)."""
    if total is None:
        return f"{start:g}, held (open-ended: the cosine to {end:g} needs --max-steps)"
    return f"{start:g} -> {end:g}, cosine to step {total}"


def start_outputs(run: State) -> RunLog | None:
    """Rank 0: create the folder, write plan.json and args.json, open log.csv, print the plan."""
    if not run.world.is_main:
        return None
    out = run.settings.output_dir
    if run.settings.resume is not None:
        moved = ckpt.set_aside_future(out / "checkpoints", run.t)
        if moved is not None:
            print(f"{PROG}: checkpoints after step {run.t} (an abandoned future) moved to {moved}")
    write_json(out / "plan.json", plan_json(run))
    write_json(out / "args.json", shared.args_json(run.settings.args))
    data = run.settings.data
    if read_index_header(out / DATA_INDEX) != data.fingerprint():
        write_index(data.fingerprint(), data.listings, out / DATA_INDEX)
    print(f"{PROG}: {describe_device(run.device)}, {run.world.size} process(es), output {out}")
    print("\n".join(plan_lines(run)), flush=True)
    _say_data(run)
    return RunLog(out, LOG_COLUMNS, resume_step=run.t if run.settings.resume is not None else None)


def _say_data(run: State) -> None:
    """Rank 0: what the run trains on and evaluates with."""
    data, a = run.settings.data, run.settings.args
    print(f"data: {data.name}, {len(data.train)} training images, {data.channels} channel(s), {a.workers} worker(s)")
    if a.no_knn:
        print("note: k-NN evaluation skipped: --no-knn", flush=True)
    elif data.knn_train is None:
        print(f"note: k-NN evaluation skipped: {data.knn_note}", flush=True)


def finish(run: State, log: RunLog | None, status: str) -> None:
    """Metrics, curves and closing the log (rank 0)."""
    rank_fingerprints(run)
    if log is None:
        return
    log.close()
    write_metrics(run, status)
    try:
        draw_curves(run.settings.output_dir, run.metrics)
    except ImportError as err:
        print(f"{PROG}: note: curves.png not drawn ({err})", file=sys.stderr)
    _say_files(run.settings.output_dir)


def _say_files(out: Path) -> None:
    """The files the run left, with the newest checkpoint, in one line."""
    names = [name for name in RUN_FILES if name != "checkpoints" and (out / name).exists()]
    newest = ckpt.latest_checkpoint(out / "checkpoints")
    if newest is not None:
        names.append(f"checkpoints/{newest.name}")
    print(f"{PROG}: wrote {out}: {', '.join(names)}", flush=True)


# --- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the program; returns the exit status (0 done or stopped, 1 disk full, 2 bad input, 3 non-finite loss,
    4 the data path failed, 5 any other error once the model exists).

    SIGINT, SIGTERM and SIGHUP never kill it: before the model exists it exits 0 having written
    nothing; after, it saves the latest state and exits 0.
    """
    print_any_path()
    with StopRequest(immediate=True) as stop:
        try:
            with shared.usage_errors(PROG):
                settings = settle(argv)
                device = _device(settings)
                check_fits(settings, device)
        except Stopped as stopped:
            print(f"{PROG}: stopped by {stopped.signal_name} before the run started; nothing was written")
            return 0
        world = init_world(device.type)
        if device.type == "cuda" and world.distributed:
            device = torch.device("cuda", world.local_rank)
        try:
            return run_program(settings, world, device, stop)
        finally:
            close_world(world)


def _device(settings: Settings) -> torch.device:
    try:
        return pick_device(settings.args.device)
    except RuntimeError as err:  # an unknown device, or one this machine lacks
        raise UsageError(f"--device {settings.args.device}: {err}") from None


def run_program(settings: Settings, world: World, device: torch.device, stop: StopRequest) -> int:
    """Claim the folder, build the run, write the plan, train and report; the exit status."""
    out = settings.output_dir
    with shared.usage_errors(PROG):
        check_run_dir(out, FOLDER, settings.resume, resume_path=settings.resume_path, world=world)
        check_ranks_see_the_same_data(settings.data, settings.args, world)
    try:
        run = build_run(settings, world, device)
        stop.defer()  # the model exists: from now on a signal saves the latest state
    except Stopped as stopped:
        print(f"{PROG}: stopped by {stopped.signal_name} before the run started; nothing was written")
        return 0
    with contextlib.ExitStack() as stack:
        try:
            claimed = stack.enter_context(
                claim_run_dir(out, FOLDER, settings.resume, resume_path=settings.resume_path, world=world)
            )
        except UsageError as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        run.run_id = claimed.run_id
        return _train_and_report(run, stop)
    return 0  # unreachable: the ExitStack does not swallow exceptions


def _train_and_report(run: State, stop: StopRequest) -> int:
    """Outputs, baselines, the loop, the report; a stop anywhere saves first; a full disk is one line."""
    out = run.settings.output_dir
    log = None
    try:
        log = start_outputs(run)
        baselines(run, stop)
        status = train(run, log, stop)
    except Stopped as stopped:
        path = save(run)
        say(run, f"stopped by {stopped.signal_name} at step {run.t}; checkpoint {path}")
        status = f"stopped at step {run.t}"
    except NonFiniteLoss as err:
        last = ckpt.latest_checkpoint(out / "checkpoints")
        print(f"{PROG}: error: {err}; stopping. Last good checkpoint: {last or 'none'}", file=sys.stderr)
        if log is not None:
            log.close()
            write_metrics(run, str(err))
        return EXIT_NONFINITE
    except DataFailure as err:
        return _fail(run, log, f"the data path failed: {err}", EXIT_DATA)
    except Exception as err:
        if ckpt.is_disk_full(err):
            newest = ckpt.latest_checkpoint(out / "checkpoints")
            kept = f"the newest checkpoint {newest} is intact" if newest else "no checkpoint was written yet"
            print(
                f"{PROG}: error: no space left on the device; {kept}; free some space and --resume latest",
                file=sys.stderr,
            )
            return EXIT_FAILED
        return _fail(run, log, f"{one_line(err)} (traceback in {_write_traceback(out)})", EXIT_ERROR)
    finish(run, log, status)
    return 0


def _fail(run: State, log: RunLog | None, what: str, status: int) -> int:
    """After a failure: save the state when it is whole (between steps), metrics, one line; ``status``."""
    out = run.settings.output_dir
    if run.mid_step or not run.world.is_main:
        last = ckpt.latest_checkpoint(out / "checkpoints")
        why = "was mid-step" if run.mid_step else "is rank 0's to save"
        kept = f"the state in memory {why}, not saved; last checkpoint: {last or 'none'}"
    else:
        try:
            kept = f"checkpoint {save(run, together=False)}"
        except Exception as err:  # a failing disk: the failure that ended the run is still the one to report
            kept = f"saving failed too ({one_line(err)})"
    if log is not None:
        log.close()
        write_metrics(run, f"failed at step {run.t}: {what}")
    print(f"{PROG}: error: {what}; stopped at step {run.t}; {kept}", file=sys.stderr, flush=True)
    return status


def _write_traceback(out: Path) -> Path:
    """The traceback of the exception being handled, in ``<output>/error.log`` (the line says where)."""
    path = out / "error.log"
    with contextlib.suppress(OSError), path.open("a", encoding="utf-8", errors="replace") as f:
        f.write(f"{datetime.now().isoformat(timespec='seconds')}\n{traceback.format_exc()}\n")
    return path
