"""Memory flat in the number of images: a run on 20,000 files holds what a run on 2,000 holds.

The folders are generated here as JPEGs of 200-500 px a side. The run crops 64 px global views,
so a program that decoded every image into memory (as phase5_big_run.py did before it streamed)
would hold 20,000 x 3 x 64 x 64 bytes = 246 MB more on the larger folder and fail this test.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import DINO_ENTRY, PYTHON, child_env

from .dino_helpers import make_image_folder

pytestmark = pytest.mark.slow


def peak_rss_mb(images: Path, out: Path) -> float:
    """The largest peak resident memory of the run's processes (MB): the program or any of its data
    workers, as ``wait4`` reports it once they have ended.

    A peak per process, not a sum over the process tree: the workers share torch's pages with the
    main process, and a sum (of RSS or PSS) moved by up to 180 MB with the number of processes
    alive at the moment of sampling, while the main process's peak stays within a few MB."""
    cmd = [PYTHON, str(DINO_ENTRY), "--data-dir", str(images), "--output-dir", str(out), "--workers", "2"]
    cmd += ["--preset", "micro", "--global-size", "64", "--local-size", "32", "--local-crops", "2"]
    cmd += ["--batch-size", "16", "--max-steps", "40", "--warmup-steps", "4", "--eval-every", "0", "--save-every", "0"]
    cmd += ["--knn-train-samples", "500", "--knn-test-samples", "200"]
    with (out.parent / f"{out.name}.err").open("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        assert proc.returncode == 0, err.read()[-3000:]
    return usage.ru_maxrss / 1024


def test_peak_memory_of_a_run_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    small = make_image_folder(tmp_path / "small", 2_000, classes=10)
    large = make_image_folder(tmp_path / "large", 20_000, classes=10, seed=1)
    small_mb = peak_rss_mb(small, tmp_path / "run-small")
    large_mb = peak_rss_mb(large, tmp_path / "run-large")
    print(f"peak RSS of the largest process: 2,000 images {small_mb:.0f} MB, 20,000 images {large_mb:.0f} MB")
    assert large_mb <= 1.10 * small_mb
