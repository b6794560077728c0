"""Images/s of DINO's data path alone: lrsched's streaming loader against DINO's own pipeline.

Usage: ``python bench/data_pipeline.py [--quick] [--rounds 5] [--threads 1] [--work DIR] [--official-venv DIR]
[--no-cache] [--out DIR]`` (with the project's venv: ``.venv/bin/python bench/data_pipeline.py``).

The work of one image on both sides: decode a JPEG, 2 global crops at 224 px and 8 local
crops at 96 px (DINO's ViT settings: random resized crop, bicubic, flip), colour jitter,
grayscale, Gaussian blur, solarisation, normalisation. A run draws ``warmup`` batches of
``batch`` images (worker start-up included there), then times ``batches`` more:
images/s = ``batches * batch / seconds``.

Contenders, each run as a fresh subprocess:

- ``official``: DINO's pipeline built from its documented parts in
  ``bench/data_pipeline_official.py`` (torchvision ``ImageFolder``, DINO's multi-crop transform
  list, ``DataLoader(shuffle=True, drop_last=True, num_workers=W)``), run by the python of a
  bench-only virtualenv, because torchvision is not a dependency of lrsched. When that venv
  is missing or broken the bench makes it (``--official-venv``, default ``/work/venv-tv``;
  about 5.5 GB, pip pulls torch's CUDA wheels) with
  ``python3 -m venv /work/venv-tv && /work/venv-tv/bin/pip install torch==2.14.1
  torchvision==0.29.1 pillow numpy``. Nothing is ever installed into the project's venv.
- ``official_matched``: the same script with ``--match-lrsched``: DINO's pipeline doing
  lrsched's lighter photometric work (see below), an equal-work control.
- ``ours``: lrsched's streaming path (``lrsched.recipes.dino.stream.train_loader``: a folder
  listed without decoding, decode + geometric crops in the DataLoader workers, uint8 crops)
  followed by the photometric part of ``lrsched.recipes.dino.augment`` applied to each batch
  on the CPU in the main process (in training it runs on the device), so that both sides
  go from JPEG files to normalised float views. Run with the project's python (this one).
  Both sides crop DINO's areas (global 0.4-1.0, local 0.05-0.4; lrsched's default local
  range is 0.1-0.4, ``--local-crops-scale``). The photometric work is not identical, and the
  difference favours ours: lrsched jitters brightness and contrast only (DINO's
  ``ColorJitter`` also shifts saturation by 0.2 and hue by 0.1, the latter through HSV in
  PIL), and it blurs a 96 px local crop with sigma up to 0.86 px (DINO: radius up to 2 at
  every size). ``official_matched`` measures how much of the difference that is.

Test images: ``images`` JPEGs (default 5,000) near 400x350 px (each side drawn in +-15%),
photo-like entropy (a multi-scale smoothed-noise luminance, smooth chroma, a gradient, a few
straight edges and fine grain), saved at JPEG quality 90: 50-100 KB each, as ImageNet's files
are. ImageFolder layout (``classes`` subfolders), generated once under ``--work`` (default
``$TMPDIR/lrsched-bench-data``) with numpy and PIL in two processes, and reused while its
``manifest.json`` matches the settings. Before measuring, every file is read once so both
sides start from a warm page cache; the kernel here evicts cold page cache within minutes,
so the folder is read again before every run.

Interleaving: ``rounds`` rounds (default 5); in each, for ``W`` in 0, 1, 2 workers, one run of
each side in an order that rotates from one (round, W) to the next. Reported per ``(side, W)``: the
median images/s over rounds and its IQR; the ratio of medians ours / each baseline per ``W`` and
the median of per-round ratios (the two runs of a round are adjacent in time); the scaling
of each side (median at ``W`` / median at ``W = 0``); the CPU time of the timed batches per
image (the side's process and its workers, read from ``/proc``), which other jobs disturb
far less than the wall clock; and, per run, the load before it and the seconds the machine's
tasks stalled for CPU, memory and I/O while it ran (Linux PSI). Both sides' main processes run
torch on one thread (``--threads``, set through ``OMP_NUM_THREADS``; DataLoader workers use
one each anyway): on this 2-core machine shared with other jobs, two threads made DINO's
``ToTensor`` + ``Normalize`` 40-100x slower (20 ms instead of 0.3 ms a crop) whenever another
process was busy, and the W=0 official run 4-5x slower in all. Defaults: batch
32, 3 warm-up + 20 timed batches per run, 45 runs, about 15 minutes here; ``--quick``: 160 images, 1
round, 1 warm-up + 2 timed batches of 16.

Outputs under ``bench/results/``: ``data_pipeline.json`` (machine, versions of both venvs,
commands, every run with its per-batch times, file-size distribution), ``data_pipeline.md``
(table) and ``data_pipeline.png`` (images/s against workers).
Every finished run is a cell of ``bench/results/cache/data_pipeline.json``; an interrupted
bench resumes with the runs it lacks (``--no-cache`` ignores the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# isort: split
from _common import (
    BENCH_DIR,
    RESULTS_DIR,
    CellCache,
    machine_info,
    markdown_table,
    pressure_stall_seconds,
    process_tree_cpu_seconds,
    quantiles,
    write_json,
    write_text,
)

SCRIPT = "data_pipeline"
SRC = BENCH_DIR.parent / "src"
OFFICIAL_SCRIPT = BENCH_DIR / "data_pipeline_official.py"
DEFAULT_VENV = Path("/work/venv-tv")
VENV_PACKAGES = ("torch==2.14.1", "torchvision==0.29.1", "pillow", "numpy")
SIDES = {
    "official": "DINO's pipeline (torchvision)",
    "official_matched": "DINO's pipeline, lrsched's photometric work",
    "ours": "lrsched stream + CPU photometric",
}
COLOURS = {"official": "#ff7f0e", "official_matched": "#2ca02c", "ours": "#1f77b4"}
WORKERS = (0, 1, 2)
RUN_TIMEOUT_S = 1200.0


def sizes(quick: bool) -> dict[str, Any]:
    base = {"global_size": 224, "local_size": 96, "local_crops": 8, "workers": list(WORKERS), "seed": 0}
    if quick:
        return {**base, "images": 160, "classes": 4, "batch": 16, "warmup": 1, "batches": 2, "rounds": 1}
    return {**base, "images": 5000, "classes": 10, "batch": 32, "warmup": 3, "batches": 20, "rounds": 5}


# --- the test folder --------------------------------------------------------------------

IMAGE_SIZE = (400, 350)
"""Nominal width x height of a test image; each side is drawn in +-15% of it."""
JPEG_QUALITY = 90
FOLDER_VERSION = 1
"""Bumped whenever ``make_image`` changes, so that an old folder is generated anew."""


def _field(rng: Any, h: int, w: int, cell: int, channels: int) -> Any:
    """Gaussian noise on a grid of ``cell``-pixel cells, bicubically upsampled to ``(h, w, channels)``."""
    import numpy as np
    from PIL import Image

    gh, gw = h // cell + 2, w // cell + 2
    coarse = rng.standard_normal((gh, gw, channels)).astype(np.float32)
    out = np.empty((h, w, channels), np.float32)
    for c in range(channels):
        up = Image.fromarray(coarse[:, :, c], mode="F").resize((gw * cell, gh * cell), Image.Resampling.BICUBIC)
        out[:, :, c] = np.asarray(up)[:h, :w]
    return out


def make_image(seed: int) -> Any:
    """A textured RGB PIL image near 400x350: photo-like entropy, reproducible from ``seed``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w = round(IMAGE_SIZE[0] * rng.uniform(0.85, 1.15))
    h = round(IMAGE_SIZE[1] * rng.uniform(0.85, 1.15))
    lum = np.zeros((h, w, 1), np.float32)
    for cell, amp in ((96, 1.0), (32, 0.6), (10, 0.45), (3, 0.3)):  # structure at several scales
        lum += amp * _field(rng, h, w, cell, 1)
    x = lum + 0.5 * _field(rng, h, w, 80, 3) + 0.2 * _field(rng, h, w, 16, 3)  # smooth chroma
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    x += ((np.cos(angle) * xx / w + np.sin(angle) * yy / h) * rng.uniform(-1.5, 1.5))[..., None]
    for _ in range(int(rng.integers(3, 8))):  # straight edges between regions of other tone
        a, b = rng.standard_normal(2)
        side = (a * (xx - rng.uniform(0, w)) + b * (yy - rng.uniform(0, h))) > 0
        x[side] += rng.normal(0, 0.6) + rng.normal(0, 0.3, 3).astype(np.float32)
    x += 0.45 * rng.standard_normal((h, w, 1)).astype(np.float32)  # grain, mostly luminance
    x += 0.15 * rng.standard_normal((h, w, 3)).astype(np.float32)
    x = rng.uniform(90, 160, 3).astype(np.float32) + x * rng.uniform(28, 40)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def _write_image(job: tuple[int, str]) -> None:
    seed, path = job
    make_image(seed).save(path, "JPEG", quality=JPEG_QUALITY)


def image_folder(work: Path, cfg: dict[str, Any], log: Any = print) -> tuple[Path, dict[str, Any]]:
    """The test folder for ``cfg`` under ``work`` (made once) and its manifest (file sizes)."""
    import multiprocessing

    spec = {"version": FOLDER_VERSION, "images": cfg["images"], "classes": cfg["classes"], "seed": cfg["seed"]}
    root = work / f"jpeg-{cfg['images']}-{cfg['classes']}c-s{cfg['seed']}-v{FOLDER_VERSION}"
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
        if manifest.get("spec") == spec:
            return root, manifest
    log(f"generating {cfg['images']} JPEGs under {root} ...")
    started = time.perf_counter()
    jobs = []
    for i in range(cfg["images"]):
        folder = root / f"class{i % cfg['classes']:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((cfg["seed"] * 1_000_003 + i, str(folder / f"img{i:05d}.jpg")))
    with multiprocessing.get_context("spawn").Pool(min(2, os.cpu_count() or 1)) as pool:
        pool.map(_write_image, jobs, chunksize=32)
    manifest = {
        "spec": spec,
        "jpeg_quality": JPEG_QUALITY,
        "generation_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(manifest_path, manifest)
    log(f"generated in {manifest['generation_seconds']} s")
    return root, manifest


def folder_stats(root: Path) -> dict[str, Any]:
    """File sizes (KB) and pixel sizes of the JPEGs under ``root``."""
    from PIL import Image

    files = sorted(root.rglob("*.jpg"))
    kb = [path.stat().st_size / 1000 for path in files]
    dims = []
    for path in files:
        with Image.open(path) as image:  # reads the header only
            dims.append(image.size)
    deciles = statistics.quantiles(kb, n=10) if len(kb) > 1 else kb * 9
    return {
        "files": len(files),
        "file_kb": {
            "mean": statistics.fmean(kb),
            "min": min(kb),
            "p10": deciles[0],
            **quantiles(kb),
            "p90": deciles[-1],
            "max": max(kb),
            "share_50_to_100": sum(50 <= k <= 100 for k in kb) / len(kb),
            "total_mb": sum(kb) / 1000,
        },
        "width": {"min": min(w for w, _ in dims), "max": max(w for w, _ in dims)},
        "height": {"min": min(h for _, h in dims), "max": max(h for _, h in dims)},
    }


def warm_page_cache(root: Path) -> float:
    """Read every file under ``root`` once; the seconds it took."""
    started = time.perf_counter()
    for path in sorted(root.rglob("*.jpg")):
        path.read_bytes()
    return time.perf_counter() - started


# --- the official side's virtualenv -------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_official_venv(venv: Path, log: Any = print) -> dict[str, str]:
    """Make ``venv`` with torch + torchvision unless it already imports them; their versions."""
    probe = (
        "import json, torch, torchvision, PIL, numpy; "
        "print(json.dumps({m.__name__: m.__version__ for m in (torch, torchvision, PIL, numpy)}))"
    )

    def versions() -> dict[str, str] | None:
        if not venv_python(venv).exists():
            return None
        done = subprocess.run([str(venv_python(venv)), "-c", probe], capture_output=True, text=True, timeout=300)
        return json.loads(done.stdout) if done.returncode == 0 else None

    found = versions()
    if found is not None:
        return found
    log(f"making the bench-only venv {venv} (torchvision; about 5.5 GB) ...")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "-q", *VENV_PACKAGES], check=True)
    found = versions()
    if found is None:
        raise RuntimeError(f"{venv}: torch and torchvision still do not import after the install")
    return found


# --- our side -----------------------------------------------------------------------------


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_GLOBAL_SCALE = (0.4, 1.0)
DINO_LOCAL_SCALE = (0.05, 0.4)
"""DINO's crop areas for ViTs, used on both sides (lrsched's default local range is 0.1-0.4)."""


def ours_run(opts: argparse.Namespace) -> dict[str, Any]:
    """One timed run of lrsched's streaming path + the CPU photometric part (``--side ours``).

    Built as ``phase5_big_run.py`` builds it (``dino.loop``): ``open_folder`` (listing, no
    decoding but the 256 images of the colour statistics), ``Geometry`` with DINO's crop areas,
    ``Sampler`` and ``train_loader`` with ``workers``; then per batch, in this process,
    ``Photometric`` with a generator seeded from ``(seed, step, rank)``, as a training step does
    on its device. The timed work ends with the normalised float views.
    """
    if str(SRC) not in sys.path:
        sys.path.insert(0, str(SRC))
    import torch

    from lrsched.recipes.dino.augment import Geometry, Photometric
    from lrsched.recipes.dino.data import Sampler, mix, open_folder
    from lrsched.recipes.dino.stream import train_loader

    started = time.perf_counter()
    data = open_folder(Path(opts.folder))
    geometry = Geometry(
        opts.global_size,
        opts.local_size,
        opts.local_crops,
        data.channels,
        global_scale=DINO_GLOBAL_SCALE,
        local_scale=DINO_LOCAL_SCALE,
    )
    photometric = Photometric(IMAGENET_MEAN, IMAGENET_STD)
    sampler = Sampler(len(data.train), opts.batch, 1, opts.seed)
    total = opts.warmup + opts.batches
    batches = train_loader(data.train, geometry, sampler, rank=0, start=0, stop=total, workers=opts.workers)

    def views(batch: Any) -> Any:
        g = torch.Generator().manual_seed(mix(opts.seed, batch.step, 0))
        return photometric(batch.global_px, batch.local_px, g)

    first = None
    crops = None
    for _ in range(opts.warmup):
        crops = views(next(batches))
        first = first if first is not None else time.perf_counter() - started
    shapes = [list(crops.global_crops.shape), list(crops.local_crops.shape)] if crops is not None else []
    times = []
    cpu0 = process_tree_cpu_seconds()  # this process and its DataLoader workers
    t0 = time.perf_counter()
    last = t0
    for _ in range(opts.batches):
        views(next(batches))
        now = time.perf_counter()
        times.append(now - last)
        last = now
    seconds = last - t0
    cpu1 = process_tree_cpu_seconds()
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    batches.close()
    return {
        "images_per_s": opts.batches * opts.batch / seconds,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "cpu_ms_per_image": None if cpu is None else 1000 * cpu / (opts.batches * opts.batch),
        "batch_seconds": [round(t, 4) for t in times],
        "first_batch_seconds": first,
        "dataset_images": len(data.train),
        "batch_shapes": shapes,
        "torch_threads_main": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "pillow": __import__("PIL").__version__},
    }


# --- running and interleaving --------------------------------------------------------------


def side_args(cfg: dict[str, Any], folder: Path, workers: int) -> list[str]:
    return [
        "--folder",
        str(folder),
        "--workers",
        str(workers),
        "--batch",
        str(cfg["batch"]),
        "--global-size",
        str(cfg["global_size"]),
        "--local-size",
        str(cfg["local_size"]),
        "--local-crops",
        str(cfg["local_crops"]),
        "--warmup",
        str(cfg["warmup"]),
        "--batches",
        str(cfg["batches"]),
        "--seed",
        str(cfg["seed"]),
    ]


def side_command(side: str, cfg: dict[str, Any], folder: Path, workers: int, venv: Path) -> list[str]:
    if side == "official":
        return [str(venv_python(venv)), str(OFFICIAL_SCRIPT), *side_args(cfg, folder, workers)]
    if side == "official_matched":
        return [str(venv_python(venv)), str(OFFICIAL_SCRIPT), *side_args(cfg, folder, workers), "--match-lrsched"]
    return [sys.executable, str(Path(__file__).resolve()), "--side", "ours", *side_args(cfg, folder, workers)]


def run_side(command: list[str], threads: int, folder: Path) -> dict[str, Any]:
    """Run one side's subprocess after re-reading the images; its ``RESULT`` line, with context.

    Added: the command, its wall time, the seconds spent re-reading the folder first (the
    kernel here evicts cold page cache, so each run starts from a freshly read folder), the
    1-minute load before, and the seconds during which some task on the machine stalled for
    CPU, memory or I/O while the run went (PSI): other jobs' disturbance.
    """
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    rewarm = warm_page_cache(folder)
    load = round(os.getloadavg()[0], 2)
    stalls0 = pressure_stall_seconds()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=BENCH_DIR)
    wall = time.perf_counter() - started
    stalls1 = pressure_stall_seconds()
    stalls = {k: round(stalls1[k] - stalls0[k], 2) for k in stalls0 if k in stalls1}
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return {
        **json.loads(lines[-1][len("RESULT ") :]),
        "wall_seconds": round(wall, 2),
        "rewarm_seconds": round(rewarm, 2),
        "load_1min_before": load,
        "stall_seconds_during": stalls,
        "command": command,
    }


def measure(cfg: dict[str, Any], folder: Path, venv: Path, cache: CellCache, sides: list[str]) -> list[dict]:
    runs = []
    for r in range(cfg["rounds"]):
        for workers in cfg["workers"]:
            shift = (r + workers) % len(sides)
            order = sides[shift:] + sides[:shift]  # each side takes each place in turn
            for side in order:
                cell = f"round{r}/w{workers}/{side}"

                def go(side: str = side, workers: int = workers) -> dict[str, Any]:
                    return run_side(side_command(side, cfg, folder, workers, venv), cfg["threads"], folder)

                result = cache.compute(cell, go)
                print(
                    f"round {r} W={workers} {side:16s}: {result['images_per_s']:7.2f} images/s "
                    f"{result['cpu_ms_per_image']:6.1f} CPU ms/image "
                    f"(first batch {result['first_batch_seconds']:.1f} s, run {result['wall_seconds']:.1f} s, "
                    f"load {result['load_1min_before']}, stalls {result['stall_seconds_during']})",
                    flush=True,
                )
                runs.append({"round": r, "workers": workers, "side": side, "position": order.index(side), **result})
    return runs


# --- reporting ------------------------------------------------------------------------------


def _cells(runs: list[dict], side: str, w: int, key: str) -> list[float]:
    return [run[key] for run in runs if run["side"] == side and run["workers"] == w and run.get(key) is not None]


def summarise(runs: list[dict], cfg: dict[str, Any], sides: list[str]) -> dict[str, Any]:
    """Medians and IQRs per (side, W) of images/s and CPU ms per image; scaling; ratios."""
    ws = [str(w) for w in cfg["workers"]]
    speed = {side: {str(w): quantiles(_cells(runs, side, w, "images_per_s")) for w in cfg["workers"]} for side in sides}
    cpu = {
        side: {str(w): quantiles(_cells(runs, side, w, "cpu_ms_per_image")) for w in cfg["workers"]} for side in sides
    }
    scaling = {side: {w: speed[side][w]["median"] / speed[side]["0"]["median"] for w in ws} for side in sides}
    out: dict[str, Any] = {"images_per_s": speed, "cpu_ms_per_image": cpu, "scaling_vs_w0": scaling}
    bases = [side for side in sides if side != "ours"] if "ours" in sides else []
    out["ratio_ours_over"], out["per_round_ratio_ours_over"], out["cpu_ratio_over_ours"] = {}, {}, {}
    for base in bases:
        out["ratio_ours_over"][base] = {w: speed["ours"][w]["median"] / speed[base][w]["median"] for w in ws}
        paired = {}
        for w in cfg["workers"]:
            by_round = {(run["round"], run["side"]): run["images_per_s"] for run in runs if run["workers"] == w}
            rounds = [r for r in range(cfg["rounds"]) if (r, "ours") in by_round and (r, base) in by_round]
            paired[str(w)] = quantiles([by_round[r, "ours"] / by_round[r, base] for r in rounds])
        out["per_round_ratio_ours_over"][base] = paired
        out["cpu_ratio_over_ours"][base] = {w: cpu[base][w]["median"] / cpu["ours"][w]["median"] for w in ws}
    return out


def draw(runs: list[dict], summary: dict[str, Any], cfg: dict[str, Any], sides: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from lrsched.render import save_figure

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    panels = (
        ("images_per_s", "images / s (each: 2x224 + 8x96 crops)", "throughput"),
        ("cpu_ms_per_image", "CPU ms per image (process + workers)", "CPU cost"),
    )
    for ax, (key, label, title) in zip(axes, panels):
        for k, side in enumerate(sides):
            shift = (k - (len(sides) - 1) / 2) * 0.06
            pts = [(run["workers"] + shift, run[key]) for run in runs if run["side"] == side and run.get(key)]
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o", color=COLOURS[side], alpha=0.45, ms=4)
            medians = [summary[key][side][str(w)]["median"] for w in cfg["workers"]]
            ax.plot(cfg["workers"], medians, "-", color=COLOURS[side], lw=2, label=f"{SIDES[side]} (median)")
        ax.set_xticks(cfg["workers"])
        ax.set_xlabel("DataLoader workers")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.set_title(f"{title}: runs (dots) and medians", fontsize=10)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"DINO data path on CPU (2 shared cores), batch {cfg['batch']}", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)


def _iqr(q: dict[str, float], fmt: str = ".1f") -> str:
    return f"{q['median']:{fmt}} ({q['q1']:{fmt}} - {q['q3']:{fmt}})"


def report(
    runs: list[dict], cfg: dict[str, Any], sides: list[str], manifest: dict[str, Any], extra: dict[str, Any], out: Path
) -> str:
    summary = summarise(runs, cfg, sides)
    speed, cpu, scaling = summary["images_per_s"], summary["cpu_ms_per_image"], summary["scaling_vs_w0"]
    bases = list(summary["ratio_ours_over"])
    headers = ["workers"] + [f"{side}: images/s" for side in sides] + [f"{side}: x W=0" for side in sides]
    rows = []
    for w in map(str, cfg["workers"]):
        row: list[object] = [w] + [_iqr(speed[side][w]) for side in sides]
        rows.append(row + [f"{scaling[side][w]:.2f}" for side in sides])
    table = markdown_table(headers, rows, "r" * len(headers))
    ratio_headers = ["workers"]
    for base in bases:
        ratio_headers += [f"ours / {base}", f"ours / {base}, per round"]
    ratio_rows = []
    for w in map(str, cfg["workers"]):
        row = [w]
        for base in bases:
            ratio = summary["ratio_ours_over"][base][w]
            row += [f"**{ratio:.2f}**" if base == "official" else f"{ratio:.2f}"]
            row += [_iqr(summary["per_round_ratio_ours_over"][base][w], ".2f")]
        ratio_rows.append(row)
    ratio_table = markdown_table(ratio_headers, ratio_rows, "r" * len(ratio_headers)) if bases else ""
    cpu_headers = ["workers"] + [f"{side}: CPU ms/image" for side in sides] + [f"{base} / ours" for base in bases]
    cpu_rows = []
    for w in map(str, cfg["workers"]):
        row = [w] + [_iqr(cpu[side][w]) for side in sides]
        cpu_rows.append(row + [f"{summary['cpu_ratio_over_ours'][base][w]:.2f}" for base in bases])
    cpu_table = markdown_table(cpu_headers, cpu_rows, "r" * len(cpu_headers))
    disturbance = {
        side: quantiles(
            [run["stall_seconds_during"].get("cpu", 0.0) / run["wall_seconds"] for run in runs if run["side"] == side]
        )
        for side in sides
    }
    kb = manifest["file_kb"]
    info = extra["machine"]
    commands = "\n".join(f"- {side}: `{' '.join(extra['example_commands'][side])}`" for side in sides)
    text = "\n".join(
        [
            "# DINO data path: images/s of lrsched's stream against DINO's own pipeline",
            "",
            f"Per image: JPEG decode, 2 global crops at {cfg['global_size']} px and {cfg['local_crops']} local crops "
            f"at {cfg['local_size']} px, colour jitter, grayscale, blur, solarisation, normalisation. Batch "
            f"{cfg['batch']}; each run a fresh subprocess drawing {cfg['warmup']} warm-up batches, then "
            f"{cfg['batches']} timed ones; {cfg['rounds']} interleaved rounds (the sides' order rotates). "
            f"Main processes on {cfg['threads']} torch thread(s). Medians over rounds, IQR in brackets; "
            "'x W=0': that side's median over its own median without workers.",
            "",
            table,
            "Ours against each baseline: ratio of the medians above, and the median (IQR) of the per-round "
            "ratios (the runs of a round are adjacent in time, so they share the machine's load). "
            "`official_matched` is DINO's pipeline doing lrsched's lighter photometric work "
            "(`data_pipeline_official.py --match-lrsched`): no saturation or hue jitter, local blur "
            "radius up to 0.86 px; it tells how much of the difference is less work.",
            "",
            ratio_table,
            "CPU time of the timed batches (the side's process and its DataLoader workers, from /proc), "
            "per image: a cost that other jobs on the machine disturb far less than the wall clock.",
            "",
            cpu_table,
            "Contention: the share of each run's wall time during which some task on the machine waited "
            "for a CPU (Linux PSI; the run's own processes count too: with 2 workers it runs 3 on 2 cores), "
            "median (IQR) over runs: "
            + "; ".join(f"{side} {_iqr(disturbance[side], '.2f')}" for side in sides)
            + f". 1-minute load before the runs: {min(run['load_1min_before'] for run in runs):.1f} - "
            f"{max(run['load_1min_before'] for run in runs):.1f} (2 cores).",
            "",
            f"Images: {cfg['images']} generated JPEGs (quality {manifest['jpeg_quality']}) in {cfg['classes']} "
            f"class folders, {manifest['width']['min']}-{manifest['width']['max']} x "
            f"{manifest['height']['min']}-{manifest['height']['max']} px, file size median {kb['median']:.1f} KB "
            f"(10-90%: {kb['p10']:.1f} - {kb['p90']:.1f} KB, min {kb['min']:.1f}, max {kb['max']:.1f}; "
            f"{kb['share_50_to_100']:.1%} within 50-100 KB; {kb['total_mb']:.0f} MB in all), "
            "all read again before every run (the kernel here evicts cold page cache).",
            "",
            "Commands of one run (W=2):",
            "",
            commands,
            "",
            f"Machine: {info['cpu_model']}, {info['usable_cores']} usable cores (shared), load "
            f"{info['load_average_1_5_15min']} at the end; ours: torch {info['packages']['torch']}, Pillow "
            f"{info['packages']['pillow']}; official venv: "
            + ", ".join(f"{k} {v}" for k, v in extra["official_versions"].items())
            + f"; commit {info['git_commit']}. Bench command: `{info['command']}`; "
            f"{extra['wall_seconds']:.0f} s.",
            "",
        ]
    )
    write_text(out / "data_pipeline.md" if not extra["quick"] else out / "data_pipeline_quick.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="160 images, 1 round, 2 timed batches (a smoke test)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side's main process (default 1)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lrsched-bench-data")
    parser.add_argument("--official-venv", type=Path, default=DEFAULT_VENV, help=f"default {DEFAULT_VENV}")
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default bench/results)")
    parser.add_argument("--no-cache", action="store_true", help="ignore and do not write the cache")
    # a side's own flags (``--side ours``)
    for flag in ("--folder", "--workers", "--batch", "--global-size", "--local-size", "--local-crops"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    for flag in ("--warmup", "--batches", "--seed"):
        parser.add_argument(flag, type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.side == "ours":
        for name in ("workers", "batch", "global_size", "local_size", "local_crops"):
            setattr(opts, name, int(getattr(opts, name)))
        print("RESULT " + json.dumps(ours_run(opts)), flush=True)
        return 0

    started = time.perf_counter()
    cfg = sizes(opts.quick)
    if opts.rounds:
        cfg["rounds"] = opts.rounds
    cfg["threads"] = opts.threads
    sides = [side for side in SIDES if side in opts.sides]
    uses_venv = any(side.startswith("official") for side in sides)
    official_versions = ensure_official_venv(opts.official_venv) if uses_venv else {}
    folder, manifest = image_folder(opts.work, cfg)
    manifest = {**manifest, **folder_stats(folder)}
    print(f"images: {folder} ({manifest['file_kb']['median']:.1f} KB median)", flush=True)
    print(f"page cache warmed in {warm_page_cache(folder):.1f} s", flush=True)
    name = SCRIPT + ("_quick" if opts.quick else "")
    cache = CellCache(
        name,
        {**cfg, "sides": sides, "folder": str(folder)},
        opts.out / "cache",
        code=[Path(__file__), OFFICIAL_SCRIPT, BENCH_DIR / "_common.py"],
        enabled=not opts.no_cache,
    )
    runs = measure(cfg, folder, opts.official_venv, cache, sides)
    info = machine_info(("torch", "pillow", "numpy"))
    extra = {
        "machine": info,
        "official_versions": official_versions,
        "example_commands": {side: side_command(side, cfg, folder, 2, opts.official_venv) for side in sides},
        "wall_seconds": time.perf_counter() - started,
        "quick": opts.quick,
    }
    text = report(runs, cfg, sides, manifest, extra, opts.out)
    summary = summarise(runs, cfg, sides)
    write_json(
        opts.out / f"{name}.json",
        {
            "machine": info,
            "official_venv": {"path": str(opts.official_venv), "versions": official_versions},
            "config": cfg,
            "sides": {side: SIDES[side] for side in sides},
            "images": {"folder": str(folder), **manifest},
            **summary,
            "wall_seconds": round(extra["wall_seconds"], 1),
            "runs": runs,
        },
    )
    draw(runs, summary, cfg, sides, opts.out / f"{name}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
