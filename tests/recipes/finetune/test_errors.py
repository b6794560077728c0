"""Bad input to train.py: one line naming the flag and the rule, exit status 2, nothing created."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrsched.recipes.common.checkpoint import save_checkpoint

from .finetune_helpers import TINY, run_train, run_train_subprocess

SMALL = ["--num_epochs", "1", "--max_train_samples", "32", "--per_device_train_batch_size", "8", *TINY]


def test_subprocess_error_is_one_line_exit_2_no_traceback(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_train_subprocess([*SMALL, "--model", str(tmp_path / "missing"), "--output_dir", str(out)])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"train.py: error: --model {tmp_path / 'missing'}: no such directory (a local Hugging Face model directory)"
    ]
    assert proc.stdout == "" and not out.exists()


def csv_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CASES: list[tuple[str, list[str], str]] = [
    ("no-model-config", ["--model", "{tmp}"], "--model {tmp}: not a Hugging Face model directory (no config.json)"),
    ("missing-train-file", ["--train_file", "{tmp}/nope.csv"], "--train_file {tmp}/nope.csv: no such file"),
    ("no-label-column", ["--train_file", "{tmp}/nolabel.csv"], "no column 'label' (--label_column)"),
    (
        "renamed-columns-ok-but-unknown-validation-label",
        ["--train_file", "{tmp}/good.csv", "--validation_file", "{tmp}/badval.csv"],
        "--validation_file {tmp}/badval.csv: label 'maybe'",
    ),
    ("accumulation", ["--gradient_accumulation_steps", "5"], "--gradient_accumulation_steps 5: larger than the 4"),
    ("warmup", ["--warmup_steps", "4"], "--warmup_steps 4: gives 4 warm-up steps, must be fewer than the 4"),
    ("legacy-conflict", ["--cosine_restarts", "--lr_strategy", "linear"], "--cosine_restarts: conflicts"),
    ("strategy-typo", ["--lr_strategy", "cosin"], "did you mean 'cosine'?"),
    ("nan-lr", ["--learning_rate", "nan"], "--learning_rate"),
    ("missing-checkpoint", ["--resume_from_checkpoint", "{tmp}/x.pt"], "{tmp}/x.pt: no such checkpoint file"),
    ("junk-checkpoint", ["--resume_from_checkpoint", "{tmp}/junk.pt"], "not a loadable checkpoint"),
    ("foreign-checkpoint", ["--resume_from_checkpoint", "{tmp}/dino.pt"], "a checkpoint of 'phase5_big_run.py'"),
    ("latest-without-run", ["--resume_from_checkpoint", "latest"], "latest: no checkpoint under"),
    ("device", ["--device", "quantum"], "--device quantum"),
]


@pytest.mark.parametrize(("name", "flags", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, flags: list[str], message: str
) -> None:
    csv_file(tmp_path / "nolabel.csv", "text,sentiment\nhello,pos\n")
    csv_file(tmp_path / "good.csv", "text,label\n" + "".join(f"t{i},{'yes' if i % 2 else 'no'}\n" for i in range(40)))
    csv_file(tmp_path / "badval.csv", "text,label\nv1,yes\nv2,maybe\n")
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    save_checkpoint({"step": 3}, tmp_path / "dino.pt", "phase5_big_run.py")
    out = tmp_path / "out"
    argv = [*SMALL, *(f.format(tmp=tmp_path) for f in flags), "--output_dir", str(out)]
    assert run_train(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), lines
    assert message.format(tmp=tmp_path) in lines[0]
    assert not out.exists()


def test_an_existing_run_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "log.csv").write_text("step,epoch,lr,loss\n0,1,0.0,1.0\n")
    assert run_train([*SMALL, "--output_dir", str(out)]) == 2
    assert "holds files of a run without run.json (log.csv" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["log.csv"]
    assert (out / "log.csv").read_text() == "step,epoch,lr,loss\n0,1,0.0,1.0\n"
