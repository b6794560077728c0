"""Memory flat in the number of images: a run on 20,000 files holds what a run on 2,000 holds.

The folders are generated here as JPEGs of 200-500 px a side. The run crops 64 px global views,
so a program that decoded every image into memory (as phase5_big_run.py did before it streamed)
would hold 20,000 x 3 x 64 x 64 bytes = 246 MB more on the larger folder and fail this test.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from helpers import DINO_ENTRY, PYTHON, child_env

from .dino_helpers import make_image_folder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs /proc/<pid>/smaps_rollup"),
]


def tree_pss_kb(pid: int) -> int:
    """Proportional memory (PSS, kB) of ``pid`` and all its descendants, from /proc.

    PSS counts a page shared by n processes as 1/n in each, so the sum is the memory the tree
    really holds: the data workers' shared copies of torch do not count once per worker (a sum
    of RSS moved by hundreds of MB with the number of workers alive at the moment of sampling)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total


def peak_pss_mb(images: Path, out: Path) -> float:
    cmd = [PYTHON, str(DINO_ENTRY), "--data-dir", str(images), "--output-dir", str(out), "--workers", "2"]
    cmd += ["--preset", "micro", "--global-size", "64", "--local-size", "32", "--local-crops", "2"]
    cmd += ["--batch-size", "16", "--max-steps", "40", "--warmup-steps", "4", "--eval-every", "0", "--save-every", "0"]
    cmd += ["--knn-train-samples", "500", "--knn-test-samples", "200"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env())
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_pss_kb(proc.pid))
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    return peak / 1024


def test_peak_memory_of_a_run_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    small = make_image_folder(tmp_path / "small", 2_000, classes=10)
    large = make_image_folder(tmp_path / "large", 20_000, classes=10, seed=1)
    small_mb = peak_pss_mb(small, tmp_path / "run-small")
    large_mb = peak_pss_mb(large, tmp_path / "run-large")
    print(f"peak PSS (process tree): 2,000 images {small_mb:.0f} MB, 20,000 images {large_mb:.0f} MB")
    assert large_mb <= 1.10 * small_mb
