"""Tests of the ``lrsched`` command: show, show --json, plot, and bad input."""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lrsched import cli, flags, programs
from lrsched.recipes.dino import plan as phase5_plan
from lrsched.recipes.finetune import plan as train_plan
from lrsched.schedules import Schedule

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# Independent formulas (docs/design.md section 3, note 000), written here from the text, not imported.
def seed000(t: int, base: float, floor: float, warmup: int, total: int) -> float:
    if t < warmup:
        return base * t / warmup
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def linear_decay(t: int, base: float, warmup: int, total: int) -> float:
    if t < warmup:
        return base * t / warmup
    return base * (1 - (t - warmup) / (total - warmup))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def show_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = run(capsys, "show", *argv, "--json")
    assert (code, err) == (0, "")
    data: dict[str, Any] = json.loads(out)
    return data


def key_values(out: str) -> dict[int, float]:
    return {int(s): float(v) for s, v in re.findall(r"step\s+(\d+)\s+lr\s+(\S+)", out)}


def plan_line(out: str, key: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith(key + " "))


# --- show -----------------------------------------------------------------------------------


def test_show_one_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", "--num_epochs", "1", "--steps_per_epoch", "200")
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "plan for train.py"
    assert "constant" in plan_line(out, "shape") and "auto: 1 epoch -> constant" in plan_line(out, "shape")
    assert "3e-05" in plan_line(out, "peak") and "(auto" in plan_line(out, "peak")
    assert "10 steps" in plan_line(out, "warmup") and "5% of 200" in plan_line(out, "warmup")
    assert "200 steps" in plan_line(out, "total") and "1 epoch x 200 updates" in plan_line(out, "total")
    assert "(default)" in plan_line(out, "min_lr")
    assert key_values(out) == pytest.approx({0: 0.0, 9: 2.7e-5, 10: 3e-5, 105: 3e-5, 199: 3e-5, 200: 3e-5})
    assert "┤" in out and "W=10" in out and "T=200" in out


@pytest.mark.parametrize(
    "argv, shape, peak, warmup, cycles",
    [
        (["--num_epochs", "3", "--steps_per_epoch", "100"], "linear", "4e-05", "30 steps", "n/a"),
        (
            ["--num_epochs", "10", "--steps_per_epoch", "100", "--cosine_restarts"],
            "cosine_restarts",
            "5e-05",
            "100",
            "2",
        ),
        (
            ["--num-epochs", "2.5", "--steps-per-epoch", "28", "--scale_lr_for_short_training"],
            "linear",
            "4e-05",
            "4",
            "n/a",
        ),
    ],
)
def test_show_strategy_rows(
    capsys: pytest.CaptureFixture[str], argv: list[str], shape: str, peak: str, warmup: str, cycles: str
) -> None:
    code, out, _ = run(capsys, "show", *argv)
    assert code == 0
    assert plan_line(out, "shape").split()[1] == shape
    assert plan_line(out, "peak").split()[1] == peak
    assert plan_line(out, "warmup").split()[1] == warmup.split()[0]
    if cycles == "n/a":  # a shape without cycles prints no cycles line
        assert not any(line.split()[:1] == ["cycles"] for line in out.splitlines())
    else:
        assert plan_line(out, "cycles").split()[1] == cycles


def test_show_linear_key_steps_follow_formula(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "show", "--num_epochs", "3", "--steps_per_epoch", "100")
    values = key_values(out)
    assert sorted(values) == [0, 29, 30, 165, 299, 300]
    for t, v in values.items():
        assert v == pytest.approx(linear_decay(t, 4e-5, 30, 300), rel=1e-3, abs=1e-12)


def test_show_without_warmup_merges_key_steps(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "show", "--max-steps", "100", "--warmup-steps", "0")
    assert sorted(key_values(out)) == [0, 50, 99, 100]
    assert "W-1" not in out
    assert "┴" not in out


def test_show_open_ended(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "--warmup-steps", "100")
    assert code == 0
    assert out.splitlines()[0] == "plan for phase5_big_run.py"
    assert "open-ended" in plan_line(out, "total")
    assert "note: no --max-steps: holding 0.0005 after warm-up" in out
    values = key_values(out)
    assert sorted(values) == [0, 99, 100, 1100, 1_000_100]
    assert values[1_000_100] == 5e-4
    assert "lr, steps 0..1100:" in out


def test_show_json_phase5_follows_seed_formula(capsys: pytest.CaptureFixture[str]) -> None:
    data = show_json(capsys, "--max-steps", "10000", "--warmup-steps", "2500", "--min-lr", "1e-6", "--lr", "4e-4")
    assert set(data) == {"plan", "lr"}
    plan = data["plan"]
    assert set(plan) == {
        "shape",
        "base_lr",
        "min_lr",
        "warmup_steps",
        "total_steps",
        "cycles",
        "decay_steps",
        "decay_type",
        "sources",
        "notes",
    }
    assert (plan["shape"], plan["base_lr"], plan["min_lr"]) == ("cosine", 4e-4, 1e-6)
    assert (plan["warmup_steps"], plan["total_steps"], plan["cycles"]) == (2500, 10000, None)
    assert plan["sources"]["peak"] == "--lr 0.0004"
    lr = data["lr"]
    assert len(lr) == 10001
    for t, value in enumerate(lr):
        assert value == pytest.approx(seed000(t, 4e-4, 1e-6, 2500, 10000), rel=1e-12, abs=1e-18)
    assert lr[0] == 0.0 and lr[2500] == 4e-4 and lr[-1] == pytest.approx(1e-6)


def test_show_json_train(capsys: pytest.CaptureFixture[str]) -> None:
    data = show_json(capsys, "--num_epochs", "3", "--steps_per_epoch", "100")
    assert data["plan"]["shape"] == "linear"
    assert data["plan"]["sources"]["shape"] == "auto: 3 epochs -> linear"
    assert data["lr"] == pytest.approx([linear_decay(t, 4e-5, 30, 300) for t in range(301)], rel=1e-12, abs=1e-18)


def test_show_json_restarts_cycles(capsys: pytest.CaptureFixture[str]) -> None:
    data = show_json(capsys, "--num_epochs", "10", "--steps_per_epoch", "100", "--lr_strategy", "cosine_restarts")
    assert data["plan"]["cycles"] == 2
    lr = data["lr"]
    # Two decays after the warm-up: a restart to the peak halfway through [100, 1000].
    assert lr[100] == lr[550] == 5e-5
    assert lr[549] < 1e-8 and lr[1000] == 0.0


def test_show_json_open_ended_steps(capsys: pytest.CaptureFixture[str]) -> None:
    data = show_json(capsys, "--warmup-steps", "2000")
    assert data["plan"]["total_steps"] is None
    assert len(data["lr"]) == 2000 + 2000 + 1
    data = show_json(capsys, "--warmup-steps", "10", "--steps", "50")
    assert len(data["lr"]) == 50  # --steps K: K values, lr(0) .. lr(K-1)
    assert len(show_json(capsys, "--warmup-steps", "10", "--steps", "1")["lr"]) == 1
    assert data["lr"][5] == pytest.approx(5e-4 * 5 / 10)
    assert set(data["lr"][10:]) == {5e-4}


def test_max_steps_alone_is_phase5_and_with_epochs_is_train(capsys: pytest.CaptureFixture[str]) -> None:
    assert show_json(capsys, "--max-steps", "1000", "--warmup-steps", "10")["plan"]["shape"] == "cosine"
    data = show_json(capsys, "--max-steps", "1000", "--num_epochs", "2")
    assert data["plan"]["sources"]["total"] == "--max_steps 1000"
    assert data["plan"]["shape"] == "linear" and data["plan"]["warmup_steps"] == 100


# --- plot -----------------------------------------------------------------------------------


def test_plot_compare(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "lr.png"
    argv = ["--num_epochs", "10", "--steps_per_epoch", "100", "--compare", "auto,linear,cosine,cosine_restarts"]
    code, stdout, err = run(capsys, "plot", *argv, "-o", str(out))
    assert (code, err) == (0, "")
    assert "4 curves" in stdout
    data = out.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 10_000


def test_compare_labels() -> None:
    ns = cli.build_parser().parse_args(
        [
            "plot",
            "--num_epochs",
            "10",
            "--steps_per_epoch",
            "100",
            "-o",
            "x.png",
            "--compare",
            "auto,linear,cosine_restarts",
        ]
    )
    plans = cli.compare_plans(ns, ns.compare)
    assert list(plans) == ["auto (cosine)", "linear", "cosine_restarts (2 cycles)"]
    assert [p.shape for p in plans.values()] == ["cosine", "linear", "cosine_restarts"]


def test_plot_single_plan_replaces_existing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "lr.png"
    out.write_bytes(b"old")
    code, stdout, _ = run(capsys, "plot", "--max-steps", "10000", "--warmup-steps", "2500", "-o", str(out))
    assert code == 0 and "1 curve" in stdout
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in tmp_path.iterdir()] == ["lr.png"]


# --- bad input ------------------------------------------------------------------------------

BAD = [
    (["show", "--num_epochs", "0", "--steps_per_epoch", "10"], "--num_epochs"),
    (["show", "--num_epochs", "3", "--steps_per_epoch", "10", "--lr", "1e-4"], "--learning_rate"),
    (["show", "--replan"], "--replan"),
    (["show", "--lr", "nan"], "--lr"),
    (["show", "--lr", "-1"], "--lr"),
    (["show", "--min-lr", "1", "--max-steps", "10", "--warmup-steps", "0"], "--min-lr"),
    (["show", "--warmup-steps", "10", "--max-steps", "10"], "--warmup-steps"),
    (["show", "--lr_strategy", "cosin", "--steps_per_epoch", "10"], "did you mean 'cosine'"),
    (["show", "--num_cycles", "0", "--steps_per_epoch", "10"], "--num_cycles"),
    (["show", "--cosine_restarts", "--lr_strategy", "linear", "--steps_per_epoch", "10"], "--cosine_restarts"),
    (["show", "--num_epochs", "3", "--gradient_accumulation_steps", "5000"], "--gradient_accumulation_steps 5000"),
    (["show", "--num_epochs", "3", "--batch-size", "8"], "--batch-size 8: is phase5_big_run.py's flag"),
    (["show", "--json", "--max-steps", "10000000"], "--every"),
    (["show", "--json", "--warmup-steps", "10000000"], "--every"),
    (["show", "--json", "--steps", "10000001"], "--every"),
    (["show", "--max-steps", "100", "--every", "0"], "--every"),
    (["show", "--steps_per_epoch", "0"], "--steps_per_epoch"),
    (["show", "--max-steps", "100", "--warmup-steps", "5", "--steps", "50"], "--steps"),
    (["show", "--bogus"], "--bogus"),
    (["show", "--warmup_ratio", "1", "--steps_per_epoch", "10"], "--warmup_ratio"),
]


@pytest.mark.parametrize("argv, needle", BAD)
def test_bad_show_input(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("lrsched: error: ")
    assert needle in err
    assert "Traceback" not in err


BAD_PLOT = [
    (["--steps_per_epoch", "10", "--compare", "auto,cosin"], "did you mean 'cosine'"),
    (["--steps_per_epoch", "10", "--compare", "auto,,linear"], "--compare"),
    (["--steps_per_epoch", "10", "--compare", "linear", "--lr_strategy", "cosine"], "--lr_strategy"),
    (["--steps_per_epoch", "10", "--compare", "linear", "--cosine_restarts"], "--cosine_restarts"),
    (["--num_epochs", "0", "--steps_per_epoch", "10"], "--num_epochs"),
    (["--max-steps", "10", "--warmup-steps", "20"], "--warmup-steps"),
    (["--compare", "linear", "--train_file", "/nonexistent/train.csv"], "--train_file"),
]


@pytest.mark.parametrize("argv, needle", BAD_PLOT)
def test_bad_plot_input_leaves_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], needle: str
) -> None:
    out = tmp_path / "lr.png"
    out.write_bytes(b"keep me")
    code, stdout, err = run(capsys, "plot", *argv, "-o", str(out))
    assert (code, stdout) == (2, "")
    assert err.count("\n") == 1 and err.startswith("lrsched: error: ") and needle in err
    assert out.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["lr.png"]


@pytest.mark.parametrize("name", ["missing/lr.png", "lr.txt", "."])
def test_bad_output_path(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> None:
    code, _, err = run(capsys, "plot", "--steps_per_epoch", "10", "-o", str(tmp_path / name))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("lrsched: error: --output ")
    assert list(tmp_path.iterdir()) == []


def test_plot_needs_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plot", "--steps_per_epoch", "10")
    assert code == 2 and "-o/--output" in err and err.count("\n") == 1


def test_no_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == 2
    assert "usage: lrsched" in out + err and "show" in err and "plot" in err


@pytest.mark.parametrize("command", ["show", "plot"])
def test_subcommand_help_lists_every_flag(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    schedule = (*phase5_plan.SCHEDULE_FLAGS, *train_plan.SCHEDULE_FLAGS)
    names = dict.fromkeys((*schedule, "lr_ref_batch", "steps_per_epoch", "steps"))
    for name in names:
        for spelling in flags.spellings(name):
            assert spelling in out, spelling
    assert ("--json" if command == "show" else "--compare") in out


# --- the installed console script ------------------------------------------------------------


def console_script() -> Path:
    path = Path(sys.executable).parent / "lrsched"
    if not path.exists():
        pytest.skip("console script lrsched not installed beside this Python")
    return path


def test_console_script_json() -> None:
    argv = ["show", "--max-steps", "10000", "--warmup-steps", "2500", "--min-lr", "1e-6", "--lr", "4e-4", "--json"]
    proc = subprocess.run([str(console_script()), *argv], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (0, "")
    lr = json.loads(proc.stdout)["lr"]
    assert len(lr) == 10001
    assert lr[6250] == pytest.approx(seed000(6250, 4e-4, 1e-6, 2500, 10000), rel=1e-12)


def test_console_script_bad_input_exit_status() -> None:
    proc = subprocess.run(
        [str(console_script()), "show", "--num_epochs", "-1"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("lrsched: error: ") and proc.stderr.count("\n") == 1


# --- issue 11: long plans in constant memory, and every typed flag used, noted or refused ---


def test_show_json_every_lists_every_nth_step_and_always_t(capsys: pytest.CaptureFixture[str]) -> None:
    data = show_json(capsys, "--max-steps", "20", "--warmup-steps", "2", "--every", "7")
    assert data["steps"] == [0, 7, 14, 20]
    s = Schedule("cosine", base=5e-4, final=1e-6, warmup=2, total=20)
    assert data["lr"] == [s(t) for t in (0, 7, 14, 20)]
    exact = show_json(capsys, "--max-steps", "21", "--warmup-steps", "2", "--every", "7")
    assert exact["steps"] == [0, 7, 14, 21]
    plain = show_json(capsys, "--max-steps", "20", "--warmup-steps", "2")
    assert "steps" not in plain and len(plain["lr"]) == 21


def test_show_json_of_a_billion_steps_with_every(capsys: pytest.CaptureFixture[str]) -> None:
    data = show_json(
        capsys, "--lr", "5e-4", "--warmup-steps", "2500", "--max-steps", "1000000000", "--every", "10000000"
    )
    assert data["steps"][-1] == 10**9 and len(data["lr"]) == 101 and data["lr"][-1] == pytest.approx(1e-6)


def test_a_json_list_past_ten_million_values_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "show", "--json", "--lr", "5e-4", "--warmup-steps", "2500", "--max-steps", "1000000000"
    )
    assert (code, out) == (2, "")
    assert err == (
        "lrsched: error: --json: steps 0..1000000000 are 1,000,000,001 values, more than 10,000,000; "
        "pass --every 1000000 for 1,001 of them\n"
    )


def test_show_text_of_a_trillion_steps_is_quick(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "--max-steps", "1000000000000", "--warmup-steps", "5", "--decay-ratio", "0.1")
    assert code == 0 and "step 900000000000" in re.sub(r"\s+", " ", out)


def _peak_rss_mb(argv: list[str]) -> float:
    """The peak resident memory of ``python -m lrsched.cli ARGV``, read in a fresh parent process."""
    from helpers import child_env

    probe = (
        "import resource, subprocess, sys; "
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "lrsched.cli", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=600, check=True)
    code, kib = done.stdout.split()
    assert code in ("0", "2"), done.stderr
    return int(kib) / 1024


def test_peak_memory_of_lrsched_show_is_small_and_independent_of_t() -> None:
    """Issue 11: 22.5 GB for a 10^9-step ``--json``; now every ``show`` stays under 200 MB."""
    billion = ["show", "--json", "--lr", "5e-4", "--warmup-steps", "2500", "--max-steps", "1000000000"]
    commands = {
        "small json": ["show", "--json", "--max-steps", "1000", "--warmup-steps", "10"],
        "2e6 values streamed": ["show", "--json", "--max-steps", "2000000", "--warmup-steps", "10"],
        "1e9 refused": billion,
        "1e9 --every": [*billion, "--every", "1000"],
        "1e9 text": billion[:1] + billion[2:],
        "open-ended, huge warm-up": ["show", "--json", "--warmup-steps", "1000000000"],
        "train.py sized from its data": ["show", "--num_epochs", "3", "--bf16"],
    }
    peaks = {name: _peak_rss_mb(argv) for name, argv in commands.items()}
    assert max(peaks.values()) < 200, peaks
    assert peaks["2e6 values streamed"] < peaks["small json"] + 20, peaks  # no list of T values


def test_typed_flags_that_change_nothing_get_notes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "--max-steps", "10000", "--num_cycles", "3")
    assert code == 0 and "note: --num_cycles 3 changes nothing: only cosine_restarts has cycles" in out
    code, out, _ = run(capsys, "show", "--num_epochs", "3", "--steps_per_epoch", "100", "--max-steps", "500")
    assert code == 0 and "note: not used: --steps_per_epoch 100; --max_steps 500 sets the total" in out


def test_a_pasted_train_py_command_line_is_sized_as_train_py_sizes_it(capsys: pytest.CaptureFixture[str]) -> None:
    from lrsched.recipes.common.distributed import World
    from lrsched.recipes.finetune.flags import parse
    from lrsched.recipes.finetune.validate import settle

    typed = "--num_epochs 3 --max_train_samples 1280 --max_eval_samples 512 --bf16 --gradient_accumulation_steps 2"
    typed += " --output_dir runs/x --seed 3 --per_device_train_batch_size 16 --disable_tqdm"
    code, out, err = run(capsys, "show", *typed.split())
    assert (code, err) == (0, "")
    settled = settle(parse(typed.split()), World())  # what train.py itself resolves from the same line
    assert settled.plan.schedule.total == 3 * settled.updates_per_epoch
    assert plan_line(out, "total").split()[1] == str(settled.plan.schedule.total)
    assert "1280 training examples, batch 16, accumulation 2, 1 process" in out
    assert (
        "not used for train.py's LR plan: --max_eval_samples 512, --seed 3, --output_dir runs/x, --bf16, --disable_tqdm"
        in out
    )


def test_a_pasted_phase5_command_line_is_accepted_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    typed = "--max-steps 1000 --warmup-steps 100 --lr 1e-3 --batch-size 32 --preset tiny --bf16"
    typed += " --global-crops-scale 0.4 1 --koleo-weight 0.1 --output-dir runs/d --resume latest"
    code, out, err = run(capsys, "show", *typed.split())
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == "plan for phase5_big_run.py"
    note = next(line for line in out.splitlines() if "not used for" in line)
    for piece in ("--batch-size 32", "--preset tiny", "--bf16", "--global-crops-scale 0.4 1.0", "--resume latest"):
        assert piece.replace(" 1.0", " 1") in note, piece


def test_show_and_compare_wsd(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "show", "--max-steps", "1000", "--warmup-steps", "100", "--decay-ratio", "0.2")
    assert code == 0 and "decay starts (T-D)" in out and plan_line(out, "shape").split()[1] == "wsd"
    assert key_values(out)[800] == pytest.approx(5e-4) and key_values(out)[900] == pytest.approx(0.5 * (5e-4 + 1e-6))
    code, out, _ = run(
        capsys,
        "plot",
        "--num_epochs",
        "3",
        "--steps_per_epoch",
        "50",
        "--compare",
        "auto,wsd",
        "-o",
        str(tmp_path / "c.png"),
    )
    assert code == 0 and (tmp_path / "c.png").read_bytes().startswith(PNG_SIGNATURE)


def _phase5_parser() -> argparse.ArgumentParser:
    """phase5_big_run.py's parser, wherever the program keeps it (it is moving to recipes/dino/flags.py)."""
    import importlib

    for module in ("lrsched.recipes.dino.flags", "lrsched.recipes.dino.pretrain"):
        try:
            build = getattr(importlib.import_module(module), "build_parser", None)
        except ImportError:
            continue
        if build is not None:
            parser: argparse.ArgumentParser = build()
            return parser
    raise AssertionError("no build_parser for phase5_big_run.py")


def _other_flags(parser: argparse.ArgumentParser) -> dict[str, int]:
    return {
        a.dest: 0 if a.nargs == 0 else (a.nargs if isinstance(a.nargs, int) else 1)
        for a in parser._actions
        if a.option_strings and a.dest != "help" and a.dest not in flags.FLAGS
    }


def _shown_flags(program: programs.Program) -> dict[str, int]:
    """What ``lrsched show`` reads of a program besides lrsched's flag table (``--steps_per_epoch`` is its own)."""
    own = {n: 1 for n in program.flags if n != "steps_per_epoch"}
    return {**own, **program.other_flags}


def test_the_other_flag_tables_match_the_programs() -> None:
    """``lrsched show`` accepts exactly the programs' flags: a flag added to a program must be added to
    its ``plan.py`` (``OTHER_FLAGS``) too."""
    from lrsched.recipes.finetune.flags import build_parser as train_parser

    train = train_parser()
    assert _other_flags(train) == _shown_flags(train_plan.PROGRAM)
    assert _other_flags(_phase5_parser()) == _shown_flags(phase5_plan.PROGRAM)
    defaults = {a.dest: a.default for a in train._actions}
    types = {a.dest: a.type for a in train._actions}
    for name, default in train_plan.RUN_SIZE_DEFAULTS.items():
        assert defaults[name] == default, name
    for name, kwargs in train_plan.RUN_SIZE.items():
        assert kwargs.get("type") == types[name], name


def test_lr_ref_batch_scales_the_peak_by_the_typed_batch_as_phase5_does(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["show", "--lr", "1e-3", "--lr-ref-batch", "256", "--batch-size", "128", "--max-steps", "5000"]) == 0
    )
    out = capsys.readouterr().out
    assert "peak    0.0005           (--lr 0.001 x 128/256 (global batch / --lr-ref-batch))" in out
    assert "not used" not in out  # --batch-size sized the peak
    assert cli.main(["show", "--lr", "1e-3", "--lr-ref-batch", "256", "--max-steps", "5000"]) == 0
    assert "(--lr 0.001 x 64/256 (global batch / --lr-ref-batch))" in capsys.readouterr().out


# --- issue 23: --warmup-ratio for phase5's plan, --scale_lr_for_short_training's note ---


def test_show_takes_phase5_warmup_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    data = show_json(capsys, "--warmup-ratio", "0.07", "--max-steps", "100")
    assert data["plan"]["warmup_steps"] == 7 and data["plan"]["shape"] == "cosine"
    assert data["plan"]["sources"]["warmup"] == "--warmup-ratio 0.07: 7% of 100"
    assert data["lr"][7] == pytest.approx(5e-4) and data["lr"][6] == pytest.approx(5e-4 * 6 / 7)
    train = show_json(capsys, "--warmup_ratio", "0.07", "--steps_per_epoch", "100", "--num_epochs", "1")
    assert train["plan"]["warmup_steps"] == 7 and train["plan"]["shape"] == "constant"  # train.py's plan


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--warmup-ratio", "0.1"], "lrsched: error: --warmup-ratio 0.1: needs --max-steps"),
        (["--warmup-ratio", "0.1", "--warmup-steps", "5", "--max-steps", "100"], "not both"),
        (["--max-steps", "1000"], "must be less than --max-steps 1000; or give the warm-up as a fraction of it"),
    ],
)
def test_show_refuses_a_bad_phase5_warmup_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "show", *argv)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_show_notes_that_scale_lr_changes_nothing_at_one_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("show", "--num_epochs", "1", "--steps_per_epoch", "100", "--scale_lr_for_short_training")
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "note: --scale_lr_for_short_training changes nothing at 1 epoch: it scales only an explicit" in out


# --- issue 22: the texts a newcomer stumbled on ---------------------------------------------------


def test_counts_of_one_are_singular(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "--num_epochs", "1", "--steps_per_epoch", "1", "--warmup_steps", "0")
    assert code == 0
    assert plan_line(out, "total").split() == ["total", "1", "step", "(1", "epoch", "x", "1", "update)"]
    assert plan_line(out, "shape").endswith("(auto: 1 epoch -> constant)")
    assert plan_line(out, "warmup").split()[1:3] == ["0", "steps"]
    _, out, _ = run(capsys, "show", "--max-steps", "2", "--warmup-steps", "1", "--every", "1")
    assert "lr every 1 step:" in out and "1 steps" not in out
    _, out, err = run(capsys, "show", "--num_epochs", "1", "--steps_per_epoch", "1")
    assert "gives 1 warm-up step, must be fewer than the 1 total step;" in err


def test_a_plan_without_cycles_prints_no_cycles_line(capsys: pytest.CaptureFixture[str]) -> None:
    """ "cycles n/a (auto: 3 epochs -> 1)" named a source for a value the plan does not have."""
    _, out, _ = run(capsys, "show", "--num_epochs", "3", "--steps_per_epoch", "100")
    assert "cycles" not in out
    data = show_json(capsys, "--num_epochs", "3", "--steps_per_epoch", "100")
    assert data["plan"]["cycles"] is None
    assert data["plan"]["sources"]["cycles"] == "n/a: only cosine_restarts has cycles"
    _, out, _ = run(capsys, "show", "--num_epochs", "3", "--steps_per_epoch", "100", "--lr_strategy", "cosine_restarts")
    assert plan_line(out, "cycles").split()[1:] == ["1", "(auto:", "3", "epochs", "->", "1)"]


@pytest.mark.parametrize(
    "argv, label",
    [
        (["--num_epochs", "1", "--steps_per_epoch", "200"], "mid-run, peak held"),
        (
            ["--num_epochs", "10", "--steps_per_epoch", "100", "--cosine_restarts"],
            "restart: cycle 2 starts at the peak",
        ),
        (["--num_epochs", "3", "--steps_per_epoch", "100", "--lr_strategy", "cosine_restarts"], "mid-decay"),
        (["--num_epochs", "3", "--steps_per_epoch", "100", "--lr_strategy", "linear"], "mid-decay"),
    ],
)
def test_the_middle_key_step_is_labelled_by_what_it_is(
    capsys: pytest.CaptureFixture[str], argv: list[str], label: str
) -> None:
    _, out, _ = run(capsys, "show", *argv)
    middle = [line for line in out.splitlines() if line.startswith("  step ")][3]
    assert middle.split(maxsplit=4)[4].strip() == label


def test_the_restart_peak_is_at_the_peak() -> None:
    schedule = Schedule("cosine_restarts", base=5e-5, final=0.0, warmup=100, total=1000, cycles=2.0)
    assert schedule(550) == 5e-5 and cli.middle_label(schedule, 550) == "restart: cycle 2 starts at the peak"
    assert cli.middle_label(schedule, 325) == "mid-decay of cycle 1"


def test_an_open_ended_plan_says_it_holds_the_peak(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "show", "--lr", "5e-4")
    assert plan_line(out, "shape").strip() == "shape   constant         (open-ended: cosine needs --max-steps)"
    data = show_json(capsys, "--lr", "5e-4")
    assert (data["plan"]["shape"], data["plan"]["total_steps"]) == ("cosine", None)  # the shape asked for
    _, out, _ = run(capsys, "show", "--decay-ratio", "0.2")
    assert "constant         (open-ended: wsd needs --max-steps)" in plan_line(out, "shape")
    _, out, _ = run(capsys, "show", "--max-steps", "100", "--warmup-steps", "10")
    assert plan_line(out, "shape").split()[1] == "cosine"


def test_phase5_help_states_only_its_own_defaults() -> None:
    text = _phase5_parser().format_help()
    assert "train.py" not in text
    squeezed = " ".join(text.split())
    assert "floor at the end of the decay (default 1e-6)" in squeezed
    assert "linear warm-up steps from 0 to the peak (default 2500)" in squeezed
