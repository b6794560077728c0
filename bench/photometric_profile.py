"""Where ``Photometric`` spends its time, per image on one thread: ``augment.py`` at git revision ``--before``
against the working tree's, at DINO's sizes (RGB, 2 global views at 224 px + 8 local at 96 px per image, random
uint8 pixels). Each round runs both (order alternating) timed without a profiler (wall and thread CPU), then under
cProfile: per function of the module, time with what it calls (cum) and in its own Python and torch calls (own).
Medians over rounds into ``--out``. Usage: ``.venv/bin/python bench/photometric_profile.py [--rounds 7]``."""

import argparse
import cProfile
import importlib.util
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _common import REPO_ROOT, machine_info, markdown_table, provenance, write_text

MODULE = "src/lrsched/recipes/dino/augment.py"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LEGEND = """Where the ops are. Before: `_colour` own = brightness/contrast and grayscale, `shift_hue` = hue,
`adjust_saturation` + `luma` = saturation (and grayscale's luma), `gaussian_blur` = blur, `view` own = solarisation,
`normalise` = normalisation. After: `_colour` own = uint8 to planar float, mean, brightness/contrast; `_sectors` +
`shift_hue` = hue; `_saturate_` + `luma` = saturation and grayscale; `_blur_taps` = blur; `_subset` own = copies of
the subsets blurred, solarised or gray, and solarisation; `view` own = normalisation into the output."""


def load(source: Path, name: str) -> ModuleType:
    """``augment.py`` from ``source`` as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def at_revision(rev: str, folder: Path) -> Path:
    """``augment.py`` as it was at git revision ``rev``, written into ``folder``."""
    git = ["git", "-C", str(REPO_ROOT), "show", f"{rev}:{MODULE}"]
    (path := folder / f"augment_{rev}.py").write_text(subprocess.run(git, capture_output=True, text=True).stdout)
    return path


def timed(call: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.thread_time()
    call()
    return time.perf_counter() - wall, time.thread_time() - cpu


def profiled(call: Any, source: str) -> dict[str, tuple[float, float]]:
    """``{function: (cum s, own s)}`` for the functions defined in ``source``; own: the function's Python and the
    library calls (torch ...) it makes itself, not the module's functions it calls."""
    prof = cProfile.Profile(time.thread_time)  # CPU time: less disturbed by other jobs
    prof.runcall(call)
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out = {key: [row[3], row[2]] for key, row in stats.items() if key[0] == source}
    for key, (*_, callers) in stats.items():
        for caller, (*_, cum) in callers.items() if key[0] != source else ():
            if caller in out:
                out[caller][1] += cum
    return {f"{name} (line {line})": (cum, own) for (_, line, name), (cum, own) in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="510523b", help="git revision of the 'before' augment.py")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/photometric_profile.md")
    opts = parser.parse_args()
    b, loads = opts.batch, [os.getloadavg()[0]]
    torch.set_num_threads(1)
    px = [torch.randint(0, 256, (b, n, s, s, 3), dtype=torch.uint8) for n, s in ((2, 224), (8, 96))]
    with tempfile.TemporaryDirectory() as tmp:
        mods = {
            "before": load(at_revision(opts.before, Path(tmp)), "before"),
            "after": load(REPO_ROOT / MODULE, "after"),
        }
        calls = {
            s: (lambda m=m: m.Photometric(MEAN, STD)(*px, torch.Generator().manual_seed(0))) for s, m in mods.items()
        }
        runs: dict[str, list[Any]] = {s: [] for s in mods}
        for call in calls.values():
            call()  # untimed: first-call costs
        for r in range(opts.rounds):
            for side in list(mods)[:: 1 if r % 2 == 0 else -1]:
                runs[side].append((*timed(calls[side]), profiled(calls[side], str(mods[side].__file__))))
    loads.append(os.getloadavg()[0])
    ms = lambda xs: 1000 * statistics.median(xs) / b  # noqa: E731
    total = {s: [ms([run[k] for run in runs[s]]) for k in (0, 1)] for s in mods}
    rows = [[f"total, no profiler: {m}", *(f"{total[s][k]:.2f}" for s in mods)] for k, m in enumerate(("wall", "CPU"))]
    rows.append(["after / before (thread CPU)", "", f"{total['after'][1] / total['before'][1]:.3f}"])
    cells = []
    for side in mods:
        per = {n: [ms([run[2].get(n, (0.0, 0.0))[k] for run in runs[side]]) for k in (0, 1)] for n in runs[side][0][2]}
        cells += [[side, n, f"{c:.2f}", f"{o:.2f}"] for n, (c, o) in sorted(per.items(), key=lambda kv: -kv[1][0])]
    text = (
        "# Photometric: milliseconds per image on one thread, before and after\n\n"
        f"Batch {b}, RGB, 2 global views at 224 px and 8 local at 96 px per image (random uint8 pixels), "
        f"`torch.set_num_threads(1)`; before: `{MODULE}` at `{opts.before}`, after: the working tree. {opts.rounds} "
        f"interleaved rounds, medians. 1-minute load {loads[0]:.2f} before, {loads[1]:.2f} after (2 cores shared "
        "with other jobs: wall times are noisy; thread CPU time less so).\n\n"
        + markdown_table(["measure", "before ms/image", "after ms/image"], rows, "lrr")
        + "\nUnder cProfile timing thread CPU (it adds a little per Python call), per function of the module: ms per "
        "image with what it calls (cum) and in its own Python and torch calls (own).\n\n"
        + markdown_table(["side", "function", "cum ms/image", "own ms/image"], cells, "llrr")
        + f"\n{LEGEND}\n\n{provenance(machine_info(('torch', 'numpy')))}\n"
    )
    write_text(opts.out, text)
    print(text)


if __name__ == "__main__":
    main()
