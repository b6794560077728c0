"""Bad input, from the table in fault_cases.py: exit 2, one line naming the flag, nothing written.

Each case runs the program's ``main(argv)`` in this process twice: once with an output folder
that does not exist (it must not be created) and once with an output folder that holds a
sentinel file (it must be left byte for byte as it was). The working directory is an empty
scratch folder that must stay empty (no default ``runs/...`` folder either). A few cases run the
real entry points as subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fault_cases import CASES, DINO_FLAGS, SHOW_FLAGS, TRAIN_FLAGS, Case
from fault_helpers import DINO, DINO_SMALL, TRAIN, TRAIN_SMALL, call_main, tree
from helpers import PYTHON, REPO, child_env

from lrsched.recipes.common.checkpoint import save_checkpoint
from lrsched.recipes.common.rundir import Folder, claim_run_dir

SENTINEL = b"sentinel: must survive every refused command\n"


def _csv(n: int) -> str:
    return "text,label\n" + "".join(f"tweet number {i} about {'cats' if i % 2 else 'dogs'},{i % 2}\n" for i in range(n))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared broken inputs: files, folders, links."""
    from PIL import Image

    d = tmp_path_factory.mktemp("inputs")
    (d / "good.csv").write_text(_csv(40))
    (d / "nolabel.csv").write_text("text,sentiment\nhello,pos\nbye,neg\n")
    (d / "badlabel.csv").write_text("text,label\nv1,0\nv2,maybe\n")
    (d / "zero.csv").write_text("")
    (d / "junk.jsonl").write_text('{"text": "a", "label": 0}\nthis is not json\n')
    (d / "binary.csv").write_bytes(os.urandom(4096))
    (d / "zero.pt").write_bytes(b"")
    (d / "junk.pt").write_bytes(os.urandom(2048))
    (d / "dangling.pt").symlink_to(d / "nowhere")
    (d / "empty").mkdir()
    (d / "fake_images").mkdir()
    for i in range(4):
        (d / "fake_images" / f"img{i}.png").write_bytes(b"not a png " * 10)
    (d / "images").mkdir()
    for i in range(6):
        Image.new("L", (16, 16), color=i * 40).save(d / "images" / f"img{i}.png")
    (d / "badmodel").mkdir()
    (d / "badmodel" / "config.json").write_text("{ not json")
    (d / "oldrun").mkdir()
    (d / "oldrun" / "log.csv").write_text("step,epoch,lr,loss\n0,1,0.0,1.0\n")
    save_checkpoint({"step": 1}, d / "other.pt", "someone-else")
    (d / "loop1").symlink_to(d / "loop2")
    (d / "loop2").symlink_to(d / "loop1")
    (d / "onelabel.csv").write_text("text,label\n" + "".join(f"text {i},same\n" for i in range(20)))
    rows = [{"text": f"t {i}", "label": ["a"] if i == 3 else str(i % 2)} for i in range(20)]
    (d / "listlabel.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ckpt = save_checkpoint({"step": 1, "w": torch.arange(50_000.0)}, d / "zeroed.pt", "train.py")
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    ckpt.write_bytes(bytes(data))
    torch.save({"format": 1, "program": "train.py", "step": 1}, d / "format1.pt")
    with claim_run_dir(d / "otherrun", Folder("train.py", ("checkpoints",))) as rd:
        save_checkpoint({"step": 1}, d / "otherrun" / "checkpoints" / "step-00000001.pt", "train.py", run_id=rd.run_id)
    return d


def base_argv(program: str, out: Path, inputs: Path) -> list[str]:
    """A command line that would run (briefly) if the case's arguments were not there."""
    if program == "phase5_big_run.py":
        return [*DINO_SMALL, "--max-steps", "4", "--warmup-steps", "1", "--output-dir", str(out)]
    if program == "train.py":
        train = ["--train_file", str(inputs / "good.csv"), "--num_epochs", "1", "--max_train_samples", "16"]
        return [*train, "--per_device_train_batch_size", "4", *TRAIN_SMALL, "--output_dir", str(out)]
    if program == "lrsched show":
        return ["show", "--max-steps", "100", "--warmup-steps", "10"]
    return ["plot", "--max-steps", "100", "--warmup-steps", "10", "-o", str(out / "lr.png")]


def expand(case: Case, out: Path, inputs: Path) -> list[str]:
    return [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in case.args]


def spellings(flag: str) -> set[str]:
    """Both spellings of a flag; ``-o`` is ``--output``."""
    if flag in ("-o", "--output"):
        return {"-o", "--output"}
    return {flag, flag.replace("_", "-"), "--" + flag[2:].replace("-", "_")}


def check_refusal(case: Case, status: int, stdout: str, stderr: str, out: Path, inputs: Path, sentinel: bool) -> None:
    prog = case.program.split()[0] if case.program.startswith("lrsched") else case.program
    lines = stderr.strip().splitlines()
    assert status == 2, f"exit {status}; stderr: {stderr[-2000:]}"
    assert "Traceback" not in stderr
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {lines}"
    line = lines[0]
    assert line.startswith(f"{prog}: error: "), line
    if sentinel and "already holds a run" in line:  # phase5 refuses any non-empty output folder first
        assert "--output-dir" in line
    elif not sentinel and case.program == "lrsched plot" and "does not exist" in line:  # -o's folder comes first
        assert line.startswith(f"lrsched: error: --output {out}/")
    else:
        assert any(s in line for s in spellings(case.flag)), f"{case.flag} not named in: {line}"
        needle = case.names.replace("{in}/", "") if case.names else case.args[-1]
        assert needle.lower() in line.lower(), f"{needle!r} not named in: {line}"
    assert stdout == "" or case.program.startswith("lrsched"), f"printed before refusing: {stdout[:300]}"


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory that must stay empty."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd
    assert list(cwd.iterdir()) == [], "the refused command wrote into the working directory"


def _params() -> list[object]:
    """Every case with a missing output folder; with a sentinel folder too, the value cases
    (generated per rule, parsed before any file is looked at) only in the slow run."""
    out = []
    for case in CASES:
        out.append(pytest.param(case, "missing", id=f"{case.id}-missing"))
        marks = [pytest.mark.slow] if case.generated else []
        out.append(pytest.param(case, "sentinel", id=f"{case.id}-sentinel", marks=marks))
    return out


@pytest.mark.parametrize(("case", "mode"), _params())
def test_refused(case: Case, mode: str, inputs: Path, scratch: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    if mode == "sentinel":
        out.mkdir()
        (out / "sentinel.txt").write_bytes(SENTINEL)
    before, inputs_before = tree(out), tree(inputs)
    argv = [*base_argv(case.program, out, inputs), *expand(case, out, inputs)]
    status, stdout, stderr = call_main(case.program, argv)
    check_refusal(case, status, stdout, stderr, out, inputs, mode == "sentinel")
    assert tree(out) == before, "the output folder changed"
    assert out.exists() == (mode == "sentinel"), "a missing output folder was created"
    assert tree(inputs) == inputs_before, "an input was changed"


def _dests(parser: object) -> set[str]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    return {a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"}


def test_the_table_covers_every_flag() -> None:
    """Every flag of each parser has at least one bad-input case (a new flag must add its rows)."""
    from lrsched.cli import build_parser as cli_parser
    from lrsched.recipes.dino.flags import build_parser as dino_parser
    from lrsched.recipes.finetune.flags import build_parser as train_parser

    sub = next(a for a in cli_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    parsers = {
        "phase5_big_run.py": dino_parser(),
        "train.py": train_parser(),
        "lrsched show": sub.choices["show"],  # type: ignore[attr-defined]
        "lrsched plot": sub.choices["plot"],  # type: ignore[attr-defined]
    }
    for program, parser in parsers.items():
        covered = {s for c in CASES if c.program == program for s in spellings(c.flag)}
        missing = sorted(f for f in _dests(parser) if not spellings(f) & covered)
        assert missing == [], f"{program}: no bad-input case for {missing}"
    assert set(DINO_FLAGS) and set(TRAIN_FLAGS) and set(SHOW_FLAGS)


SLOW = pytest.mark.slow
SUBPROCESS_CASES = [
    pytest.param(DINO, ["--lr", "nan"], "--lr", id="dino --lr nan"),
    pytest.param(DINO, ["--resume", "{in}/junk.pt"], "junk.pt", id="dino --resume junk.pt", marks=SLOW),
    pytest.param(TRAIN, ["--num_epochs", "0"], "--num_epochs", id="train --num_epochs 0"),
    pytest.param(TRAIN, ["--train_file", "{in}/missing.csv"], "missing.csv", id="train --train_file", marks=SLOW),
    pytest.param(None, ["show", "--max-steps", "10", "--warmup-steps", "10"], "--warmup-steps", id="show"),
    pytest.param(None, ["plot", "--max-steps", "10", "-o", "{out}/x.txt"], "x.txt", id="plot", marks=SLOW),
]


@pytest.mark.parametrize(("entry", "args", "needle"), SUBPROCESS_CASES)
def test_real_entry_points_refuse(
    entry: Path | None, args: list[str], needle: str, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "sentinel.txt").write_bytes(SENTINEL)
    args = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in args]
    if entry is DINO:
        cmd = [PYTHON, str(DINO), *DINO_SMALL, "--max-steps", "4", "--warmup-steps", "1", *args]
    elif entry is TRAIN:
        cmd = [PYTHON, str(TRAIN), *TRAIN_SMALL, *args, "--output_dir", str(out / "run")]
    else:
        cmd = [PYTHON, "-m", "lrsched.cli", *args]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=cwd, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and needle in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert tree(out) == {"sentinel.txt": SENTINEL}
    assert list(cwd.iterdir()) == []
    assert REPO.is_dir()
