"""Training samples/s of train.py's loop against Hugging Face ``Trainer`` on the same job.

Usage: ``python bench/throughput_finetune.py [--rounds 10] [--quick]``. The local all-MiniLM-L6-v2 with a
new 3-class head, 640 tweets, batch 32, max length 128, fp32, one thread. Contenders: train.py's own loop
pieces with its defaults (length-grouped batches, cached ids, fused AdamW); ``Trainer`` as it comes (ids
tokenized once, nothing saved, logged or evaluated); ``Trainer`` with ``group_by_length``. Each round runs
every contender once, shuffled, in a fresh process seeded with the round, for two epochs of 20 updates:
the first untimed (warm-up), the second timed whole (Trainer up to ``on_step_end``, so its data loading
counts). A whole epoch, because a length-grouped order is not uniform within it: HF's sampler puts the
longest example in the epoch's first batch, so timing from an epoch's second update on skips Trainer's
longest batch and only a random one of train.py's.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# isort: split
import _common as common

CONTENDERS = {
    "train.py": "train.py (defaults: length-grouped, cached ids, fused AdamW)",
    "hf_trainer": "HF Trainer, defaults",
    "hf_trainer_grouped": "HF Trainer, group_by_length",
}
JOB = {"train": 640, "batch": 32, "max_length": 128, "lr": 4e-5, "weight_decay": 0.01}


def prepare_ours(seed: int, updates: int, out: Path) -> Any:
    """train.py's checked run (data, tokenizer, model, plan) for the job, as its ``main`` builds it."""
    import torch

    from lrsched.recipes.common.distributed import World
    from lrsched.recipes.common.skeleton import checked
    from lrsched.recipes.finetune.flags import parse
    from lrsched.recipes.finetune.main import TrainPy

    flags = (
        f"--max_train_samples {JOB['train']} --max_eval_samples 32 --per_device_train_batch_size {JOB['batch']} "
        f"--max_seq_length {JOB['max_length']} --learning_rate {JOB['lr']} --weight_decay {JOB['weight_decay']} "
        f"--num_epochs 3 --max_steps {updates} --seed {seed} --device cpu --output_dir {out}"
    )
    return checked(TrainPy(), parse(flags.split()), World(), torch.device("cpu"))


def time_ours(seed: int, updates: int, out: Path) -> tuple[list[float], list[int], str]:
    """End time of each update of train.py's loop, each batch's padded length, its optimizer."""
    from lrsched.recipes.finetune import loop

    run = prepare_ours(seed, updates, out)
    per_epoch = run.settings.updates_per_epoch
    ends, lengths = [], []
    for _ in range(updates):
        epoch = run.t // per_epoch
        batch = loop.epoch_batches(run, epoch)[run.t - epoch * per_epoch]
        lengths.append(run.tokens.padded_length(batch))
        loop.update(run, [batch])
        ends.append(time.perf_counter())
    return ends, lengths, describe(run.optimizer)


def time_trainer(grouped: bool, seed: int, updates: int, out: Path) -> tuple[list[float], list[int], str]:
    """The same for ``transformers.Trainer`` on the same model, tweets and settings."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    from lrsched.recipes.finetune import model as M

    run = prepare_ours(seed, updates, out).settings
    train = run.splits.train
    enc = run.tokenizer(train.texts, truncation=True, max_length=JOB["max_length"])
    dataset = [{**{k: v[i] for k, v in enc.items()}, "labels": train.labels[i]} for i in range(len(train))]
    pad = DataCollatorWithPadding(run.tokenizer)
    ends: list[float] = []
    lengths: list[int] = []

    def collate(features: list[dict[str, Any]]) -> Any:
        batch = pad(features)
        lengths.append(int(batch["input_ids"].shape[1]))
        return batch

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            ends.append(time.perf_counter())

    torch.manual_seed(seed)
    targs = TrainingArguments(
        output_dir=str(out / "hf"),
        per_device_train_batch_size=JOB["batch"],
        learning_rate=JOB["lr"],
        weight_decay=JOB["weight_decay"],
        max_grad_norm=1.0,
        max_steps=updates,
        train_sampling_strategy="group_by_length" if grouped else "random",
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=seed,
    )
    model = M.load_model(run.model_dir, run.splits.label_names)
    trainer = Trainer(model=model, args=targs, train_dataset=dataset, data_collator=collate, callbacks=[Clock()])
    trainer.train()
    return ends, lengths, describe(trainer.optimizer)


def describe(optimizer: Any) -> str:
    optimizer = getattr(optimizer, "optimizer", optimizer)
    return f"{type(optimizer).__name__} fused={optimizer.param_groups[0].get('fused')}"


def one_run(name: str, seed: int, warmup: int, block: int) -> dict[str, Any]:
    """``name``'s samples/s over ``block`` updates after ``warmup`` (in this process)."""
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        updates = warmup + block
        timer = time_ours if name == "train.py" else functools.partial(time_trainer, name.endswith("grouped"))
        ends, lengths, optimizer = timer(seed, updates, Path(tmp))
    seconds = ends[updates - 1] - ends[warmup - 1]
    return {
        "samples_per_s": block * JOB["batch"] / seconds,
        "padded_lengths": lengths[warmup:updates],  # the timed batches
        "optimizer": optimizer,
    }


def measure(rounds: int, warmup: int, block: int) -> list[dict[str, Any]]:
    """``rounds`` rounds, each every contender once in a fresh subprocess, order shuffled."""
    rng, rows = random.Random(0), []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for r in range(rounds):
        order = list(CONTENDERS)
        rng.shuffle(order)
        row: dict[str, Any] = {"round": r, "order": order}
        for name in order:
            argv = [sys.executable, __file__, "--one", name, "--seed", str(r), "--warmup", str(warmup)]
            done = subprocess.run([*argv, "--block", str(block)], capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
            row[name] = json.loads(done.stdout.splitlines()[-1])
        rows.append(row)
        print(f"round {r}: " + ", ".join(f"{n} {row[n]['samples_per_s']:.2f}" for n in CONTENDERS), flush=True)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    speed = {n: [row[n]["samples_per_s"] for row in rows] for n in CONTENDERS}
    stats = {n: common.quantiles(speed[n]) for n in CONTENDERS}
    return {
        "samples_per_s": stats,
        "speedup_ratio_of_medians": {n: stats["train.py"]["median"] / stats[n]["median"] for n in CONTENDERS},
        "speedup_per_round": {
            n: common.quantiles([a / b for a, b in zip(speed["train.py"], speed[n])]) for n in CONTENDERS
        },
        "mean_padded_length": {
            n: statistics.fmean(x for row in rows for x in row[n]["padded_lengths"]) for n in CONTENDERS
        },
        "optimizers": {n: rows[0][n]["optimizer"] for n in CONTENDERS},
    }


def markdown(summary: dict[str, Any], cfg: dict[str, Any], info: dict[str, Any]) -> str:
    stats, padded = summary["samples_per_s"], summary["mean_padded_length"]
    ratio, paired = summary["speedup_ratio_of_medians"], summary["speedup_per_round"]
    rows = [
        [
            CONTENDERS[n],
            common.spread(stats[n], ".2f"),
            f"{padded[n]:.1f}",
            f"{ratio[n]:.3f}",
            common.spread(paired[n], ".3f"),
        ]
        for n in CONTENDERS
    ]
    headers = ["contender", "samples/s: median (IQR)", "mean padded length", "train.py speed-up", "per round (IQR)"]
    return "\n".join(
        [
            "# Fine-tuning throughput: train.py's loop vs HF Trainer",
            "",
            f"MiniLM-L6 (3-class head), {JOB['train']} tweets, batch {JOB['batch']}, fp32, CPU, one torch thread. "
            f"{cfg['rounds']} rounds; in each, every contender once in a fresh process (shuffled order, seed = "
            f"round), {cfg['warmup']} warm-up update(s) then {cfg['block']} timed. Optimizers: "
            + ", ".join(f"{n} {o}" for n, o in summary["optimizers"].items())
            + ".",
            "",
            common.markdown_table(headers, rows, "lrrrr"),
            f"Goals (issue 13): train.py >= 1.3x Trainer's defaults: {ratio['hf_trainer']:.3f}x; "
            f">= 1.0x Trainer with group_by_length: {ratio['hf_trainer_grouped']:.3f}x.",
            "",
            common.provenance(info),
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed updates per run (default 20: an epoch)")
    parser.add_argument("--block", type=int, default=20, help="timed updates per run (default 20: the next epoch)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 timed update (a smoke test)")
    parser.add_argument("--one", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.one:
        print(json.dumps(one_run(opts.one, opts.seed, opts.warmup, opts.block)))
        return 0
    cfg = {"rounds": 2, "warmup": 1, "block": 1} if opts.quick else {"rounds": opts.rounds, "warmup": opts.warmup}
    cfg["block"] = 1 if opts.quick else opts.block
    name = "throughput_finetune" + ("_quick" if opts.quick else "")
    code = [Path(__file__), *sorted((common.REPO_ROOT / "src/lrsched/recipes/finetune").glob("*.py"))]
    cache = common.CellCache(name, {**cfg, **JOB}, common.RESULTS_DIR / "cache", code=code)
    rows = cache.compute("rounds", lambda: measure(cfg["rounds"], cfg["warmup"], cfg["block"]))
    summary, info = summarise(rows), common.machine_info(("torch", "transformers"))
    text = markdown(summary, cfg, info)
    common.write_text(common.RESULTS_DIR / f"{name}.md", text)
    common.write_json(common.RESULTS_DIR / f"{name}.json", {"machine": info, "config": cfg, **summary, "rounds": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
