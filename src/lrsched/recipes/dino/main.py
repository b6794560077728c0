"""phase5_big_run.py: DINO self-supervised ViT pretraining with lrsched's schedules (docs/phase5.md).

The run skeleton (``recipes/common/skeleton.py``) calls the parts below in order -- parse, settle
(``validate``), build (``loop.build_run``), start, train (``loop.train``), report -- and owns the
exit statuses, signals and failures (the table: docs/design.md, "Exit statuses and what is proved").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from lrsched import flags as shared
from lrsched.adoption import replan_note
from lrsched.paths import PathKind
from lrsched.recipes.common import checkpoint as ckpt
from lrsched.recipes.common import skeleton
from lrsched.recipes.common.device import describe_device, precision_text
from lrsched.recipes.common.distributed import World
from lrsched.recipes.common.rundir import Folder
from lrsched.recipes.common.runlog import RunLog, write_json
from lrsched.recipes.common.stopping import StopRequest
from lrsched.recipes.dino import checkpoint, flags, loop, validate
from lrsched.recipes.dino.curves import draw_curves
from lrsched.recipes.dino.evaluation import baselines
from lrsched.recipes.dino.files import DATA_INDEX, read_index_header, write_index
from lrsched.recipes.dino.flags import PROG, PROGRAM_ID
from lrsched.recipes.dino.state import Settings, State

RUN_FILES = (
    "log.csv",
    "metrics.json",
    "plan.json",
    "args.json",
    DATA_INDEX,
    "checkpoints",
    "curves.png",
    "tb",
    "error.log",
)
"""What a phase5 run leaves in its folder (cleared when a run that never saved restarts there)."""


# --- the program's parts, in the skeleton's order ----------------------------------------------


class Phase5(skeleton.Recipe[Settings, State]):
    """phase5_big_run.py's parts of the run skeleton."""

    prog = PROG
    folder = Folder(PROGRAM_ID, RUN_FILES, output_flag="--output-dir", resume_flag="--resume")
    path_flags = (
        ("data_dir", "--data-dir", PathKind.EITHER),  # a folder, or WebDataset shards (recipes/dino/shards.py)
        ("output_dir", "--output-dir", PathKind.FOLDER),
        ("resume", "--resume", PathKind.FILE),
    )

    def parse(self, argv: Sequence[str] | None) -> argparse.Namespace:
        return flags.parse(argv)

    def settle(self, args: argparse.Namespace, world: World, device: torch.device) -> Settings:
        settings = validate.settle(args, world)
        validate.check_fits(settings, device)
        return settings

    def build(self, settings: Settings, world: World, device: torch.device) -> State:
        return loop.build_run(settings, world, device)

    def start(self, run: State) -> None:
        if run.world.is_main:
            run.log = start_outputs(run)

    def train(self, run: State, stop: StopRequest) -> str:
        baselines(run, stop)
        return loop.train(run, stop)

    def save(self, run: State, together: bool = True) -> Path | None:
        return checkpoint.save(run, together)

    def close(self, run: State, status: str) -> None:
        if run.log is not None:
            run.log.close()
            loop.write_metrics(run, status)

    def report(self, run: State, status: str) -> None:
        loop.rank_fingerprints(run)
        if run.log is None:
            return
        self.close(run, status)
        try:
            draw_curves(run.settings.output_dir, run.metrics)
        except ImportError as err:
            print(f"{PROG}: note: curves.png not drawn ({err})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run phase5_big_run.py; the exit status (``recipes/common/exits.py``)."""
    return skeleton.run(Phase5(), argv)


# --- what the run prints and writes first ------------------------------------------------------


def plan_lines(run: State) -> list[str]:
    """The plan as people read it: the LR plan with sources, then DINO's other schedules."""
    sch, total = run.settings.schedules, run.settings.schedules.lr.schedule.total
    wd, m, tt = sch.weight_decay, sch.momentum, sch.teacher_temp
    lines = ["learning rate:", *sch.lr.lines()]
    if run.lr.replanned is not None:
        lines.append(f"  note: --replan {run.lr.replanned}")
    followed = run.followed()  # after --replan, what the run follows from here, not the new flags' schedule
    wd_text = replan_note(followed["weight_decay"], run.t) or _cosine_text(wd.base, wd.final, total)
    m_text = replan_note(followed["momentum"], run.t) or _cosine_text(m.base, m.final, total)
    lines += [
        f"weight decay:     {wd_text}",
        f"teacher momentum: {m_text}",
        f"teacher temp:     {tt.start:g} -> {tt.base:g} over {tt.warmup} steps, then constant",
        f"last layer frozen for the first {sch.freeze_last_layer} steps",
    ]
    return lines


def _cosine_text(start: float, end: float, total: int | None) -> str:
    """How a cosine-scheduled value moves, in the plan's words (an open-ended run holds its start)."""
    if total is None:
        return f"{start:g}, held (open-ended: the cosine to {end:g} needs --max-steps)"
    return f"{start:g} -> {end:g}, cosine to step {total}"


def start_outputs(run: State) -> RunLog:
    """Rank 0, in the claimed folder: write plan.json and args.json (and the data index), print the plan,
    open log.csv."""
    out = run.settings.output_dir
    history = ckpt.history_log(run.settings.resume_path, out)  # before the abandoned future moves
    if run.settings.resume is not None:
        moved = ckpt.set_aside_future(out / "checkpoints", run.t, run.settings.resume_path)
        if moved is not None:
            print(f"{PROG}: checkpoints after step {run.t} (an abandoned future) moved to {moved}")
    write_json(out / "plan.json", checkpoint.plan_json(run))
    write_json(out / "args.json", shared.args_json(run.settings.args))
    data = run.settings.data
    if read_index_header(out / DATA_INDEX) != data.fingerprint():
        write_index(data.fingerprint(), data.listings, out / DATA_INDEX)
    precision = precision_text(run.device, run.settings.args.bf16)
    print(f"{PROG}: {describe_device(run.device)}, {precision}, {run.world.size} process(es), output {out}")
    print("\n".join(plan_lines(run)), flush=True)
    if run.settings.resume is not None:
        print(resume_line(run), flush=True)
    _say_data(run)
    if run.settings.resume is None:
        return RunLog(out, loop.LOG_COLUMNS)
    return RunLog(out, loop.LOG_COLUMNS, resume_step=run.t, history=history)


def resume_line(run: State) -> str:
    """The one line a resumed run prints: ``resume from step N of T`` (``T``: the planned total, or
    ``open-ended``), then ``, replanned at N`` when ``--replan`` adopted a new plan there."""
    total = run.settings.schedules.lr.schedule.total
    line = f"resume from step {run.t} of {'open-ended' if total is None else total}"
    return line + (f", replanned at {run.t}" if run.lr.replanned is not None else "")


def _say_data(run: State) -> None:
    """Rank 0: what the run trains on and evaluates with."""
    data, a = run.settings.data, run.settings.args
    print(f"data: {data.name}, {len(data.train)} training images, {data.channels} channel(s), {a.workers} worker(s)")
    if a.no_knn:
        print("note: k-NN evaluation skipped: --no-knn", flush=True)
    elif data.knn_train is None:
        print(f"note: k-NN evaluation skipped: {data.knn_note}", flush=True)
