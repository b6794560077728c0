"""train.py: validate everything, print the plan, then train (``loop.py``) and report.

Order of work, so that bad input never leaves a trace:
1. parse flags; read and split the data; find the model; size the run (and what memory it
   needs); resolve the plan; read and check a checkpoint to resume from; check the output
   directory (``rundir.check_run_dir``). Any problem is one line naming the flag and the rule,
   exit status 2, and nothing is created.
2. claim the output directory (``rundir.claim_run_dir``): create it, lock it for the whole run
   (a second process is refused, naming our pid), write ``run.json`` (the run id);
3. print the plan (as ``lrsched show`` does) and the run size;
4. write ``plan.json`` and ``args.json``, and train.

Signals (SIGINT, SIGTERM, SIGHUP): before the model exists the program exits at once, having
written nothing; afterwards, anywhere, it saves the latest state as a checkpoint and exits 0.

Exit statuses: ``recipes/common/exits.py`` (the table: docs/design.md, "Exit statuses").
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lrsched.errors import ScheduleError, ScheduleMismatch, UsageError
from lrsched.flags import FINETUNE_DEFAULTS, args_json, check_peak, finetune_plan
from lrsched.recipes.common.checkpoint import is_disk_full, latest_checkpoint, load_checkpoint, resolve_resume
from lrsched.recipes.common.device import describe_device, device_memory, pick_device
from lrsched.recipes.common.distributed import World, close_world, init_world
from lrsched.recipes.common.exits import EXIT_FAILED, EXIT_NONFINITE, EXIT_USAGE
from lrsched.recipes.common.faults import NonFiniteLoss
from lrsched.recipes.common.folders import print_any_path
from lrsched.recipes.common.rundir import Folder, check_run_dir, claim_run_dir
from lrsched.recipes.common.runlog import write_json
from lrsched.recipes.common.stopping import Stopped, StopRequest
from lrsched.recipes.finetune import batches as B
from lrsched.recipes.finetune import data as D
from lrsched.recipes.finetune import loop
from lrsched.recipes.finetune import model as M
from lrsched.recipes.finetune.flags import PROG, PROGRAM_ID, parse
from lrsched.recipes.finetune.state import Settings
from lrsched.schedules import adopt, differences
from lrsched.strategy import Plan, updates_per_epoch

RUN_FILES = ("plan.json", "args.json", "log.csv", "eval.json", "curves.png", "checkpoints", "best", "last", "tb")
RESUME_FLAG, OUTPUT_FLAG, OVERWRITE_FLAG = "--resume_from_checkpoint", "--output_dir", "--overwrite_output_dir"
FOLDER = Folder(PROGRAM_ID, RUN_FILES, OUTPUT_FLAG, RESUME_FLAG, OVERWRITE_FLAG)
"""What train.py tells ``rundir`` about its output folders."""


# ---------------------------------------------------------------- validation


def data_flags(args: argparse.Namespace) -> D.DataFlags:
    return D.DataFlags(
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        text_column=args.text_column,
        label_column=args.label_column,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        max_test_samples=args.max_test_samples or args.max_eval_samples,
        seed=args.seed,
        max_chars=D.chars_for_tokens(args.max_seq_length),
    )


def size_run(args: argparse.Namespace, n_train: int, world: World) -> tuple[int, int]:
    """``(B, U)``: per-rank batches of an epoch and optimizer updates per epoch, ``ceil(B / A)``."""
    batches = B.batches_per_epoch(n_train, args.per_device_train_batch_size, world.size)
    accum = args.gradient_accumulation_steps
    if accum > batches:
        raise UsageError(
            f"--gradient_accumulation_steps {accum}: larger than the {batches} batches of an epoch "
            f"({n_train} examples, batch {args.per_device_train_batch_size}, {world.size} process(es))"
        )
    return batches, updates_per_epoch(batches, accum)


def run_identity(args: argparse.Namespace, splits: D.Splits, world: World, model: torch.nn.Module) -> dict[str, Any]:
    """What a resumed run must share with its checkpoint besides the plan (same data order).

    A length-grouped order also depends on the texts' token counts, so on ``--max_seq_length``;
    a plain permutation (``--no_group_by_length``, and every checkpoint of an older lrsched) has
    no ``group_by_length`` entry."""
    identity: dict[str, Any] = {
        "model": M.fingerprint(model),
        "labels": list(splits.label_names),
        "train_size": len(splits.train),
        "data": splits.source,
        "seed": args.seed,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "world_size": world.size,
    }
    if not args.no_group_by_length:
        identity["group_by_length"] = f"tokens up to --max_seq_length {args.max_seq_length}"
    return identity


def check_resume(state: dict[str, Any], plan: Plan, identity: dict[str, Any], flag: str) -> None:
    """Refuse a checkpoint of another model, another data order or another plan, listing differences."""
    saved = state["identity"]
    if saved.get("model") != identity["model"]:
        raise UsageError(f"{flag}: the checkpoint is of another model (parameter names or shapes differ from --model)")
    changed = differences(saved, identity)
    if changed:
        raise UsageError(f"{flag}: the checkpoint is of another run ({'; '.join(changed)})")
    try:
        adopt(plan.schedule, state["scheduler"])
    except ScheduleMismatch as err:
        raise ScheduleMismatch(
            f"{flag}: the checkpoint's schedule differs ({'; '.join(err.changes)}); "
            "resume with the flags it was started with",
            err.changes,
        ) from None


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def longest_tokens(tokenizer: Any, texts: Sequence[str], limit: int, sample: int = 16) -> int:
    """Tokens of the longest of ``texts`` (by tokenizing the ``sample`` longest by characters), at most ``limit``."""
    longest = sorted(texts, key=len, reverse=True)[:sample]
    if not longest:
        return 1
    enc = tokenizer(longest, truncation=True, max_length=limit)
    return max(len(ids) for ids in enc["input_ids"])


def check_sizes(args: argparse.Namespace, run: Settings) -> None:
    """--max_seq_length within the model's positions; a batch that cannot fit in memory is refused up front.

    Memory is estimated from the padded batch (at most ``--max_seq_length`` tokens, and no more
    than the longest texts need): training keeps about 16 float32 values per hidden unit per
    token per layer (measured on MiniLM, CPU: 19 MB per 128-token text), evaluation about 10
    per hidden unit plus the attention scores. It is compared with all the memory the device has
    (what is free at the moment depends on other processes: a run is not refused for that).
    """
    config = getattr(run.model, "config", None)
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if positions and args.max_seq_length > positions:
        raise UsageError(
            f"--max_seq_length {args.max_seq_length}: more than the {positions} positions "
            f"of the model ({run.model_dir})"
        )
    memory = device_memory(run.device)
    if memory is None or config is None:
        return
    if run.device.type == "cpu":
        memory //= run.world.size  # the ranks share the machine's memory
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    if not (hidden and layers):
        return
    params = sum(p.numel() for p in run.model.parameters()) * 4 * 4  # weights, gradients, AdamW's two moments
    w = run.world.size
    s = run.splits
    b = min(args.per_device_train_batch_size, math.ceil(len(s.train) / w))
    length = longest_tokens(run.tokenizer, s.train.texts, args.max_seq_length)
    need = params + b * length * hidden * layers * 16 * 4
    if need > memory:
        raise UsageError(
            f"--per_device_train_batch_size {args.per_device_train_batch_size}: a batch of {b} texts of up to "
            f"{length} tokens needs about {_gb(need)} to train, more than the {_gb(memory)} this device has; "
            "use a smaller batch"
        )
    evals = [s.validation, *([s.test] if s.test is not None else [])]
    b = min(args.per_device_eval_batch_size, max(math.ceil(len(e) / w) for e in evals))
    length = max(longest_tokens(run.tokenizer, e.texts, args.max_seq_length) for e in evals)
    need = params // 4 + b * length * (hidden * 10 + heads * length * 2) * 4
    if need > memory:
        raise UsageError(
            f"--per_device_eval_batch_size {args.per_device_eval_batch_size}: a batch of {b} texts of up to "
            f"{length} tokens needs about {_gb(need)} to evaluate, more than the {_gb(memory)} this device has; "
            "use a smaller batch"
        )


def default_output_dir() -> Path:
    return Path("runs") / f"train-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def prepare(args: argparse.Namespace, world: World, device: torch.device) -> Settings:
    """Check every input and build the run; raises ``UsageError`` before anything is written."""
    splits = D.load_splits(data_flags(args))
    model_dir = args.model if args.model is not None else M.default_model_dir()
    M.check_model_dir(model_dir)
    tokenizer = M.load_tokenizer(model_dir)
    batches, upe = size_run(args, len(splits.train), world)
    plan = finetune_plan(args, upe)
    check_peak(plan, "--learning_rate")
    output_dir = args.output_dir if args.output_dir is not None else default_output_dir()
    flag = RESUME_FLAG
    resume_path = resolve_resume(args.resume_from_checkpoint, output_dir, flag)
    state = None if resume_path is None else load_checkpoint(resume_path, PROGRAM_ID, flag)
    check_run_dir(output_dir, FOLDER, state, resume_path=resume_path, overwrite=args.overwrite_output_dir, world=world)
    torch.manual_seed(args.seed)  # the new classification head
    model = M.load_model(model_dir, splits.label_names)
    identity = run_identity(args, splits, world, model)
    if state is not None:
        check_resume(state, plan, identity, f"{flag} {resume_path}")
    run = Settings(
        args,
        world,
        device,
        splits,
        model_dir,
        tokenizer,
        model,
        batches,
        upe,
        plan,
        output_dir,
        state,
        resume_path,
        identity,
    )
    check_sizes(args, run)
    return run


# ---------------------------------------------------------------- the printout


def plan_text(run: Settings) -> str:
    """The plan as ``lrsched show`` prints it, then the run size."""
    s, a = run.splits, run.args
    t = run.plan.schedule.total
    lines = ["plan for train.py", *run.plan.lines(), "", "run:"]
    lines.append(f"  data    {s.source}")
    lines.append(f"  labels  {', '.join(s.label_names)}")
    test = "none" if s.test is None else str(len(s.test))
    lines.append(f"  sizes   train {len(s.train)}, validation {len(s.validation)}, test {test}")
    lines.append(
        f"  updates {run.updates_per_epoch} per epoch = ceil({run.batches} batches of "
        f"{a.per_device_train_batch_size} / accumulation {a.gradient_accumulation_steps}); total {t}"
    )
    procs = f", {run.world.size} processes" if run.world.distributed else ""
    precision = "bf16 autocast" if a.bf16 else "fp32"
    lines.append(f"  device  {describe_device(run.device)}{procs}, {precision}")
    lines.append(f"  model   {run.model_dir}")
    lines.append(f"  output  {run.output_dir}")
    if run.resume is not None:
        lines.append(f"  resume  from step {run.resume['step']} of {t}")
    return "\n".join(lines)


def start_output(run: Settings) -> None:
    """Write plan.json and args.json (rank 0) into the claimed output directory (``claim_run_dir``
    created it, and cleared an old run when allowed)."""
    out = run.output_dir
    if run.resume_path is not None:  # resuming into another directory: bring the best model along
        old_best = run.resume_path.resolve().parent.parent / "best"
        if old_best.is_dir() and not (out / "best").exists():
            shutil.copytree(old_best, out / "best")
    write_json(out / "plan.json", run.plan.to_json())
    write_json(out / "args.json", args_json(run.args, FINETUNE_DEFAULTS))


# ---------------------------------------------------------------- entry


def fail(world: World, message: str, status: int) -> int:
    if world.is_main:
        print(f"{PROG}: error: {message}", file=sys.stderr)
    close_world(world)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run train.py; returns the exit status (see the module docstring)."""
    args = parse(argv)
    print_any_path()
    with StopRequest(immediate=True) as stop:
        return _main(args, stop)


def _main(args: argparse.Namespace, stop: StopRequest) -> int:
    world = World()
    try:
        try:
            device = pick_device(args.device)
        except RuntimeError as err:  # an unknown device name
            return fail(world, f"--device {args.device}: {str(err).splitlines()[0]}", EXIT_USAGE)
        world = init_world(device.type)
        run = prepare(args, world, device)
        stop.defer()  # the model exists: from now on a signal saves the latest state
    except Stopped as stopped:
        if world.is_main:
            line = f"{PROG}: stopped by {stopped.signal_name} before the run started; nothing was written"
            print(line, file=sys.stderr)
        close_world(world)
        return 0
    except (UsageError, ScheduleError) as err:
        return fail(world, str(err), EXIT_USAGE)
    with contextlib.ExitStack() as stack:
        try:
            rundir = stack.enter_context(
                claim_run_dir(
                    run.output_dir,
                    FOLDER,
                    run.resume,
                    resume_path=run.resume_path,
                    overwrite=args.overwrite_output_dir,
                    world=world,
                )
            )
        except UsageError as err:
            return fail(world, str(err), EXIT_USAGE)
        run.run_id = rundir.run_id
        try:
            if world.is_main:
                print(plan_text(run), flush=True)
                start_output(run)
            loop.train(run, stop)
        except NonFiniteLoss as err:
            return fail(world, str(err), EXIT_NONFINITE)
        except (OSError, RuntimeError) as err:
            if not is_disk_full(err):
                raise
            return fail(world, disk_full_message(run, err), EXIT_FAILED)
    close_world(world)
    return 0


def disk_full_message(run: Settings, err: BaseException) -> str:
    """One line: what could not be written, and which checkpoint is intact."""
    what = getattr(err, "filename", None) or str(err).split(": ", 1)[-1]
    newest = latest_checkpoint(run.output_dir / "checkpoints")
    kept = f"the newest checkpoint {newest} is intact" if newest is not None else "no checkpoint was written yet"
    return f"no space left on the device (writing {what}); {kept}; free some space and resume with {RESUME_FLAG} latest"
