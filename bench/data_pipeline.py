"""Images/s of DINO's data path alone (JPEG decode, 2 global 224 px + 8 local 96 px crops, colour jitter,
grayscale, blur, solarisation, normalisation) for W = 0, 1, 2 DataLoader workers, each run a fresh subprocess.

Usage: ``.venv/bin/python bench/data_pipeline.py [--quick] [--rounds 3]``: ``bench/results/data_pipeline.{json,md}``,
runs cached in ``bench/results/cache/``. It refuses to start on a busy machine (1-minute load above
``QUIET_LOAD``; ``--allow-load`` runs anyway and marks the result). Sides: ``official``, DINO's pipeline from
torchvision parts, run by a bench-only venv made when missing (``VENV_PACKAGES``); ``official_matched``, the same
with lrsched's lighter blur on local crops (an equal-work control); ``ours``, lrsched's stream as a CPU run uses
it (``Photometric`` in the workers); ``ours_crops``, the host's share when the colour work runs on an accelerator
(decode and crops only).
"""

import argparse
import itertools
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    REPO_ROOT,
    CellCache,
    machine_info,
    markdown_table,
    quantiles,
    spread,
    write_json,
    write_text,
)

VENV_PACKAGES = ("torch==2.13.0", "torchvision==0.28.0", "pillow", "numpy")
OURS_CODE = [REPO_ROOT / "src/lrsched/recipes/dino" / f"{m}.py" for m in ("augment", "data", "stream")]
"""The library code of ``ours``: part of the cache key with this file, so a change to it reruns the cells."""
PROBE = "import json, PIL, numpy, torch, data_pipeline as o; tv = o.import_torchvision(); print(json.dumps("
PROBE += "{m.__name__: m.__version__ for m in (torch, tv, PIL, numpy)}))"
SIDES = {
    "official": "DINO (torchvision)",
    "official_matched": "DINO, lrsched's blur",
    "ours": "lrsched",
    "ours_crops": "lrsched, colour on the device",
}
QUIET_LOAD = 0.5
"""Highest 1-minute load average at which the benchmark starts: timings beside other work hide scaling."""
BASES = ("official", "official_matched")
SCALES = ((80, 30, 3), (80, 50, 1), (20, 35, 1), (5, 35, 1))  # test images: (cell px, amplitude, channels)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's
INT_FLAGS = ("workers", "batch", "global_size", "local_size", "local_crops", "warmup", "batches", "seed")


def side_options(argv: list[str] | None = None) -> argparse.Namespace:
    """One side's options (``--folder``, ``--workers`` ...), shared with lrsched's side."""
    parser = argparse.ArgumentParser(description="one run of one side")
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--match-lrsched", action="store_true", help="lrsched's blur sigma range (a control)")
    parser.add_argument("--crops-only", action="store_true", help="lrsched: no colour work (done on a device)")
    for name in INT_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, required=True)
    return parser.parse_args(argv)


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants (DataLoader workers), from /proc."""
    pids, ticks = [os.getpid()], 0
    while pids:
        pid = pids.pop()
        try:
            ticks += sum(map(int, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
            pids += [int(c) for t in Path(f"/proc/{pid}/task").glob("*/children") for c in t.read_text().split()]
        except OSError:  # it ended meanwhile
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def timed(batches: Any, opts: argparse.Namespace, started: float) -> dict[str, Any]:
    """Draw ``warmup`` batches (worker start-up included), then time ``batches`` more: the run's result."""
    for _ in range(opts.warmup):
        next(batches)
    warmup, ends, cpu = time.perf_counter() - started, [time.perf_counter()], tree_cpu_seconds()
    for _ in range(opts.batches):
        next(batches)
        ends.append(time.perf_counter())
    images, cpu = opts.batches * opts.batch, tree_cpu_seconds() - cpu
    result = {"images_per_s": images / (ends[-1] - ends[0]), "cpu_ms_per_image": 1000 * cpu / images}
    return result | {"batch_seconds": [round(b - a, 4) for a, b in itertools.pairwise(ends)], "warmup_seconds": warmup}


def import_torchvision() -> Any:
    """torchvision; the 0.28.0 wheel here is a CUDA build whose C++ ops do not load beside a CPU torch."""
    import torch

    try:
        import torchvision
    except RuntimeError:  # it then fails on two of them: declare those (the data path uses no C++ op)
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision
    return torchvision


def multi_crop(opts: argparse.Namespace) -> Any:
    """DINO's views of one PIL image: 2 global + ``local_crops`` local normalised tensors."""
    from PIL import ImageFilter

    T = import_torchvision().transforms

    def view(size: int, scale: tuple[float, float], blur_p: float, solarize_p: float) -> Any:
        radius = (0.1, max(0.5, 2.0 * size / 224)) if opts.match_lrsched else (0.1, 2.0)
        crop = T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BICUBIC)
        colour = [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)]
        blur = T.RandomApply([lambda img: img.filter(ImageFilter.GaussianBlur(random.uniform(*radius)))], p=blur_p)
        solarize = [T.RandomSolarize(128, p=solarize_p)] if solarize_p else []
        normalize = [T.ToTensor(), T.Normalize(MEAN, STD)]
        return T.Compose([crop, T.RandomHorizontalFlip(p=0.5), *colour, blur, *solarize, *normalize])

    g, loc = opts.global_size, opts.local_size
    views = [view(g, (0.4, 1.0), 1.0, 0.0), view(g, (0.4, 1.0), 0.1, 0.2)]
    views += [view(loc, (0.05, 0.4), 0.5, 0.0) for _ in range(opts.local_crops)]
    return lambda img: [v(img) for v in views]


def official(opts: argparse.Namespace) -> dict[str, Any]:
    """One run of DINO's side (in the bench-only venv): ``ImageFolder``, its multi-crop, ``DataLoader``."""
    import torch

    torch.manual_seed(opts.seed)
    random.seed(opts.seed)
    started = time.perf_counter()
    dataset = import_torchvision().datasets.ImageFolder(opts.folder, transform=multi_crop(opts))
    loader = torch.utils.data.DataLoader(dataset, opts.batch, shuffle=True, num_workers=opts.workers, drop_last=True)
    return timed(iter(loader), opts, started)


def make_jpeg(job: tuple[int, Path]) -> None:
    """A photo-like JPEG near 400x350 px: smoothed noise at several scales (smooth colour, luminance detail)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(job[0])
    w, h = (round(n * rng.uniform(0.85, 1.15)) for n in (400, 350))
    x = rng.uniform(90, 160, 3) + rng.normal(0, 12, (h, w, 1))  # tone and grain
    for cell, amp, channels in SCALES:
        small = rng.normal(128, amp, (h // cell + 2, w // cell + 2, channels)).clip(0, 255).astype(np.uint8)
        up = Image.fromarray(small.squeeze()).resize((w, h), Image.Resampling.BICUBIC)
        x = x + np.asarray(up).reshape(h, w, -1) - 128.0
    job[1].parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(x.clip(0, 255).astype(np.uint8)).save(job[1], "JPEG", quality=90)


def image_folder(work: Path, cfg: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The test folder (ImageFolder layout), made once and reused while its manifest matches; the manifest."""
    spec = json.loads(json.dumps({"scales": SCALES, **{k: cfg[k] for k in ("images", "classes", "seed")}}))
    root = work / "jpeg-{images}-{classes}c-s{seed}-v2".format(**cfg)
    if (manifest := root / "manifest.json").exists() and json.loads(manifest.read_text())["spec"] == spec:
        return root, json.loads(manifest.read_text())
    print(f"generating {cfg['images']} JPEGs under {root} ...")
    n, c = cfg["images"], cfg["classes"]
    jobs = [(cfg["seed"] * 1_000_003 + i, root / f"class{i % c:02d}" / f"img{i:05d}.jpg") for i in range(n)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(make_jpeg, jobs, chunksize=32)
    kb = [path.stat().st_size / 1000 for _, path in jobs]
    sizes = {**quantiles(kb), "min": min(kb), "max": max(kb), "share_50_to_100": sum(50 <= k <= 100 for k in kb) / n}
    write_json(manifest, {"spec": spec, "jpeg_quality": 90, "file_kb": sizes})
    return root, json.loads(manifest.read_text())


def official_versions(venv: Path) -> dict[str, str]:
    """Versions in the bench-only venv, which is made first when it is missing or broken."""
    python, run = str(venv / "bin" / "python"), {"capture_output": True, "text": True, "cwd": BENCH_DIR}
    if not Path(python).exists() or (done := subprocess.run([python, "-c", PROBE], **run)).returncode:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # then pip tells what it installs
        subprocess.run([python, "-m", "pip", "install", *VENV_PACKAGES], check=True)
        done = subprocess.run([python, "-c", PROBE], **run, check=True)
    return json.loads(done.stdout)


def ours(opts: argparse.Namespace) -> dict[str, Any]:
    """One run of lrsched's side, built as ``dino.loop`` builds it on a CPU; timed up to the normalised views
    (``--crops-only``: up to the uint8 crops, as when the colour work runs on an accelerator)."""
    from lrsched.recipes.dino.augment import Geometry, Photometric
    from lrsched.recipes.dino.data import Sampler, open_folder
    from lrsched.recipes.dino.stream import train_loader

    started, data = time.perf_counter(), open_folder(opts.folder)
    colour = None if opts.crops_only else Photometric(MEAN, STD)
    areas = {"global_scale": (0.4, 1.0), "local_scale": (0.05, 0.4)}  # DINO's (lrsched's default local: 0.1-0.4)
    geometry = Geometry(opts.global_size, opts.local_size, opts.local_crops, data.channels, **areas)
    sampler, stop = Sampler(len(data.train), opts.batch, 1, opts.seed), opts.warmup + opts.batches
    with train_loader(
        data.train, geometry, sampler, rank=0, start=0, stop=stop, workers=opts.workers, photometric=colour
    ) as loader:
        return timed(loader, opts, started)


def command(side: str, cfg: dict[str, Any], folder: Path, workers: int, venv: Path) -> list[str]:
    args = [f"--folder={folder}", f"--workers={workers}", *(f"--{k.replace('_', '-')}={cfg[k]}" for k in INT_FLAGS[1:])]
    if side.startswith("ours"):
        crops = ["--crops-only"] if side == "ours_crops" else []
        return [sys.executable, str(Path(__file__).resolve()), "ours", *args, *crops]
    match = ["--match-lrsched"] if side == "official_matched" else []
    return [str(venv / "bin" / "python"), str(Path(__file__).resolve()), "official", *args, *match]


def run_side(cmd: list[str], threads: int, folder: Path) -> dict[str, Any]:
    """One run after reading the images again (the kernel here evicts cold page cache): its result."""
    for path in folder.rglob("*.jpg"):
        path.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR.parent / "src"), "OMP_NUM_THREADS": str(threads)}
    load, started = round(os.getloadavg()[0], 2), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=BENCH_DIR, timeout=1200)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return {**json.loads(lines[-1][7:]), "wall_seconds": round(time.perf_counter() - started, 2), "load_before": load}


def measure(cfg: dict[str, Any], folder: Path, venv: Path, cache: CellCache) -> list[dict[str, Any]]:
    """``rounds`` rounds; in each, per W, one run of every side in an order rotating with (round, W)."""
    runs = []
    for r, w in itertools.product(range(cfg["rounds"]), cfg["workers"]):
        for position, side in enumerate([*SIDES][(r + w) % len(SIDES) :] + [*SIDES][: (r + w) % len(SIDES)]):
            cmd = command(side, cfg, folder, w, venv)
            res = cache.compute(f"round{r}/w{w}/{side}", lambda cmd=cmd: run_side(cmd, cfg["threads"], folder))
            runs.append({"round": r, "workers": w, "side": side, "position": position, **res})
            print(f"round {r} W={w} {side}: {res['images_per_s']:.1f} images/s, {res['cpu_ms_per_image']:.1f} CPU ms")
    return runs


def summarise(runs: list[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """Per (side, W): median and IQR of images/s and CPU ms/image; ours over each baseline."""
    ws, rounds, cell = cfg["workers"], range(cfg["rounds"]), {(r["round"], r["workers"], r["side"]): r for r in runs}
    keys = ("images_per_s", "cpu_ms_per_image")
    out = {k: {s: {w: quantiles([cell[r, w, s][k] for r in rounds]) for w in ws} for s in SIDES} for k in keys}
    speed, cpu = ({s: {w: out[k][s][w]["median"] for w in ws} for s in SIDES} for k in keys)
    out["ratio_ours_over"] = {b: {w: speed["ours"][w] / speed[b][w] for w in ws} for b in BASES}
    paired = lambda b, w: [cell[r, w, "ours"][keys[0]] / cell[r, w, b][keys[0]] for r in rounds]  # noqa: E731
    out["per_round_ratio_ours_over"] = {b: {w: quantiles(paired(b, w)) for w in ws} for b in BASES}
    out["cpu_ratio_over_ours"] = {b: {w: cpu[b][w] / cpu["ours"][w] for w in ws} for b in BASES}
    out["cpu_ratio_official_over_ours_crops"] = {w: cpu["official"][w] / cpu["ours_crops"][w] for w in ws}
    return out


def report(summary: dict[str, Any], cfg: dict[str, Any], manifest: dict[str, Any], extra: dict[str, Any]) -> str:
    ws, kb, info, s = cfg["workers"], manifest["file_kb"], extra["machine"], summary
    speed = [[w, *(spread(s["images_per_s"][side][w]) for side in SIDES)] for w in ws]
    pair = lambda b, w: [f"{s['ratio_ours_over'][b][w]:.2f}", spread(s["per_round_ratio_ours_over"][b][w], ".2f")]  # noqa: E731
    ratio = [[w, *pair("official", w), *pair("official_matched", w)] for w in ws]
    cpu_ratio = {w: [f"{s['cpu_ratio_over_ours'][b][w]:.2f}" for b in BASES] for w in ws}
    cpu = [[w, *(spread(s["cpu_ms_per_image"][side][w]) for side in SIDES), *cpu_ratio[w]] for w in ws]
    host = [[w, f"{s['cpu_ratio_official_over_ours_crops'][w]:.2f}"] for w in ws]
    quiet = "nothing else running" if extra["load_at_start"] <= QUIET_LOAD else "NOT a quiet machine (--allow-load)"
    venv = ", ".join(f"{k} {v}" for k, v in extra["official"].items())
    return (
        "# DINO data path: images/s of lrsched's stream against DINO's own pipeline\n\n"
        "Per image: JPEG decode, 2 global crops at 224 px (area 0.4-1) and 8 local ones at 96 px (area 0.05-0.4), "
        "colour jitter, grayscale, blur, solarisation, normalisation. `official`: DINO's pipeline from torchvision "
        "parts; `ours`: lrsched's stream as a CPU run uses it (`Photometric` on each batch in the worker that cut its "
        "crops), less work on local crops: blur sigma up to 0.86 px (DINO: 2); `official_matched`: DINO doing that "
        "lighter work; `ours_crops`: lrsched's stream without the colour work, which a GPU run does on the device "
        "(the host's share of the work).\n\n"
        f"Each run a fresh subprocess: {cfg['warmup']} warm-up batches of {cfg['batch']}, then {cfg['batches']} timed; "
        f"{cfg['rounds']} rounds, in each one run per side and W (order rotating); images read again before each run; "
        f"main processes on {cfg['threads']} torch thread. Medians over rounds, IQR in brackets.\n\n"
        + markdown_table(["workers", *(f"{side}: images/s" for side in SIDES)], speed, "r" * (1 + len(SIDES)))
        + "\nOurs over each baseline: ratio of the medians, and median (IQR) of the per-round ratios.\n\n"
        + markdown_table(["workers", *(f"ours / {b}{x}" for b in BASES for x in ("", ", per round"))], ratio, "r" * 5)
        + "\nCPU ms per timed image (the side's process and its workers, from /proc; less disturbed by other jobs).\n\n"
        + markdown_table(["workers", *(f"{x}: CPU ms" for x in SIDES), *(f"{b} / ours" for b in BASES)], cpu, "r" * 7)
        + "\nHost CPU per image when the colour work runs on an accelerator: DINO's full per-image CPU (its "
        "colour work runs in its workers wherever it trains) over lrsched's decode and crops.\n\n"
        + markdown_table(["workers", "official CPU ms / ours_crops CPU ms"], host, "rr")
        + f"\nImages: {cfg['images']} generated JPEGs (quality 90, about 400x350 px) in {cfg['classes']} classes, "
        f"file size median {kb['median']:.1f} KB (IQR {kb['q1']:.1f} - {kb['q3']:.1f}, min {kb['min']:.1f}, max "
        f"{kb['max']:.1f}), {kb['share_50_to_100']:.1%} within 50-100 KB.\n\nCommands of one run (W=2):\n\n"
        + "".join(f"- {side}: `{' '.join(c)}`\n" for side, c in extra["commands"].items())
        + f"\n{info['cpu_model']}, {info['usable_cores']} cores, {quiet} (1-minute load at the start "
        f"{extra['load_at_start']}; before each run, the benchmark's own load, {extra['load'][0]}-{extra['load'][1]}); "
        f"ours: torch {info['packages']['torch']}, Pillow {info['packages']['pillow']}; official venv: {venv}; commit "
        f"{info['git_commit']}. Bench: `{info['command']}`, {extra['wall_seconds']:.0f} s.\n"
    )


E2E_FLAGS = [
    *("--preset", "micro", "--batch-size", "32", "--max-steps", "60", "--warmup-steps", "10"),
    *("--eval-every", "0", "--save-every", "0", "--no-knn"),
]
"""The end-to-end run: phase5_big_run.py on the benchmark's JPEG folder, as a CPU user runs it."""


def end_to_end(folder: Path, workers: int, work: Path) -> dict[str, Any]:
    """One phase5 run with ``--workers``: training images/s (median step) and the share of time spent waiting."""
    out = work / f"e2e-w{workers}"
    cmd = [sys.executable, str(REPO_ROOT / "phase5_big_run.py"), *E2E_FLAGS, "--data-dir", str(folder)]
    cmd += ["--workers", str(workers), "--output-dir", str(out)]
    shutil.rmtree(out, ignore_errors=True)  # the benchmark's own scratch run
    load = round(os.getloadavg()[0], 2)
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")})
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    step = metrics["seconds_per_step_median"]
    return {
        "workers": workers,
        "images_per_s": 32 / step,
        "data_wait_fraction": metrics["data_wait_fraction"],
        "load_before": load,
        "command": " ".join(cmd),
    }


def run_end_to_end(opts: argparse.Namespace, cfg: dict[str, Any], folder: Path) -> None:
    """``--end-to-end``: phase5 at W = 0, 1, 2 on the same folder, ``rounds`` interleaved rounds."""
    runs = [end_to_end(folder, w, opts.work) for _ in range(cfg["rounds"]) for w in cfg["workers"]]
    for r in runs:
        print(f"W={r['workers']}: {r['images_per_s']:.0f} images/s, waiting {r['data_wait_fraction']:.1%}")
    rows = []
    for w in cfg["workers"]:
        mine = [r for r in runs if r["workers"] == w]
        rows.append(
            [
                w,
                spread(quantiles([r["images_per_s"] for r in mine]), ".0f"),
                spread(quantiles([r["data_wait_fraction"] for r in mine]), ".2f"),
            ]
        )
    loads = [r["load_before"] for r in runs]
    text = (
        "# phase5_big_run.py end to end on the benchmark's JPEG folder\n\n"
        f"`{runs[0]['command']}` (W = 0, 1, 2), {cfg['rounds']} interleaved rounds; training images/s from the "
        "median step, and the share of training time spent waiting for data (`metrics.json`). Medians, IQR in "
        "brackets.\n\n"
        + markdown_table(["workers", "images/s", "data_wait_fraction"], rows, "rrr")
        + f"\n1-minute load before each run {min(loads)}-{max(loads)}; {machine_info(('torch',))['cpu_model']}.\n"
    )
    write_text(opts.out / "data_pipeline_end_to_end.md", text)
    write_json(opts.out / "data_pipeline_end_to_end.json", {"runs": runs, "machine": machine_info(("torch",))})
    print(text)


def main() -> None:
    if sys.argv[1:2] in (["ours"], ["official"]):  # one run of one side
        side = ours if sys.argv[1] == "ours" else official
        return print("RESULT " + json.dumps(side(side_options(sys.argv[2:]))), flush=True)
    sys.stdout.reconfigure(line_buffering=True)  # progress lines in a log too
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="160 images, 1 round, 2 timed batches: a smoke test")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side's main process")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "lrsched-bench-data")
    parser.add_argument("--official-venv", type=Path, default=Path("/work/venv-tv"))
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="default: bench/results")
    parser.add_argument("--end-to-end", action="store_true", help="phase5_big_run.py at W = 0, 1, 2 instead")
    parser.add_argument("--allow-load", action="store_true", help=f"run above load {QUIET_LOAD} (marked in the result)")
    opts = parser.parse_args()
    load = round(os.getloadavg()[0], 2)
    print(f"1-minute load average: {load}")
    if load > QUIET_LOAD and not opts.allow_load:
        sys.exit(
            f"data_pipeline.py: the 1-minute load is {load}, above {QUIET_LOAD}: stop other work (tests, "
            "helpers) and wait, or pass --allow-load to run anyway (the result says so)"
        )
    started, name = time.perf_counter(), "data_pipeline" + ("_quick" if opts.quick else "")
    n = (160, 4, 16, 1, 2, opts.rounds or 1) if opts.quick else (2000, 10, 32, 1, 15, opts.rounds or 3)
    cfg = dict(zip(("images", "classes", "batch", "warmup", "batches", "rounds"), n), threads=opts.threads)
    cfg |= {"global_size": 224, "local_size": 96, "local_crops": 8, "workers": [0, 1, 2], "seed": 0}
    if opts.end_to_end:
        return run_end_to_end(opts, cfg, image_folder(opts.work, cfg)[0])
    versions, (folder, manifest) = official_versions(opts.official_venv), image_folder(opts.work, cfg)
    cache = CellCache(name, {**cfg, "folder": str(folder)}, opts.out / "cache", code=[Path(__file__), *OURS_CODE])
    runs = measure(cfg, folder, opts.official_venv, cache)
    summary, loads = summarise(runs, cfg), [r["load_before"] for r in runs]
    commands = {s: command(s, cfg, folder, 2, opts.official_venv) for s in SIDES}
    extra = {"machine": machine_info(("torch", "pillow", "numpy")), "official": versions, "commands": commands}
    extra |= {"load": [min(loads), max(loads)], "load_at_start": load, "wall_seconds": time.perf_counter() - started}
    write_text(opts.out / f"{name}.md", text := report(summary, cfg, manifest, extra))
    write_json(opts.out / f"{name}.json", {**extra, "config": cfg, "images": manifest, **summary, "runs": runs})
    print(text)


if __name__ == "__main__":
    main()
