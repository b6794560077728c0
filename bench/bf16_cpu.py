"""phase5_big_run.py's training images/s in fp32 and with ``--bf16`` on this CPU, per preset, interleaved.

Usage: ``.venv/bin/python bench/bf16_cpu.py [--rounds 3] [--steps 40]``: ``bench/results/bf16_cpu.{json,md}``.
Each run is a fresh ``phase5_big_run.py`` process on Fashion-MNIST (one torch thread, ``--workers 0``,
``--no-knn``); images/s come from its median step (``metrics.json``). It refuses to start above
1-minute load ``QUIET_LOAD`` (``--allow-load`` runs anyway and says so in the result).
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    REPO_ROOT,
    machine_info,
    markdown_table,
    provenance,
    quantiles,
    spread,
    write_json,
    write_text,
)

QUIET_LOAD = 0.5
PRESETS = {"micro": 64, "tiny": 64}
"""Preset -> batch size (the programs' default batch)."""


def one_run(preset: str, bf16: bool, steps: int, work: Path) -> dict[str, Any]:
    """One phase5 run: its training images/s (median step) and the load before it."""
    out = work / f"{preset}-{'bf16' if bf16 else 'fp32'}-{len(list(work.iterdir()))}"
    cmd = [sys.executable, str(REPO_ROOT / "phase5_big_run.py"), "--preset", preset, "--max-steps", str(steps)]
    cmd += ["--warmup-steps", "5", "--no-knn", "--workers", "0", "--save-every", "0", "--output-dir", str(out)]
    cmd += ["--batch-size", str(PRESETS[preset]), *(["--bf16"] if bf16 else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT / "src")}
    env["LRSCHED_FORCE_BF16"] = "1"  # bf16 even where it is emulated (--bf16 alone runs fp32 there)
    load = round(os.getloadavg()[0], 2)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    import json

    median = json.loads((out / "metrics.json").read_text())["seconds_per_step_median"]
    return {"preset": preset, "bf16": bf16, "images_per_s": PRESETS[preset] / median, "load_before": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--allow-load", action="store_true")
    opts = parser.parse_args()
    load = round(os.getloadavg()[0], 2)
    print(f"1-minute load average: {load}")
    if load > QUIET_LOAD and not opts.allow_load:
        sys.exit(f"bf16_cpu.py: the 1-minute load is {load}, above {QUIET_LOAD}; stop other work or --allow-load")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            one_run(preset, bf16, opts.steps, Path(tmp))
            for _ in range(opts.rounds)
            for preset in PRESETS
            for bf16 in (False, True)
        ]
    for r in runs:
        print(f"{r['preset']} {'bf16' if r['bf16'] else 'fp32'}: {r['images_per_s']:.0f} images/s")
    rows = []
    for preset in PRESETS:
        fp32, bf16 = ([r["images_per_s"] for r in runs if r["preset"] == preset and r["bf16"] == b] for b in (0, 1))
        ratio = quantiles([b / f for f, b in zip(fp32, bf16)])
        rows.append([preset, spread(quantiles(fp32), ".0f"), spread(quantiles(bf16), ".0f"), spread(ratio, ".2f")])
    info, loads = machine_info(("torch",)), [r["load_before"] for r in runs]
    text = (
        "# phase5_big_run.py: fp32 and --bf16 on this CPU\n\n"
        f"Fashion-MNIST, {opts.steps} steps a run, one torch thread, `--workers 0 --no-knn`; {opts.rounds} "
        "interleaved rounds; images/s of the median step; medians, IQR in brackets; bf16 / fp32 paired by round.\n\n"
        + markdown_table(["preset", "fp32 images/s", "bf16 images/s", "bf16 / fp32"], rows, "lrrr")
        + f"\n1-minute load at the start {load}, before each run {min(loads)}-{max(loads)}. {provenance(info)}\n"
    )
    write_text(BENCH_DIR / "results" / "bf16_cpu.md", text)
    write_json(BENCH_DIR / "results" / "bf16_cpu.json", {"runs": runs, "machine": info, "load_at_start": load})
    print(text)


if __name__ == "__main__":
    main()
