"""Training throughput of train.py's loop against Hugging Face ``Trainer`` on the same job.

Usage: ``python bench/throughput_finetune.py [--quick] [--out DIR] [--no-cache]``
(``make bench`` runs it). All contenders share one process and its torch threads: one by
default (``--threads``), because on this 2-core machine shared with other jobs two threads
were up to 6x slower than one whenever another job was busy.

Contenders, all in this one process, on the same work:

- ``train.py``: the package's own loop pieces with train.py's defaults: ``main.prepare`` (data,
  tokenizer, model, plan), ``loop.build_state`` (model, AdamW in two groups (fused where torch
  has the kernel), ``ScheduledLR``, the training texts tokenized once) and, per update,
  ``loop.epoch_batches`` (the epoch's length-grouped order, computed once per epoch) and
  ``loop.update`` (batches padded from the cached ids, forward, loss, backward, gradient
  clipping, one read of loss and norm, AdamW, scheduler);
- ``hf_trainer``: ``transformers.Trainer`` as it comes: ``DataCollatorWithPadding`` (per-batch
  padding), its default optimizer (``adamw_torch_fused`` with torch >= 2.8) and sampler
  (random), linear schedule, fp32, ``use_cpu=True``, ``report_to=[]``, no saving, logging or
  evaluation, no DataLoader workers. Its dataset is the same tweets, tokenized once up front
  (the usual ``Dataset.map`` practice), so its collator only pads;
- ``hf_trainer_grouped``: the same with ``train_sampling_strategy="group_by_length"`` (what
  ``group_by_length=True`` was before transformers 5: its ``LengthGroupedSampler``).

Same model (local all-MiniLM-L6-v2, a new 3-class head from the same seed), same 640
training tweets (a stratified subset of train.py's split), batch 32, max length 128, weight
decay 0.01, max grad norm 1.0. Each draws its own batch order, so batch padding differs; the
mean padded length (tokens per row of a batch) per contender is reported beside the throughput.

Interleaving: each Trainer runs ``train()`` in its own thread; a callback parks it at the end
of every ``block`` optimizer steps until the main thread lets it run the next block, so no
two contenders ever run at once. One warm-up block of each, then ``rounds`` rounds, each running one
block of each contender in an order shuffled per round. Throughput of a block = its training
samples / its wall time (for Trainer: from release to the callback's ``on_step_end`` after
the block's last step, so its data loading and collation count). Reported: median
samples/s over rounds and the interquartile range per contender, train.py's speed-up over
each (ratio of medians, and the median of the per-round ratios), and padded tokens/s (median
samples/s x mean padded length: the work per token). Defaults: 10 rounds of 4
updates (plus warm-up), about 4 minutes here; ``--quick``: 2 rounds of 1 update.

Outputs under ``bench/results/``: ``throughput_finetune.json`` (machine, versions, command,
every block), ``throughput_finetune.md`` (the table), ``throughput_finetune.png`` (samples/s
per round). The whole measurement is one cell of ``bench/results/cache/``: a finished run is
not repeated unless the settings or the script change (``--no-cache`` forces it).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# isort: split
from _common import BENCH_DIR, RESULTS_DIR, CellCache, machine_info, markdown_table, quantiles, write_json, write_text

from lrsched.render import save_figure

SCRIPT = "throughput_finetune"
SRC = BENCH_DIR.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

CONTENDERS = {
    "train.py": "train.py (defaults: length-grouped, cached ids, fused AdamW)",
    "hf_trainer": "HF Trainer, defaults",
    "hf_trainer_grouped": "HF Trainer, group_by_length",
}
TRAINERS = {"hf_trainer": "random", "hf_trainer_grouped": "group_by_length"}
"""Each Trainer contender's ``train_sampling_strategy``."""
COLOURS = {"train.py": "#1f77b4", "hf_trainer": "#ff7f0e", "hf_trainer_grouped": "#2ca02c"}
WAIT_S = 900.0


def sizes(quick: bool) -> dict[str, Any]:
    base = {"train": 640, "batch": 32, "max_length": 128, "lr": 4e-5, "seed": 0, "weight_decay": 0.01}
    return {**base, "rounds": 2, "block": 1} if quick else {**base, "rounds": 10, "block": 4}


class Gate:
    """Parks Trainer's thread after every ``block`` steps until the main thread releases it."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.go = threading.Semaphore(0)
        self.done = threading.Semaphore(0)
        self.stop = False
        self.steps = 0
        self.error: BaseException | None = None
        self.threads = 0

    def run_block(self) -> float:
        """Let Trainer run one block; its wall time in seconds."""
        start = time.perf_counter()
        self.go.release()
        if not self.done.acquire(timeout=WAIT_S):
            raise RuntimeError("Trainer did not finish its block in time")
        if self.error is not None:
            raise RuntimeError("Trainer failed") from self.error
        return time.perf_counter() - start

    def callback(self) -> Any:
        from transformers import TrainerCallback

        gate = self

        class _Callback(TrainerCallback):  # type: ignore[misc]
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                import torch

                gate.threads = torch.get_num_threads()
                gate.done.release()  # set up: ready for the first block
                gate.go.acquire()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
                gate.steps += 1
                if gate.steps % gate.block == 0:
                    gate.done.release()
                    gate.go.acquire()
                    if gate.stop:
                        control.should_training_stop = True
                return control

        return _Callback()


class PaddedLengths:
    """``DataCollatorWithPadding`` that records each batch's padded length."""

    def __init__(self, tokenizer: Any) -> None:
        from transformers import DataCollatorWithPadding

        self.inner = DataCollatorWithPadding(tokenizer)
        self.lengths: list[int] = []

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self.inner(features)
        self.lengths.append(int(batch["input_ids"].shape[1]))
        return batch


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import Trainer, TrainingArguments

    from lrsched.recipes.common.distributed import World
    from lrsched.recipes.finetune import loop
    from lrsched.recipes.finetune import model as M
    from lrsched.recipes.finetune.flags import parse
    from lrsched.recipes.finetune.main import prepare

    steps = (cfg["rounds"] + 1) * cfg["block"]
    tmp = Path(tempfile.mkdtemp(prefix="throughput_finetune-"))
    args = parse(
        [
            "--max_train_samples",
            str(cfg["train"]),
            "--max_eval_samples",
            "32",
            "--per_device_train_batch_size",
            str(cfg["batch"]),
            "--max_seq_length",
            str(cfg["max_length"]),
            "--learning_rate",
            str(cfg["lr"]),
            "--weight_decay",
            str(cfg["weight_decay"]),
            "--num_epochs",
            "3",
            "--max_steps",
            str(steps),
            "--seed",
            str(cfg["seed"]),
            "--device",
            "cpu",
            "--output_dir",
            str(tmp / "ours"),
        ]
    )
    run = prepare(args, World(), torch.device("cpu"))
    state = loop.build_state(run)
    train = run.splits.train
    ours_lengths: list[int] = []
    ours_step = 0

    def ours_block() -> float:
        nonlocal ours_step
        start = time.perf_counter()
        for _ in range(cfg["block"]):
            epoch = state.step // run.updates_per_epoch
            batches = loop.epoch_batches(run, state, epoch)
            group = [batches[state.step - epoch * run.updates_per_epoch]]
            ours_lengths.append(state.tokens.padded_length(group[0]))  # a list lookup: no time
            loop.update(run, state, group)
            ours_step += 1
        return time.perf_counter() - start

    # Trainer: same model and init, same tweets, pre-tokenized without padding
    enc = run.tokenizer(train.texts, truncation=True, max_length=cfg["max_length"])
    dataset = [{**{k: v[i] for k, v in enc.items()}, "labels": train.labels[i]} for i in range(len(train))]
    gates: dict[str, Gate] = {}
    collators: dict[str, PaddedLengths] = {}
    trainers: dict[str, Any] = {}
    threads = []
    for name, strategy in TRAINERS.items():
        torch.manual_seed(cfg["seed"])
        hf_model = M.load_model(run.model_dir, run.splits.label_names)
        collators[name] = PaddedLengths(run.tokenizer)
        gates[name] = gate = Gate(cfg["block"])
        targs = TrainingArguments(
            output_dir=str(tmp / name),
            per_device_train_batch_size=cfg["batch"],
            learning_rate=cfg["lr"],
            weight_decay=cfg["weight_decay"],
            max_grad_norm=1.0,
            lr_scheduler_type="linear",
            warmup_steps=0,
            max_steps=steps + cfg["block"],  # never ends by itself: the gate stops it
            train_sampling_strategy=strategy,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=cfg["seed"],
        )
        trainers[name] = trainer = Trainer(
            model=hf_model,
            args=targs,
            train_dataset=dataset,
            data_collator=collators[name],
            callbacks=[gate.callback()],
        )

        def hf_thread(trainer: Any = trainer, gate: Gate = gate) -> None:
            try:
                trainer.train()
            except BaseException as err:  # surfaced by the main thread
                gate.error = err
                gate.done.release()

        thread = threading.Thread(target=hf_thread, daemon=True)
        thread.start()
        threads.append(thread)
        if not gate.done.acquire(timeout=WAIT_S) or gate.error is not None:
            raise RuntimeError(f"Trainer ({name}) did not start") from gate.error

    blocks = {"train.py": ours_block, **{name: gates[name].run_block for name in TRAINERS}}
    samples = cfg["block"] * cfg["batch"]
    rng = random.Random(cfg["seed"])
    warmup = {name: round(samples / fn(), 3) for name, fn in blocks.items()}
    print(f"warm-up block: {warmup} samples/s", flush=True)
    rounds = []
    for r in range(cfg["rounds"]):
        order = list(blocks)
        rng.shuffle(order)
        row: dict[str, Any] = {"round": r, "order": order}
        for name in order:
            row[name] = samples / blocks[name]()
        rounds.append(row)
        print(f"round {r}: " + ", ".join(f"{n} {row[n]:.2f}" for n in CONTENDERS) + " samples/s", flush=True)
    for gate in gates.values():
        gate.stop = True
        gate.go.release()
    for thread in threads:
        thread.join(timeout=WAIT_S)

    def optimizer(opt: Any) -> str:
        opt = getattr(opt, "optimizer", opt)
        return f"{type(opt).__name__} fused={opt.param_groups[0].get('fused')}"

    return {
        "warmup_samples_per_s": warmup,
        "rounds": rounds,
        "mean_padded_length": {
            "train.py": statistics.fmean(ours_lengths),
            **{name: statistics.fmean(c.lengths) for name, c in collators.items()},
        },
        "updates": {"train.py": ours_step, **{name: g.steps for name, g in gates.items()}},
        "torch_threads": {"train.py": torch.get_num_threads(), **{name: g.threads for name, g in gates.items()}},
        "optimizers": {
            "train.py": optimizer(state.optimizer),
            **{name: optimizer(t.optimizer) for name, t in trainers.items()},
        },
        "hf_samplers": {name: type(t._get_train_sampler()).__name__ for name, t in trainers.items()},
    }


def draw(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name in CONTENDERS:
        ys = [row[name] for row in result["rounds"]]
        ax.plot(range(len(ys)), ys, "o-", color=COLOURS[name], label=CONTENDERS[name])
        ax.axhline(statistics.median(ys), color=COLOURS[name], ls="--", lw=1)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (one block of each, shuffled order)")
    ax.set_ylabel("training samples / s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("MiniLM-L6 fine-tuning, batch 32, fp32, CPU: throughput per block (dashed: median)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 update (a smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder (default bench/results)")
    parser.add_argument("--no-cache", action="store_true", help="ignore and do not write the cache")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both (default 1; see above)")
    opts = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(opts.threads)  # before torch starts: also Trainer's thread
    import torch

    torch.set_num_threads(opts.threads)
    cfg = {**sizes(opts.quick), "threads": opts.threads}
    name = SCRIPT + ("_quick" if opts.quick else "")
    cache = CellCache(
        name, cfg, opts.out / "cache", code=[Path(__file__), BENCH_DIR / "_common.py"], enabled=not opts.no_cache
    )
    started = time.perf_counter()
    result = cache.compute("measurement", lambda: measure(cfg))
    stats = {n: quantiles([row[n] for row in result["rounds"]]) for n in CONTENDERS}
    ours = stats["train.py"]["median"]
    speedup = {n: ours / stats[n]["median"] for n in CONTENDERS}
    per_round = {n: quantiles([row["train.py"] / row[n] for row in result["rounds"]]) for n in CONTENDERS}
    padded = result["mean_padded_length"]
    rows = [
        [
            CONTENDERS[n],
            f"{stats[n]['median']:.2f}",
            f"{stats[n]['q1']:.2f} - {stats[n]['q3']:.2f}",
            f"{padded[n]:.1f}",
            f"{stats[n]['median'] * padded[n]:.0f}",
            f"{speedup[n]:.3f}",
            f"{per_round[n]['median']:.3f} ({per_round[n]['q1']:.3f} - {per_round[n]['q3']:.3f})",
        ]
        for n in CONTENDERS
    ]
    table = markdown_table(
        [
            "contender",
            "median samples/s",
            "IQR",
            "mean padded length",
            "padded tokens/s",
            "train.py speed-up (ratio of medians)",
            "per-round train.py / it: median (IQR)",
        ],
        rows,
        "lrrrrrr",
    )
    info = machine_info(("torch", "transformers", "accelerate", "numpy"))
    goals = (
        f"Goals (issue 13): train.py >= 1.3x Trainer's defaults: {speedup['hf_trainer']:.3f}x "
        f"({'met' if speedup['hf_trainer'] >= 1.3 else 'not met'}); >= 1.0x Trainer with group_by_length: "
        f"{speedup['hf_trainer_grouped']:.3f}x ({'met' if speedup['hf_trainer_grouped'] >= 1.0 else 'not met'})."
    )
    text = "\n".join(
        [
            "# Fine-tuning throughput: train.py's loop vs HF Trainer",
            "",
            f"MiniLM-L6 (3-class head), {cfg['train']} tweets, batch {cfg['batch']}, per-batch padding, max length "
            f"{cfg['max_length']}, fp32, CPU, {cfg['threads']} torch thread(s). Optimizers: "
            + ", ".join(f"{n} {result['optimizers'][n]}" for n in CONTENDERS)
            + f". {cfg['rounds']} rounds, each one block of "
            f"{cfg['block']} updates of each contender in shuffled order, after one warm-up block each.",
            "",
            table,
            goals,
            "",
            f"Machine: {info['cpu_model']}, {info['usable_cores']} usable cores (shared), "
            f"load {info['load_average_1_5_15min']}; torch {info['packages']['torch']}, "
            f"transformers {info['packages']['transformers']}, accelerate {info['packages']['accelerate']}; "
            f"commit {info['git_commit']}. Command: `{info['command']}`.",
            "",
        ]
    )
    write_text(opts.out / f"{name}.md", text)
    write_json(
        opts.out / f"{name}.json",
        {
            "machine": info,
            "config": cfg,
            "contenders": CONTENDERS,
            "stats": stats,
            "trainpy_speedup_ratio_of_medians": speedup,
            "trainpy_speedup_per_round": per_round,
            "wall_seconds": round(time.perf_counter() - started, 1),
            **result,
        },
    )
    draw(result, opts.out / f"{name}.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
