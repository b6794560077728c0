"""train.py's validation: every flag resolved and checked before anything is written.

``settle`` reads and splits the data, finds the model's folder and tokenizer, sizes the run (docs/design.md
section 2), resolves the plan and reads the checkpoint to resume from; ``load_checked_model`` loads
the model and refuses a checkpoint of another run (``checkpoint.check_resume``) or a batch that cannot fit
(``check_sizes``). A problem is a ``UsageError``: one line naming the flag and the rule.
"""

from __future__ import annotations

import argparse
import datetime
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrsched.errors import UsageError
from lrsched.flags import check_peak
from lrsched.recipes.common.checkpoint import Identity, load_checkpoint, resolve_resume
from lrsched.recipes.common.device import device_memory
from lrsched.recipes.common.distributed import World
from lrsched.recipes.finetune import checkpoint
from lrsched.recipes.finetune import data as D
from lrsched.recipes.finetune import model as M
from lrsched.recipes.finetune import plan as lr_plan
from lrsched.recipes.finetune.flags import PROGRAM_ID, RESUME_FLAG
from lrsched.recipes.finetune.state import Settings
from lrsched.strategy import epoch_size


def settle(args: argparse.Namespace, world: World) -> Settings:
    """Data, model folder and tokenizer, run size, plan and checkpoint, checked; writes nothing."""
    splits = D.load_splits(data_flags(args))
    model_dir = args.model if args.model is not None else M.default_model_dir()
    M.check_model_dir(model_dir)
    tokenizer = M.load_tokenizer(model_dir)
    a = args
    batches, upe = epoch_size(
        len(splits.train),
        a.per_device_train_batch_size,
        a.gradient_accumulation_steps,
        world.size,
        accumulation_flag=lr_plan.ACCUMULATION_FLAG,
    )
    plan = lr_plan.plan_from_args(args, upe)
    check_peak(plan, "--learning_rate")
    output_dir = args.output_dir if args.output_dir is not None else default_output_dir()
    resume_path = resolve_resume(args.resume_from_checkpoint, output_dir, RESUME_FLAG)
    state = None if resume_path is None else load_checkpoint(resume_path, PROGRAM_ID, RESUME_FLAG)
    if state is not None:
        checkpoint.check_not_finished(state, plan, output_dir, resume_path)
    elif args.replan:
        raise UsageError("--replan: only with --resume_from_checkpoint (a new run has no plan to change)")
    return Settings(args, splits, model_dir, tokenizer, batches, upe, plan, output_dir, state, resume_path)


def load_checked_model(settings: Settings, world: World, device: torch.device) -> tuple[nn.Module, Identity]:
    """The model with its new classification head (seeded), and the run's identity, checked against
    the checkpoint when resuming; a batch that cannot fit in memory is refused."""
    torch.manual_seed(settings.args.seed)  # the new classification head
    model = M.load_model(settings.model_dir, settings.splits.label_names)
    identity = checkpoint.identity(settings.args, settings.splits, world, model)
    if settings.resume is not None:
        flag = f"{RESUME_FLAG} {settings.resume_path}"
        checkpoint.check_resume(settings.resume, settings.plan, identity, flag, settings.args.replan)
    check_sizes(settings, world, device, model)
    return model, identity


def data_flags(args: argparse.Namespace) -> D.DataFlags:
    return D.DataFlags(
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        text_column=args.text_column,
        label_column=args.label_column,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        max_test_samples=args.max_test_samples or args.max_eval_samples,
        seed=args.seed,
        max_chars=D.chars_for_tokens(args.max_seq_length),
    )


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def longest_tokens(tokenizer: Any, texts: Sequence[str], limit: int, sample: int = 16) -> int:
    """Tokens of the longest of ``texts`` (by tokenizing the ``sample`` longest by characters), at most ``limit``."""
    longest = sorted(texts, key=len, reverse=True)[:sample]
    if not longest:
        return 1
    enc = tokenizer(longest, truncation=True, max_length=limit)
    return max(len(ids) for ids in enc["input_ids"])


def check_sizes(settings: Settings, world: World, device: torch.device, model: nn.Module) -> None:
    """--max_seq_length within the model's positions; a batch that cannot fit in memory is refused up front.

    Memory is estimated from the padded batch (at most ``--max_seq_length`` tokens, and no more
    than the longest texts need): training keeps about 16 float32 values per hidden unit per
    token per layer (measured on MiniLM, CPU: 19 MB per 128-token text), evaluation about 10
    per hidden unit plus the attention scores. It is compared with all the memory the device has
    (what is free at the moment depends on other processes: a run is not refused for that).
    """
    a, s, tokenizer = settings.args, settings.splits, settings.tokenizer
    config = getattr(model, "config", None)
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    if positions and a.max_seq_length > positions:
        raise UsageError(
            f"--max_seq_length {a.max_seq_length}: more than the {positions} positions "
            f"of the model ({settings.model_dir})"
        )
    memory = device_memory(device)
    hidden, layers, heads = (
        int(getattr(config, k, 0) or 0) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads")
    )
    if memory is None or not (hidden and layers):
        return
    if device.type == "cpu":
        memory //= world.size  # the ranks share the machine's memory
    params = sum(p.numel() for p in model.parameters()) * 4 * 4  # weights, gradients, AdamW's two moments
    w = world.size
    b = min(a.per_device_train_batch_size, math.ceil(len(s.train) / w))
    length = longest_tokens(tokenizer, s.train.texts, a.max_seq_length)
    _fits(
        "--per_device_train_batch_size",
        a.per_device_train_batch_size,
        b,
        length,
        params + b * length * hidden * layers * 16 * 4,
        memory,
    )
    evals = [s.validation, *([s.test] if s.test is not None else [])]
    b = min(a.per_device_eval_batch_size, max(math.ceil(len(e) / w) for e in evals))
    length = max(longest_tokens(tokenizer, e.texts, a.max_seq_length) for e in evals)
    need = params // 4 + b * length * (hidden * 10 + heads * length * 2) * 4
    _fits("--per_device_eval_batch_size", a.per_device_eval_batch_size, b, length, need, memory)


def _fits(flag: str, value: int, batch: int, length: int, need: int, memory: int) -> None:
    """Refuse ``flag value`` when a batch of ``batch`` texts of ``length`` tokens needs more than ``memory``."""
    if need > memory:
        work = "train" if flag == "--per_device_train_batch_size" else "evaluate"
        raise UsageError(
            f"{flag} {value}: a batch of {batch} texts of up to {length} tokens needs about {_gb(need)} "
            f"to {work}, more than the {_gb(memory)} this device has; use a smaller batch"
        )


def default_output_dir() -> Path:
    return Path("runs") / f"train-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
