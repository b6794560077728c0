"""phase5 trained from shards that make_shards wrote (issue 31 item 4), end to end as a user does it:
Fashion-MNIST images to a folder (``examples/fashion_mnist_folder.py``), the folder to shards (``python -m
lrsched.recipes.dino.make_shards``), then phase5 on the shards with k-NN on their ``.cls`` labels. The run
is the run the folder gives, bit for bit: the same samples in the same order, the same pixels, the same
labels and k-NN split."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import DINO_SMALL, PYTHON, REPO, child_env, read_rows

from lrsched.recipes.common.checkpoint import latest_checkpoint, load_checkpoint
from lrsched.recipes.dino.flags import PROGRAM_ID
from lrsched.recipes.dino.main import main

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs Debian's dataset-fashion-mnist (make data)"
)
FLAGS = [*DINO_SMALL, "--max-steps", "4", "--warmup-steps", "1", "--eval-every", "2", "--workers", "0"]
TIMING = ("images_per_s", "data_wait_s")
"""log.csv columns that measure the machine, not the run."""


def command(*args: str) -> str:
    """A command of the repository run as a user runs it; its stdout (it must succeed)."""
    done = subprocess.run([PYTHON, *args], capture_output=True, text=True, env=child_env(), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def trained(data: str, out: Path) -> tuple[list[dict[str, str]], dict[str, object], dict[str, torch.Tensor]]:
    """phase5 on ``data`` into ``out``: its log without timings, metrics.json, the student's final weights."""
    assert main([*FLAGS, "--data-dir", data, "--output-dir", str(out)]) == 0
    rows = [{k: v for k, v in row.items() if k not in TIMING} for row in read_rows(out / "log.csv")]
    state = load_checkpoint(latest_checkpoint(out / "checkpoints") or out / "none", PROGRAM_ID)
    return rows, json.loads((out / "metrics.json").read_text()), state["student"]


@pytest.mark.slow  # 26 s at load 5
def test_phase5_trains_from_written_shards_as_from_their_folder(tmp_path: Path) -> None:
    images, shards = tmp_path / "images", tmp_path / "shards"
    command("examples/fashion_mnist_folder.py", str(images), "--limit", "300")
    said = command(
        "-m", "lrsched.recipes.dino.make_shards", str(images), f"{shards}/train-%06d.tar", "--max-count", "64"
    )
    pattern = said.strip().rsplit("--data-dir ", 1)[1].strip("'")
    assert pattern == f"{shards}/train-{{000000..000004}}.tar"

    from_shards = trained(pattern, tmp_path / "run-shards")
    from_folder = trained(str(images), tmp_path / "run-folder")

    rows, metrics, weights = from_shards
    header = json.loads((tmp_path / "run-shards/data_index.tsv").read_text().splitlines()[0])
    assert (header["layout"], header["shards"], header["files"]) == ("webdataset", 5, [300])
    assert (metrics["knn_train_samples"], metrics["knn_test_samples"]) == (270, 30)  # every 10th sample held out
    assert isinstance(metrics["knn_top1"], float) and [h[0] for h in metrics["knn_history"]] == [0, 2, 4]
    assert len(rows) == 4
    labels = [
        [line.split("\t")[0] for line in (tmp_path / run / "data_index.tsv").read_text().splitlines()[1:]]
        for run in ("run-shards", "run-folder")
    ]
    assert labels[0] == labels[1] and set(labels[0]) == {str(c) for c in range(10)}  # each .cls is its folder's class
    assert rows == from_folder[0]
    assert {k: metrics[k] for k in ("knn_top1", "knn_top1_at_init", "knn_top1_raw_pixels", "knn_history")} == {
        k: from_folder[1][k] for k in ("knn_top1", "knn_top1_at_init", "knn_top1_raw_pixels", "knn_history")
    }
    assert weights.keys() == from_folder[2].keys()
    assert all(torch.equal(weights[k], from_folder[2][k]) for k in weights)
