"""DINO's data path on the same 20,000 JPEGs as a folder and as WebDataset shards: start-up and images/s at 0, 1
and 2 DataLoader workers beside DINO's own pipeline on the folder, and peak memory with 20,000 and 200,000 samples.

Usage: ``.venv/bin/python bench/data_shards.py [--quick] [--rounds 3] [--part speed|memory|all]``:
``bench/results/data_shards.{json,md}``, runs cached in ``bench/results/cache/``.

Sides, each run a fresh subprocess: ``official``, DINO's pipeline (torchvision ``ImageFolder``, its multi-crop,
``DataLoader``) on the folder, in the bench-only venv of ``data_pipeline.py``; ``folder`` and ``shards``, lrsched's
stream as a CPU run of phase5 uses it (``load_dataset`` of the ``--data-dir``, ``train_loader`` with ``Photometric``
in the workers) on the folder and on its shards (``python -m lrsched.recipes.dino.make_shards``, 1,000 images a
shard). Start-up is the time from before the listing to the first batch (listing, the start-up sample, workers
started, the first batch made); images/s is over the batches after it. The page cache holds the data before each
run (the folder's files or the shards read once), as in ``data_pipeline.py``.

The speed part refuses to start above a 1-minute load of ``QUIET_LOAD`` (``--allow-load`` runs it anyway and
marks the result): timings beside other work hide scaling. The memory part (peak RSS of the main process and of
each worker, from ``/proc``, with 20,000 samples listed and with 200,000: the same files hard-linked ten times
into the folder and the same shards hard-linked ten times into the shard set) runs at any load.
"""

import argparse
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import data_pipeline as dp
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

SIDES = {
    "official": "DINO (torchvision) on the folder",
    "folder": "lrsched on the folder",
    "shards": "lrsched on the shards",
}
QUIET_LOAD = 0.5
"""Highest 1-minute load average at which the speed part starts (as ``data_pipeline.py``)."""
PER_SHARD = 1000
"""Images a shard (``make_shards --max-count``): 20 shards of about 68 MB for 20,000 images."""
REPEATS = 10
"""The larger listing of the memory part: every file (and every shard) ten times, as hard links."""
OURS_CODE = [
    REPO_ROOT / "src/lrsched/recipes/dino" / f"{m}.py" for m in ("augment", "data", "files", "shards", "stream")
]
"""The library code of ``folder`` and ``shards``: part of the cache key with this file."""
INT_FLAGS = ("workers", "batch", "global_size", "local_size", "local_crops", "warmup", "batches", "seed")


# --- one run of one side (in its own process) ---------------------------------------------------------


def side_options(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one run of one side")
    parser.add_argument("--data", required=True, help="a folder, or a shard pattern (lrsched sides)")
    for name in INT_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=int, required=True)
    opts = parser.parse_args(argv)
    opts.folder, opts.match_lrsched, opts.crops_only = Path(opts.data), False, False  # data_pipeline's names
    return opts


def proc_status(pid: int | str) -> dict[str, float]:
    """Peak and current resident memory (MB) of process ``pid``, and its proportional share (PSS)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024
    rollup = Path(f"/proc/{pid}/smaps_rollup")
    pss = [line for line in rollup.read_text().splitlines() if line.startswith("Pss:")] if rollup.exists() else []
    return {
        "peak_rss_mb": fields["VmHWM"],
        "rss_mb": fields["VmRSS"],
        "pss_mb": int(pss[0].split()[1]) / 1024 if pss else 0,
    }


def memory() -> dict[str, Any]:
    """This process's memory and its live children's (the DataLoader workers), now."""
    children = [c for t in Path("/proc/self/task").glob("*/children") for c in t.read_text().split()]
    workers = []
    for pid in children:
        with contextlib.suppress(OSError):  # it ended meanwhile
            workers.append(proc_status(pid))
    return {"main": proc_status("self"), "workers": workers}


def official(opts: argparse.Namespace) -> dict[str, Any]:
    """DINO's side (in the bench-only venv): ``ImageFolder`` of the folder, its multi-crop, ``DataLoader``."""
    import random

    import torch

    torch.manual_seed(opts.seed)
    random.seed(opts.seed)
    started = time.perf_counter()
    dataset = dp.import_torchvision().datasets.ImageFolder(opts.folder, transform=dp.multi_crop(opts))
    opened = time.perf_counter() - started
    loader = torch.utils.data.DataLoader(dataset, opts.batch, shuffle=True, num_workers=opts.workers, drop_last=True)
    batches = iter(loader)
    result = dp.timed(batches, opts, started)
    return {**result, "open_seconds": opened, "samples": len(dataset), "memory": memory()}


def ours(opts: argparse.Namespace) -> dict[str, Any]:
    """lrsched's side on a folder or shards, built as ``dino.loop`` builds it on a CPU (``dp.ours``), but the
    data opened as phase5 opens ``--data-dir`` (``load_dataset``: a folder, or a shard pattern)."""
    from lrsched.recipes.dino.augment import Geometry, Photometric
    from lrsched.recipes.dino.data import Sampler, load_dataset
    from lrsched.recipes.dino.stream import train_loader

    started = time.perf_counter()
    data = load_dataset(opts.data)
    opened = time.perf_counter() - started
    areas = {"global_scale": (0.4, 1.0), "local_scale": (0.05, 0.4)}  # DINO's, as dp.ours
    geometry = Geometry(opts.global_size, opts.local_size, opts.local_crops, data.channels, **areas)
    sampler, stop = Sampler(len(data.train), opts.batch, 1, opts.seed), opts.warmup + opts.batches
    colour = Photometric(dp.MEAN, dp.STD)
    with train_loader(
        data.train, geometry, sampler, rank=0, start=0, stop=stop, workers=opts.workers, photometric=colour
    ) as loader:
        result = dp.timed(loader, opts, started)
        return {**result, "open_seconds": opened, "samples": len(data.listings[0]), "memory": memory()}


# --- the data: the folder, its shards, and both ten times over --------------------------------------------


def child_env(threads: int = 1) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": str(threads)}


def fresh(out: Path) -> Path:
    """``out``, emptied first when a build of it did not finish (no ``done`` file): the benchmark's own scratch."""
    import shutil

    if out.exists() and not (out / "done").exists():
        shutil.rmtree(out)
    return out


def shard_set(folder: Path, per_shard: int) -> tuple[Path, int]:
    """The folder's shards, written once by make_shards: their folder and number."""
    out = fresh(folder.with_name(f"{folder.name}-shards{per_shard}"))
    if not out.exists():
        pattern = f"{out}/train-%06d.tar"
        cmd = [sys.executable, "-m", "lrsched.recipes.dino.make_shards", str(folder), pattern]
        done = subprocess.run([*cmd, "--max-count", str(per_shard)], capture_output=True, text=True, env=child_env())
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")
        print(done.stdout.strip())
        (out / "done").touch()
    return out, len(list(out.glob("train-*.tar")))


def braces(shards: Path, count: int) -> str:
    return f"{shards}/train-{{{0:06d}..{count - 1:06d}}}.tar"


def repeated_folder(folder: Path) -> Path:
    """Every image of ``folder`` ``REPEATS`` times (hard links ``img00001-r3.jpg``), in the same class folders."""
    out = fresh(folder.with_name(f"{folder.name}-x{REPEATS}"))
    if not out.exists():
        for path in sorted(folder.glob("*/*.jpg")):
            (out / path.parent.name).mkdir(parents=True, exist_ok=True)
            for r in range(REPEATS):
                os.link(path, out / path.parent.name / f"{path.stem}-r{r}{path.suffix}")
        (out / "done").touch()
    return out


def repeated_shards(shards: Path, count: int) -> Path:
    """The shard set ``REPEATS`` times (shard ``j`` a hard link to shard ``j mod count``)."""
    out = fresh(shards.with_name(f"{shards.name}-x{REPEATS}"))
    if not out.exists():
        out.mkdir()
        for j in range(count * REPEATS):
            os.link(shards / f"train-{j % count:06d}.tar", out / f"train-{j:06d}.tar")
        (out / "done").touch()
    return out


# --- runs ----------------------------------------------------------------------------------------------


def command(side: str, data: str, workers: int, cfg: dict[str, Any], venv: Path) -> list[str]:
    args = [f"--data={data}", f"--workers={workers}", *(f"--{k.replace('_', '-')}={cfg[k]}" for k in INT_FLAGS[1:])]
    if side == "official":
        return [str(venv / "bin" / "python"), str(Path(__file__).resolve()), "official", *args]
    return [sys.executable, str(Path(__file__).resolve()), "ours", *args]


def run_side(cmd: list[str], threads: int, warm: list[Path]) -> dict[str, Any]:
    """One run, after reading ``warm`` (the side's data files) into the page cache: its result."""
    for path in warm:
        path.read_bytes()
    load, started = round(os.getloadavg()[0], 2), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(threads), cwd=BENCH_DIR, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return {**json.loads(lines[-1][7:]), "wall_seconds": round(time.perf_counter() - started, 2), "load_before": load}


def measure_speed(cfg: dict[str, Any], data: dict[str, str], warm: dict[str, list[Path]], venv: Path, cache: CellCache):
    """``rounds`` rounds; in each, per W, one run of every side in an order rotating with (round, W)."""
    runs = []
    for r, w in itertools.product(range(cfg["rounds"]), cfg["workers"]):
        order = [*SIDES][(r + w) % len(SIDES) :] + [*SIDES][: (r + w) % len(SIDES)]
        for side in order:
            cmd = command(side, data[side], w, cfg, venv)
            res = cache.compute(
                f"speed/round{r}/w{w}/{side}", lambda c=cmd, s=side: run_side(c, cfg["threads"], warm[s])
            )
            runs.append({"round": r, "workers": w, "side": side, **res})
            print(
                f"round {r} W={w} {side}: start-up {res['warmup_seconds']:.2f} s (listing {res['open_seconds']:.2f}), "
                f"{res['images_per_s']:.1f} images/s"
            )
    return runs


def memory_of(mem: dict[str, Any]) -> dict[str, float]:
    """A run's memory in MB: the main process's peak, the largest worker's peak, and the sum of all their PSS."""
    workers = mem["workers"]
    return {
        "main_peak_mb": mem["main"]["peak_rss_mb"],
        "worker_peak_mb": max((p["peak_rss_mb"] for p in workers), default=0.0),
        "pss_total_mb": mem["main"]["pss_mb"] + sum(p["pss_mb"] for p in workers),
    }


def measure_memory(cfg: dict[str, Any], sizes: dict[int, dict[str, str]], venv: Path, cache: CellCache):
    """Per side, number of samples listed and W in (0, 2): one run, its peak memory."""
    runs = []
    for n, w, side in itertools.product(sizes, (0, 2), SIDES):
        cmd = command(side, sizes[n][side], w, {**cfg, "batches": 3}, venv)
        res = cache.compute(f"memory/{n}/w{w}/{side}", lambda c=cmd: run_side(c, cfg["threads"], []))
        mem = res["memory"]
        runs.append({"listed": n, "workers": w, "side": side, "samples": res["samples"], **memory_of(mem)})
        print(f"{n} listed, W={w}, {side}: " + ", ".join(f"{k} {v:.0f}" for k, v in memory_of(mem).items()))
    return runs


# --- summaries and the report -----------------------------------------------------------------------------

SPEED_KEYS = ("images_per_s", "warmup_seconds", "open_seconds", "cpu_ms_per_image")


def summarise_speed(runs: list[dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """Per (side, W): median and IQR of each of ``SPEED_KEYS``; per-round ratios of images/s and start-up."""
    ws, rounds, cell = cfg["workers"], range(cfg["rounds"]), {(r["round"], r["workers"], r["side"]): r for r in runs}
    out: dict[str, Any] = {
        k: {s: {w: quantiles([cell[r, w, s][k] for r in rounds]) for w in ws} for s in SIDES} for k in SPEED_KEYS
    }
    pairs = {
        "shards/folder": ("shards", "folder"),
        "shards/official": ("shards", "official"),
        "folder/official": ("folder", "official"),
    }
    for key, name in (("images_per_s", "speed_ratio"), ("warmup_seconds", "startup_ratio")):
        out[name] = {
            label: {w: quantiles([cell[r, w, a][key] / cell[r, w, b][key] for r in rounds]) for w in ws}
            for label, (a, b) in pairs.items()
        }
    return out


def speed_report(summary: dict[str, Any], cfg: dict[str, Any], loads: list[float], load_at_start: float) -> str:
    """The speed tables, from a summary read back from JSON (workers as strings)."""
    s, ws = summary, [str(w) for w in cfg["workers"]]
    speed = [[w, *(spread(s["images_per_s"][side][w]) for side in SIDES)] for w in ws]
    ratio = [[w, *(spread(s["speed_ratio"][p][w], ".2f") for p in s["speed_ratio"])] for w in ws]
    start = [
        [
            w,
            *(
                f"{spread(s['warmup_seconds'][x][w], '.2f')}; listing {s['open_seconds'][x][w]['median']:.2f}"
                for x in SIDES
            ),
        ]
        for w in ws
    ]
    start_ratio = [[w, *(spread(s["startup_ratio"][p][w], ".2f") for p in s["startup_ratio"])] for w in ws]
    quiet = "Nothing else running" if load_at_start <= QUIET_LOAD else "NOT a quiet machine (--allow-load)"
    return (
        f"{cfg['rounds']} interleaved rounds, in each one run per side and W (order rotating), each a fresh process; "
        f"{cfg['warmup']} warm-up batch of {cfg['batch']}, then {cfg['batches']} timed; main processes on "
        f"{cfg['threads']} torch thread; the data in the page cache before each run. Medians over rounds, IQR in "
        f"brackets. {quiet}: 1-minute load {load_at_start} at the start, {min(loads)}-{max(loads)} before the runs.\n\n"
        "Images/s after the first batch:\n\n"
        + markdown_table(["workers", *(f"{x}: images/s" for x in SIDES)], speed, "rrrr")
        + "\nRatios of images/s, per round:\n\n"
        + markdown_table(["workers", *s["speed_ratio"]], ratio, "rrrr")
        + "\nStart-up: seconds from before the listing to the first batch (the listing alone, `ImageFolder` or "
        "`load_dataset` with its start-up sample, after it):\n\n"
        + markdown_table(["workers", *(f"{x}: start-up s" for x in SIDES)], start, "rrrr")
        + "\nRatios of start-up times, per round:\n\n"
        + markdown_table(["workers", *s["startup_ratio"]], start_ratio, "rrrr")
    )


def memory_report(runs: list[dict[str, Any]], sizes: list[int]) -> str:
    """The memory table: per side and W, each measure at both sizes and the larger over the smaller."""
    cell = {(r["listed"], r["workers"], r["side"]): r for r in runs}
    keys = {"main_peak_mb": "main peak", "worker_peak_mb": "largest worker peak", "pss_total_mb": "all, PSS"}
    rows = []
    for side, w in itertools.product(SIDES, (0, 2)):
        row: list[object] = [side, w]
        for key in keys if w else ("main_peak_mb", "pss_total_mb"):
            small, large = (cell[n, w, side][key] for n in sizes)
            row.append(f"{small:.0f} -> {large:.0f} ({large / small:.3f})")
        rows.append(row if w else [*row[:3], "-", row[3]])
    headers = ["side", "workers", *(f"{label}, MB" for label in keys.values())]
    return (
        f"Memory of the data path after 4 batches, with {sizes[0]:,} -> {sizes[1]:,} samples listed (the larger: every "
        f"image hard-linked {REPEATS} times into the same class folders, and the shard set linked {REPEATS} times "
        "over), the larger over the smaller in brackets; one run each. Peak resident memory (`VmHWM`) of the main "
        "process and of the largest worker, and the proportional set size (PSS) of all of them at the end, which "
        "counts shared pages once.\n\n" + markdown_table(headers, rows, "lrrrr")
    )


def provenance(part: dict[str, Any]) -> str:
    info = part["machine"]
    return (
        f"{info['cpu_model']}, {info['usable_cores']} cores, commit {info['git_commit']}, {info['timestamp_utc']}: "
        f"`{info['command']}`"
    )


def report(results: dict[str, Any], cfg: dict[str, Any], speed_command: str) -> str:
    """The results page: the data, the speed tables (or the command that measures them), the memory table."""
    speed, memory, kb = results.get("speed"), results.get("memory"), results["images"]["file_kb"]
    speed_text = (
        speed_report(speed["summary"], cfg, speed["loads"], speed["load_at_start"]) + f"\n{provenance(speed)}.\n"
        if speed
        else f"**To be measured on a quiet machine** (1-minute load below {QUIET_LOAD}, nothing else running): "
        f"`{speed_command}` (from `bench/`).\n"
    )
    memory_text = memory_report(memory["runs"], memory["sizes"]) + f"\n{provenance(memory)}.\n" if memory else ""
    versions = ", ".join(f"{k} {v}" for k, v in results["official"].items())
    return (
        "# DINO's data path from a folder and from WebDataset shards of it\n\n"
        f"The same {cfg['images']:,} generated JPEGs (about 400x350 px, median {kb['median']:.1f} KB, "
        f"{cfg['classes']} class folders) as a folder and as {results['shards']} shards written by `python -m "
        f"lrsched.recipes.dino.make_shards` ({cfg['per_shard']:,} images a shard). Per image: decode, 2 global crops "
        f"at {cfg['global_size']} px and {cfg['local_crops']} local at {cfg['local_size']} px, colour jitter, "
        "grayscale, blur, solarisation, normalisation. `official`: DINO's pipeline (torchvision `ImageFolder`, its "
        "multi-crop, `DataLoader`) on the folder, in a bench-only venv "
        f"({versions}); `folder` and `shards`: lrsched's stream as a CPU run of phase5 uses it, the data opened as "
        "`--data-dir` opens it.\n\n## Start-up and images/s\n\n"
        + speed_text
        + (f"\n## Memory, {memory['sizes'][0]:,} against {memory['sizes'][1]:,} samples listed\n\n" if memory else "")
        + memory_text
    )


def main() -> None:
    if sys.argv[1:2] in (["ours"], ["official"]):  # one run of one side
        side = ours if sys.argv[1] == "ours" else official
        return print("RESULT " + json.dumps(side(side_options(sys.argv[2:]))), flush=True)
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="400 images, 1 round, 2 timed batches: a smoke test")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the speed part (default 3)")
    parser.add_argument("--part", choices=("speed", "memory", "all"), default="all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side's main process")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "lrsched-bench-data")
    parser.add_argument("--official-venv", type=Path, default=Path("/work/venv-tv"))
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="default: bench/results")
    parser.add_argument("--allow-load", action="store_true", help=f"time above load {QUIET_LOAD} (marked as such)")
    opts = parser.parse_args()
    load = round(os.getloadavg()[0], 2)
    print(f"1-minute load average: {load}")
    if opts.part != "memory" and load > QUIET_LOAD and not opts.allow_load:
        sys.exit(
            f"data_shards.py: the 1-minute load is {load}, above {QUIET_LOAD}: stop other work and wait, or pass "
            "--allow-load to time anyway (the result says so); --part memory measures memory at any load"
        )
    name = "data_shards" + ("_quick" if opts.quick else "")
    n = (
        (400, 4, 16, 1, 2, opts.rounds or 1, 100)
        if opts.quick
        else (20_000, 10, 32, 1, 15, opts.rounds or 3, PER_SHARD)
    )
    cfg = dict(zip(("images", "classes", "batch", "warmup", "batches", "rounds", "per_shard"), n), threads=opts.threads)
    cfg |= {"global_size": 224, "local_size": 96, "local_crops": 8, "workers": [0, 1, 2], "seed": 0}
    folder, manifest = dp.image_folder(opts.work, cfg)
    shards, count = shard_set(folder, cfg["per_shard"])
    data = {"official": str(folder), "folder": str(folder), "shards": braces(shards, count)}
    versions = dp.official_versions(opts.official_venv)
    cache = CellCache(name, {**cfg, "folder": str(folder)}, opts.out / "cache", code=[Path(__file__), *OURS_CODE])
    saved_path = opts.out / f"{name}.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
    results = {k: saved[k] for k in ("speed", "memory") if saved.get("config") == cfg and k in saved}
    if opts.part in ("memory", "all"):
        big = {"official": str(repeated_folder(folder)), "folder": str(repeated_folder(folder))}
        big["shards"] = braces(repeated_shards(shards, count), count * REPEATS)
        sizes = {cfg["images"]: data, cfg["images"] * REPEATS: big}
        runs = measure_memory(cfg, sizes, opts.official_venv, cache)
        results["memory"] = {"sizes": list(sizes), "runs": runs, "machine": machine_info(("torch", "pillow"))}
    if opts.part in ("speed", "all"):
        warm = {"official": sorted(folder.glob("*/*.jpg")), "shards": sorted(shards.glob("*.tar"))}
        warm["folder"] = warm["official"]
        runs = measure_speed(cfg, data, warm, opts.official_venv, cache)
        loads = [r["load_before"] for r in runs]
        results["speed"] = {"summary": summarise_speed(runs, cfg), "runs": runs, "loads": loads, "load_at_start": load}
        results["speed"]["machine"] = machine_info(("torch", "pillow"))
    results |= {"config": cfg, "images": manifest, "shards": count, "official": versions}
    speed_command = "../.venv/bin/python data_shards.py --part speed" + (" --quick" if opts.quick else "")
    results = json.loads(json.dumps(results))  # as it reads back: the same report from a later --part run
    write_json(saved_path, results)
    write_text(opts.out / f"{name}.md", text := report(results, cfg, speed_command))
    print(text)


if __name__ == "__main__":
    main()
