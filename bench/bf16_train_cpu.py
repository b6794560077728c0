"""train.py's seconds per update in fp32 and with ``--bf16`` forced (``LRSCHED_FORCE_BF16=1``) on this CPU.

Usage: ``.venv/bin/python bench/bf16_train_cpu.py``: three runs one after the other (fp32, forced
bf16, fp32 again) of ``train.py --num_epochs 1 --max_train_samples 128 --max_eval_samples 16
--max_steps 3 --save_strategy no`` (batch 32), each update's seconds from its ``log.csv``, and the
CPU's kind and the load before each run, to ``bench/results/bf16_train_cpu.json``. On a CPU without
native bf16 (no ``avx512_bf16``/``amx_bf16``) ``--bf16`` alone runs fp32, hence the forcing.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--num_epochs", "1", "--max_train_samples", "128", "--max_eval_samples", "16", "--max_steps", "3"]
ARGS += ["--save_strategy", "no", "--disable_tqdm"]
OUT = REPO / "bench" / "results" / "bf16_train_cpu.json"


def one_run(arm: str, work: Path) -> dict[str, object]:
    env = dict(os.environ)
    extra = []
    if arm == "bf16":
        env["LRSCHED_FORCE_BF16"], extra = "1", ["--bf16"]
    load = os.getloadavg()[0]
    out = work / arm
    cmd = [sys.executable, str(REPO / "train.py"), *ARGS, *extra, "--output_dir", str(out)]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=3 * 3600)
    with (out / "log.csv").open() as fh:
        seconds = [float(r["seconds"]) for r in csv.DictReader(fh)]
    return {"arm": arm, "seconds_per_update": seconds, "median": statistics.median(seconds), "load_before": load}


def main() -> None:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    native = sorted(f for f in ("avx512_bf16", "amx_bf16") if f in info.split())
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_run(arm, Path(tmp)) for arm in ("fp32", "bf16", "fp32")]
    result = {"cpu": model, "native_bf16_flags": native, "args": ARGS, "runs": runs}
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
