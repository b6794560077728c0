"""What a train.py run leaves on disk: best/ loads with from_pretrained, last/ stores the files it shares
with best/ once (hard links), and --save_total_limit bounds the step checkpoints, whatever wrote them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import PYTHON, REPO, TRAIN_ENTRY, child_env

from lrsched.recipes.finetune import loop

from .finetune_helpers import TINY, outputs, run_train

ONE_EPOCH = ["--num_epochs", "1", "--max_train_samples", "16", "--per_device_train_batch_size", "8"]


def disk_bytes(*folders: Path) -> int:
    """Bytes of the files under ``folders``, each file (inode) counted once, as ``du`` does."""
    seen: dict[tuple[int, int], int] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                st = path.stat()
                seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "run"
    assert run_train([*ONE_EPOCH, *TINY, "--output_dir", str(out)]) == 0
    return out


def test_best_loads_with_from_pretrained_and_classifies(one_epoch: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(one_epoch / "best")
    tokenizer = AutoTokenizer.from_pretrained(one_epoch / "best")
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    enc = tokenizer(["what a lovely day", "this is awful"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_last_shares_identical_files_with_best(one_epoch: Path) -> None:
    """Best epoch = the last: last/ holds hard links to best/'s files, the weights stored once."""
    _, _, ev = outputs(one_epoch)
    assert ev["best"]["step"] == 2  # 1 epoch of 2 updates: the only validation is the last
    best, last = one_epoch / "best", one_epoch / "last"
    names = sorted(p.name for p in last.iterdir())
    assert names == sorted(p.name for p in best.iterdir())
    assert "model.safetensors" in names and "config.json" in names
    for name in names:
        assert os.path.samefile(best / name, last / name), name
    weights = (best / "model.safetensors").stat().st_size
    assert weights > 50e6
    assert weights < disk_bytes(best, last) < 1.05 * weights  # the weights once, not twice
    models = {(p.stat().st_dev, p.stat().st_ino) for d in (best, last) for p in d.iterdir()}
    assert len(models) == len(names)  # every file once


def test_resuming_a_finished_run_rewrites_last_without_touching_best(one_epoch: Path) -> None:
    """A second report (latest, in place) writes last/ again: the links are cut first, never written through.

    The report is cut short first (no curves.png), as a kill after the last checkpoint leaves it: a finished
    run with its whole report resumes to "nothing to do" and writes nothing.
    """
    best_bytes = (one_epoch / "best" / "model.safetensors").read_bytes()
    best_inode = (one_epoch / "best" / "model.safetensors").stat().st_ino
    (one_epoch / "curves.png").unlink()
    assert run_train([*ONE_EPOCH, *TINY, "--output_dir", str(one_epoch), "--resume_from_checkpoint", "latest"]) == 0
    assert (one_epoch / "curves.png").is_file()  # the report was done again
    assert (one_epoch / "best" / "model.safetensors").stat().st_ino == best_inode
    assert (one_epoch / "best" / "model.safetensors").read_bytes() == best_bytes
    assert os.path.samefile(one_epoch / "best" / "model.safetensors", one_epoch / "last" / "model.safetensors")


def test_link_identical_links_only_equal_files_and_save_model_cuts_links(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for name, left, right in (
        ("same", b"x" * 100, b"x" * 100),
        ("other", b"x" * 100, b"y" * 100),
        ("size", b"1", b"22"),
    ):
        (a / name).write_bytes(left)
        (b / name).write_bytes(right)
    (a / "only_a").write_bytes(b"z")
    assert loop.link_identical(a, b) == ["same"]
    assert os.path.samefile(a / "same", b / "same")
    assert not os.path.samefile(a / "other", b / "other")
    assert (a / "other").read_bytes() == b"x" * 100 and (a / "only_a").read_bytes() == b"z"
    assert loop.link_identical(a, b) == []  # already one file


def test_save_total_limit_counts_every_step_checkpoint(tmp_path: Path) -> None:
    """Epoch ends, --save_steps and the end of the run all write step checkpoints; K newest are kept."""
    out = tmp_path / "run"
    argv = ["--num_epochs", "2", "--max_train_samples", "16", "--per_device_train_batch_size", "8"]
    extra = ["--max_eval_samples", "8", "--per_device_eval_batch_size", "8", "--disable_tqdm"]
    assert run_train([*argv, *extra, "--save_steps", "1", "--save_total_limit", "2", "--output_dir", str(out)]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000003.pt", "step-00000004.pt"]
    _, _, ev = outputs(out)
    best, last = out / "best", out / "last"
    names = sorted(p.name for p in best.iterdir())
    assert "config.json" in names and "tokenizer.json" in names
    for name in names:
        if name != "model.safetensors":
            assert os.path.samefile(best / name, last / name), name
    assert os.path.samefile(best / "model.safetensors", last / "model.safetensors") == (ev["best"]["step"] == 4)


def test_save_strategy_no_writes_no_checkpoint_but_the_models(tmp_path: Path) -> None:
    """--save_strategy no: no checkpoints/ at all, best/ and last/ as usual, and a stop says nothing can resume."""
    out = tmp_path / "run"
    argv = ["--num_epochs", "2", "--max_train_samples", "16", "--per_device_train_batch_size", "8"]
    extra = ["--max_eval_samples", "8", "--per_device_eval_batch_size", "8", "--disable_tqdm"]
    assert run_train([*argv, *extra, "--save_strategy", "no", "--output_dir", str(out)]) == 0
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    assert (out / "best" / "model.safetensors").is_file() and (out / "last" / "config.json").is_file()
    assert json.loads((out / "args.json").read_text())["save_strategy"] == "no"


def test_the_progress_bar_is_not_drawn_again_below_the_last_validation_line(tmp_path: Path) -> None:
    """The bar ends at its last update; the last validation and the results are printed under it."""
    argv = [*ONE_EPOCH, "--max_eval_samples", "8", "--per_device_eval_batch_size", "8", "--output_dir", str(tmp_path)]
    proc = subprocess.run(
        [PYTHON, str(TRAIN_ENTRY), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # one stream, in the order it was written
        text=True,
        env=child_env(PYTHONUNBUFFERED="1"),
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    last = proc.stdout.rindex("step 2: validation loss")
    assert "2/2 [" in proc.stdout[:last]  # the bar was drawn, complete, before the line
    assert "update" not in proc.stdout[last:], proc.stdout[last:]
