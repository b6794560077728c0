"""The README's train.py headline, from the command docs/train.md gives: its results file and figure.

Usage: ``.venv/bin/python bench/readme_run.py`` runs
``python train.py --num_epochs 3 --max_train_samples 1280 --max_eval_samples 512 --output_dir runs/readme-3ep``
(several CPU minutes), then writes ``docs/figures/train_3ep.json`` (the plan, each validation, the
best, the test, the majority baseline, the median seconds per update, the machine) and copies the
run's ``curves.png`` to ``docs/figures/train_3ep_curves.png``. ``--from DIR`` takes a finished run of
that command instead of running it (its ``args.json`` is checked to be that command's).
tests/test_readme.py checks that README.md and docs/train.md say what the JSON file holds.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["--num_epochs", "3", "--max_train_samples", "1280", "--max_eval_samples", "512"]
OUTPUT = REPO / "runs" / "readme-3ep"
RESULTS = REPO / "docs" / "figures" / "train_3ep.json"
FIGURE = REPO / "docs" / "figures" / "train_3ep_curves.png"
EXPECTED_ARGS = {"num_epochs": 3, "max_train_samples": 1280, "max_eval_samples": 512}


def run_command(output: Path) -> None:
    argv = [sys.executable, str(REPO / "train.py"), *COMMAND, "--output_dir", str(output), "--disable_tqdm"]
    if output.exists():
        argv.append("--overwrite_output_dir")
    subprocess.run(argv, check=True, cwd=REPO, timeout=4 * 3600)


def cpu_kind() -> str:
    """The CPU's model name and whether it has native bf16 (the flags docs/train.md names)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    native = sorted({flag for flag in ("avx512_bf16", "amx_bf16") if flag in info.split()})
    return f"{model}, {', '.join(native) if native else 'no avx512_bf16/amx_bf16'}"


def results(run: Path, commit: str | None) -> dict[str, Any]:
    args = json.loads((run / "args.json").read_text())
    wrong = {k: args.get(k) for k, v in EXPECTED_ARGS.items() if args.get(k) != v}
    if wrong:
        sys.exit(f"readme_run.py: {run} is not the README's command: {wrong}")
    evals = json.loads((run / "eval.json").read_text())
    plan = json.loads((run / "plan.json").read_text())
    with (run / "log.csv").open() as fh:
        rows = [line.split(",") for line in fh.read().splitlines()[1:]]
    seconds = [float(r[-1]) for r in rows]
    return {
        "command": "python train.py " + " ".join(COMMAND) + " --output_dir runs/readme-3ep",
        "plan": {k: plan[k] for k in ("shape", "base_lr", "warmup_steps", "total_steps")},
        "validation": [
            {k: h[k] for k in ("epoch", "step", "loss", "accuracy", "macro_f1")} for h in evals["validation"]
        ],
        "best": {k: evals["best"][k] for k in ("epoch", "step")},
        "test": {k: evals["test"][k] for k in ("loss", "accuracy", "macro_f1")},
        "majority_baseline_test": evals["majority_baseline"]["test"],
        "seconds_per_update_median": statistics.median(seconds),
        "updates": len(seconds),
        "machine": f"{cpu_kind()}; torch threads as the program chose; other jobs may have shared it",
        "commit": commit or "not recorded (an existing run folder, --from)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="run", type=Path, help="a finished run of the command (default: run it)")
    ns = parser.parse_args()
    run, commit = ns.run, None
    if run is None:
        run = OUTPUT
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
        run_command(run)
    RESULTS.write_text(json.dumps(results(run, commit), indent=2) + "\n")
    shutil.copyfile(run / "curves.png", FIGURE)
    print(f"wrote {RESULTS.relative_to(REPO)} and {FIGURE.relative_to(REPO)}")


if __name__ == "__main__":
    main()
