"""The run skeleton both programs fill in: parse -> validate -> claim -> train -> report.

A program is a ``Recipe`` (``dino.main.Phase5``, ``finetune.main.TrainPy``); ``run`` calls its parts
in this order and owns everything between them:

1. **parse** the flags (``Recipe.parse``; argparse's own refusals are exit status 2 too);
2. **validate**, writing nothing: the device is picked and the process group joined, a live run's
   folder is refused at once (its lock), ``Recipe.settle`` resolves and checks every input into the
   program's ``Settings``, the output folder is checked once (``rundir.check_run_dir``), and
   ``Recipe.build`` makes the model, optimizer and schedulers into the program's ``State`` (restored
   when resuming; it may still refuse). A refusal is one line and exit status 2;
3. **claim** the output folder (``rundir.claim_run_dir``: created, locked for the run, ``run.json``);
4. **train**: ``Recipe.start`` (the plan printed, plan.json, args.json, the log), then ``Recipe.train``;
5. **report**: ``Recipe.report``, then one line naming the files the run left.

Signals (SIGINT, SIGTERM, SIGHUP): until the model exists the program leaves at once, having
written nothing (exit 0); afterwards the run saves its latest state and exits 0. Whatever else ends
a run is one line and a documented status (``exits``; the table is docs/design.md, "Exit
statuses and what is proved"): a non-finite loss keeps the last good checkpoint (3); a full disk
names the intact checkpoint (1); a failing data path (4) or any other error (5) saves the state
when it is whole, and the traceback of the latter goes to ``<output>/error.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import traceback
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch

from lrsched.errors import ScheduleError, UsageError
from lrsched.paths import PathKind, check_path
from lrsched.recipes.common.checkpoint import is_disk_full, latest_checkpoint
from lrsched.recipes.common.device import pick_device
from lrsched.recipes.common.distributed import World, close_world, init_world
from lrsched.recipes.common.exits import EXIT_DATA, EXIT_ERROR, EXIT_FAILED, EXIT_NONFINITE, EXIT_USAGE
from lrsched.recipes.common.faults import DataFailure, NonFiniteLoss, one_line
from lrsched.recipes.common.folders import print_any_path
from lrsched.recipes.common.rundir import Folder, check_run_dir, claim_run_dir
from lrsched.recipes.common.runlock import check_not_in_use
from lrsched.recipes.common.stopping import CLOSED_OUTPUT, Stopped, StopRequest, guarded_output


class AlreadyFinished(Exception):
    """A resume of a finished run that asks for nothing more (``settle`` raises it): said in one line, exit 0."""


class RunSettings(Protocol):
    """What the skeleton reads of a program's ``Settings``: where the run goes and what it resumes."""

    @property
    def output_dir(self) -> Path: ...
    @property
    def resume(self) -> Mapping[str, Any] | None: ...
    @property
    def resume_path(self) -> Path | None: ...
    @property
    def overwrite(self) -> bool: ...


class RunState(Protocol):
    """What the skeleton reads of a program's ``State``: the step, the processes, the run id."""

    world: World
    run_id: str | None
    mid_step: bool

    @property
    def t(self) -> int: ...
    @property
    def settings(self) -> RunSettings: ...


S = TypeVar("S", bound=RunSettings)
R = TypeVar("R", bound=RunState)


class Recipe(ABC, Generic[S, R]):
    """A program's own parts, in the order ``run`` calls them."""

    prog: str
    """The program's name at the start of every line it prints."""
    folder: Folder
    """Its output folders: its name, the files its runs leave, its flags."""
    unsaved: str = "no checkpoint was written"
    """What a stop says when ``save`` wrote nothing (the flags asked for no checkpoints)."""
    path_flags: tuple[tuple[str, str, PathKind], ...] = ()
    """Its path flags (attribute, flag, kind), checked first (``lrsched.paths.check_path``); ``latest`` is a word."""

    @abstractmethod
    def parse(self, argv: Sequence[str] | None) -> argparse.Namespace:
        """The flags."""

    @abstractmethod
    def settle(self, args: argparse.Namespace, world: World, device: torch.device) -> S:
        """Every input resolved and checked (``UsageError`` otherwise); writes nothing."""

    @abstractmethod
    def build(self, settings: S, world: World, device: torch.device) -> R:
        """The model, optimizer and schedulers, restored when resuming; may still refuse; writes nothing."""

    @abstractmethod
    def start(self, run: R) -> None:
        """In the claimed folder: print the plan, write plan.json and args.json, open the log (rank 0)."""

    @abstractmethod
    def train(self, run: R, stop: StopRequest) -> str:
        """Train to the plan's end (or until a signal, as ``Stopped``); how the run ended."""

    @abstractmethod
    def save(self, run: R, together: bool = True) -> Path | None:
        """Save the latest state (every rank calls; ``together=False`` after a failure, when the other
        ranks may never come); the checkpoint, or None when the flags ask for none."""

    @abstractmethod
    def close(self, run: R, status: str) -> None:
        """After a failure: close the log and record ``status`` (no collective: other ranks may be gone)."""

    @abstractmethod
    def report(self, run: R, status: str) -> None:
        """After the training ended or stopped: close the log, metrics, figures, the result lines."""


def run(recipe: Recipe[S, R], argv: Sequence[str] | None = None) -> int:
    """Run the program ``recipe`` describes; the exit status."""
    print_any_path()
    try:
        args = recipe.parse(argv)
    except SystemExit as done:  # --help (0), or argparse's one-line refusal (2)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    with StopRequest(immediate=True) as stop, guarded_output(stop):
        status = _run(recipe, args, stop)
        if argv is None:  # the program itself (tests pass their flags): its teardown is not interrupted
            stop.quiet_from_now_on(status)
    return status


def _run(recipe: Recipe[S, R], args: argparse.Namespace, stop: StopRequest) -> int:
    """Validate, claim, train and report, with ``stop`` installed; the exit status."""
    world = World()
    try:
        try:
            device = _device(args.device)
            world = init_world(device.type)
            state = checked(recipe, args, world, _on_rank(device, world))
            stop.defer()  # the model exists: from now on a signal saves the latest state
        except Stopped as stopped:
            if world.is_main:
                why = f"stopped by {stopped.signal_name} before the run started; nothing was written"
                print(f"{recipe.prog}: {why}", file=sys.stderr, flush=True)
            return 0
        except AlreadyFinished as done:  # nothing to train: nothing written
            if world.is_main:
                print(f"{recipe.prog}: {done}", flush=True)
            return 0
        except (UsageError, ScheduleError) as err:
            return _refuse(recipe, world, err)
        except DataFailure as err:  # the data stalled before the run started (phase5's start-up sample)
            if world.is_main:
                print(f"{recipe.prog}: error: the data path failed: {err}; nothing was written", file=sys.stderr)
            return EXIT_DATA
        return _claim_and_train(recipe, state, stop)
    finally:
        close_world(world)


def _device(name: str) -> torch.device:
    """``--device``: ``auto`` or a device this machine has (``UsageError`` otherwise)."""
    try:
        return pick_device(name)
    except RuntimeError as err:  # an unknown device, or one this machine lacks
        raise UsageError(f"--device {name}: {str(err).splitlines()[0]}") from None


def _on_rank(device: torch.device, world: World) -> torch.device:
    """Under torchrun each rank's own GPU (``LOCAL_RANK``)."""
    return torch.device("cuda", world.local_rank) if device.type == "cuda" and world.distributed else device


def checked(recipe: Recipe[S, R], args: argparse.Namespace, world: World, device: torch.device) -> R:
    """The run ``args`` ask for, settled, its output folder checked, and built; nothing written.

    (What ``run`` does before it claims the folder; tests and benchmarks build a run with it.)"""
    for attribute, flag, kind in recipe.path_flags:
        value = getattr(args, attribute, None)
        if value is not None and value != "latest":
            check_path(value, flag, kind)  # a name too long, a folder that cannot be entered: one line
    if args.output_dir is not None:
        check_not_in_use(
            Path(args.output_dir), recipe.folder.output_flag
        )  # a live run's folder: said before anything about it
    settings = recipe.settle(args, world, device)
    s: RunSettings = settings
    check_run_dir(s.output_dir, recipe.folder, s.resume, resume_path=s.resume_path, overwrite=s.overwrite, world=world)
    return recipe.build(settings, world, device)


def _claim_and_train(recipe: Recipe[S, R], run: R, stop: StopRequest) -> int:
    """Hold the output folder for the whole run (``claim_run_dir``), then train and report."""
    s = run.settings
    claim = contextlib.ExitStack()
    try:
        folder = claim_run_dir(
            s.output_dir, recipe.folder, s.resume, resume_path=s.resume_path, overwrite=s.overwrite, world=run.world
        )
        run.run_id = claim.enter_context(folder).run_id
    except UsageError as err:
        return _refuse(recipe, run.world, err)
    try:
        return _train_and_report(recipe, run, stop)
    finally:
        claim.close()


def _train_and_report(recipe: Recipe[S, R], run: R, stop: StopRequest) -> int:
    """Start, train and report; whatever ends the run early is one line and its exit status."""
    try:
        status = _trained(recipe, run, stop)
        stop.output_stops = False  # the training is over: a closed output no longer cuts the report short
        if not _reported(recipe, run, status):
            return 0
    except NonFiniteLoss as err:
        return _end(recipe, run, f"{err}; last good checkpoint: {_last(run) or 'none'}", str(err), EXIT_NONFINITE)
    except DataFailure as err:
        return _fail(recipe, run, f"the data path failed: {err}", EXIT_DATA)
    except Exception as err:
        if is_disk_full(err):
            return _end(recipe, run, _disk_full(recipe, run, err), "no space left on the device", EXIT_FAILED)
        return _fail(recipe, run, f"{one_line(err)} ({_traceback_saved(run)})", EXIT_ERROR)
    if run.world.is_main:
        print(f"{recipe.prog}: wrote {run.settings.output_dir}: {', '.join(_files(recipe, run))}", flush=True)
    return 0


def _trained(recipe: Recipe[S, R], run: R, stop: StopRequest) -> str:
    """Start and train; a stop saves the latest state (its failures, a full disk, end the run as any other)."""
    try:
        recipe.start(run)
        return recipe.train(run, stop)
    except Stopped as stopped:
        return _stopped(recipe, run, stopped.signal_name)


def _reported(recipe: Recipe[S, R], run: R, status: str) -> bool:
    """The report; False when a signal cut it short (a second Ctrl-C after a stop's save): one quiet line."""
    try:
        recipe.report(run, status)
    except Stopped as again:
        if run.world.is_main:
            newest = _last(run)
            kept = f"the newest checkpoint is {newest}" if newest is not None else recipe.unsaved
            print(f"{recipe.prog}: stopped by {again.signal_name} during the report; {kept}", flush=True)
        return False
    return True


def _stopped(recipe: Recipe[S, R], run: R, signal_name: str) -> str:
    """A signal after the model exists: save (every rank), say so; the status for the report."""
    path = recipe.save(run)
    kept = recipe.unsaved if path is None else f"checkpoint {path}; continue with {recipe.folder.resume_flag} latest"
    if run.world.is_main:  # a closed stdout: said on stderr, which may still be read (``| head``)
        where = sys.stderr if signal_name == CLOSED_OUTPUT else sys.stdout
        print(f"{recipe.prog}: stopped by {signal_name} at step {run.t}; {kept}", file=where, flush=True)
    return f"stopped at step {run.t}"


def _fail(recipe: Recipe[S, R], run: R, what: str, status: int) -> int:
    """A failure: save the state when it is whole (between steps, rank 0 alone), then ``_end``."""
    last = _last(run)
    if run.mid_step or not run.world.is_main:
        why = "was mid-step" if run.mid_step else "is rank 0's to save"
        kept = f"the state in memory {why}, not saved; last checkpoint: {last or 'none'}"
    else:
        try:
            path = recipe.save(run, together=False)
            kept = f"checkpoint {path}" if path else f"not saved; last checkpoint: {last or 'none'}"
        except Exception as err:  # a failing disk: the failure that ended the run is still the one to report
            kept = f"saving failed too ({one_line(err)})"
    return _end(recipe, run, f"{what}; stopped at step {run.t}; {kept}", f"failed at step {run.t}: {what}", status)


def _end(recipe: Recipe[S, R], run: R, line: str, status_text: str, status: int) -> int:
    """Close the log and record ``status_text`` (best effort: the disk may be what failed), print ``line``."""
    with contextlib.suppress(OSError, RuntimeError):
        recipe.close(run, status_text)
    print(f"{recipe.prog}: error: {line}", file=sys.stderr, flush=True)
    return status


def _disk_full(recipe: Recipe[S, R], run: R, err: BaseException) -> str:
    """What could not be written, which checkpoint is intact, and how to go on."""
    path = getattr(err, "filename", None)
    what = f" (writing {path})" if path else ""
    newest = _last(run)
    kept = f"the newest checkpoint {newest} is intact" if newest is not None else "no checkpoint was written yet"
    flag = recipe.folder.resume_flag
    return f"no space left on the device{what}; {kept}; free some space and resume with {flag} latest"


def _refuse(recipe: Recipe[S, R], world: World, err: Exception) -> int:
    """Bad input: one line (rank 0: every rank reached the same answer), exit status 2. A library rule
    (``ScheduleError``) is said with the flags the user types (``in_flags``)."""
    text = in_flags(str(err), recipe.folder.output_flag) if isinstance(err, ScheduleError) else str(err)
    if world.is_main:
        print(f"{recipe.prog}: error: {text}", file=sys.stderr, flush=True)
    return EXIT_USAGE


LIBRARY_FLAGS = {
    "warmup": "--warmup-steps",
    "total": "--max-steps",
    "base": "--lr",
    "final": "--min-lr",
    "decay": "--decay-ratio (decay steps)",
    "cycles": "--num-cycles",
}
"""The schedule's parameters (``schedules.Schedule``) and the flags that set them."""
_LIBRARY_NAME = re.compile(rf"\b({'|'.join(LIBRARY_FLAGS)})=")


def in_flags(message: str, output_flag: str) -> str:
    """A library message in the command line's words: ``warmup=5`` -> ``--warmup-steps 5``, spelt as the
    program spells its flags (``--output_dir``: ``--warmup_steps``)."""

    def flag(m: re.Match[str]) -> str:
        name = LIBRARY_FLAGS[m.group(1)]
        return (name.replace("-", "_").replace("__", "--", 1) if "_" in output_flag else name) + " "

    return _LIBRARY_NAME.sub(flag, message)


def _last(run: RunState) -> Path | None:
    return latest_checkpoint(run.settings.output_dir / "checkpoints")


def _files(recipe: Recipe[S, R], run: R) -> list[str]:
    """The run's files present in its folder, folders with a slash, and the newest checkpoint."""
    out = run.settings.output_dir
    names = [
        f"{n}/" if (out / n).is_dir() else n
        for n in recipe.folder.run_files
        if n != "checkpoints" and (out / n).exists()
    ]
    newest = _last(run)
    return names + ([f"checkpoints/{newest.name}"] if newest is not None else [])


def _traceback_saved(run: RunState) -> str:
    """The traceback of the exception being handled, appended to ``<output>/error.log``; where it went,
    or why it could not be saved (a read-only folder: no file is named that does not exist)."""
    path = run.settings.output_dir / "error.log"
    try:
        with path.open("a", encoding="utf-8", errors="replace") as f:
            f.write(f"{datetime.now().isoformat(timespec='seconds')}\n{traceback.format_exc()}\n")
    except OSError as err:
        return f"its traceback could not be saved in {run.settings.output_dir}: {err.strerror or type(err).__name__}"
    return f"traceback in {path}"
