"""The fine-tuning loop: updates, evaluation, checkpoints, the log and the report.

The step ``t`` (optimizer updates done, ``State.t``) is the single source of truth: the LR
(``State.follow_step``), the epoch, the batches of the next update, the log row and the checkpoint
names all derive from it. Update ``t`` of epoch ``e = t // U`` uses batches
``[(t % U) * A, (t % U + 1) * A)`` of that epoch's order (a pure function of seed and epoch),
so a resumed run continues exactly where the checkpoint was taken.

At an epoch's end the resumable checkpoint is written right after the validation, before
``best/``, ``eval.json`` and the final report, so that a failing report never loses the
epoch's training (``close_epoch``).

Stopping: a signal (SIGINT, SIGTERM, SIGHUP) is acted on at the next safe point: after an
update, between evaluation batches, between the parts of the final report. The run then saves
a checkpoint at its current step (unless that step's checkpoint is already on disk) and ends
with exit status 0; ``--resume_from_checkpoint latest`` redoes whatever the stop cut short (an
end-of-epoch validation, the final report).
"""

from __future__ import annotations

import contextlib
import filecmp
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from lrsched.adoption import OnMismatch
from lrsched.recipes.common.checkpoint import Identity, history_log, set_aside_future
from lrsched.recipes.common.device import autocast
from lrsched.recipes.common.distributed import World, any_rank, barrier, mean_across
from lrsched.recipes.common.faults import INJECT_NAN, NonFiniteLoss, hook_step
from lrsched.recipes.common.runlog import RunLog, say
from lrsched.recipes.common.stopping import StopRequest, stop_together
from lrsched.recipes.finetune import batches as B
from lrsched.recipes.finetune import model as M
from lrsched.recipes.finetune.checkpoint import restore, save
from lrsched.recipes.finetune.evaluation import eval_tokens, evaluate, rank_summary, write_eval
from lrsched.recipes.finetune.metrics import is_better
from lrsched.recipes.finetune.state import Settings, State
from lrsched.torch_sched import ScheduledField

COLUMNS = ("step", "epoch", "lr", "loss", "grad_norm", "seconds")
FINISHED = "finished"
"""How a run that reached the end of its plan ended (``train``'s answer)."""


# ---------------------------------------------------------------- setup


def build_run(settings: Settings, world: World, device: torch.device, model: nn.Module, identity: Identity) -> State:
    """Model on the device, AdamW, the lr as a ``ScheduledField`` of the run's step; restored from the
    checkpoint when resuming (``checkpoint.restore``)."""
    model = model.to(device)
    optimizer = M.adamw(model, settings.plan.schedule.base, settings.args.weight_decay)
    on_mismatch: OnMismatch = "replan" if settings.args.replan else "error"  # checkpoint.check_resume allowed it
    lr = ScheduledField(optimizer, settings.plan.schedule, "lr", on_mismatch=on_mismatch)
    tokens = B.TokenCache(settings.tokenizer, settings.splits.train.texts, settings.args.max_seq_length)
    run = State(settings, world, device, model, model, optimizer, lr, identity, tokens)
    if settings.resume is not None:
        restore(run, settings.resume)
    else:
        torch.manual_seed(settings.args.seed * 1000 + world.rank)  # dropout streams, one per rank
    if world.distributed:
        run.net = DistributedDataParallel(model)
    model.train()
    return run


def save_model(run: State, model: nn.Module, name: str, dedupe_with: str | None = None) -> None:
    """A Hugging Face model directory (weights, config with label names, tokenizer).

    A file that is a hard link (``last/`` sharing ``best/``'s) is unlinked first, so writing one
    never changes the other. With ``dedupe_with``, each written file identical to that folder's
    file of the same name becomes a hard link to it: stored once."""
    if run.world.is_main:
        target = run.settings.output_dir / name
        if target.is_dir():
            for path in target.iterdir():
                if path.is_file() and path.stat().st_nlink > 1:
                    path.unlink()
        M.save_folder(model, run.settings.tokenizer, target)
        if dedupe_with is not None:
            link_identical(target, run.settings.output_dir / dedupe_with)
    barrier(run.world)


def link_identical(folder: Path, reference: Path) -> list[str]:
    """Replace each file of ``folder`` whose bytes equal ``reference``'s file of the same name by a hard
    link to it (a file system without hard links keeps the copy); the names linked."""
    linked = []
    for path in sorted(folder.iterdir()):
        other = reference / path.name
        if not (path.is_file() and other.is_file()) or os.path.samefile(path, other):
            continue
        if path.stat().st_size != other.stat().st_size or not filecmp.cmp(path, other, shallow=False):
            continue
        tmp = path.with_name(f".{path.name}.link-{os.getpid()}")
        try:
            os.link(other, tmp)
        except OSError:
            continue
        os.replace(tmp, path)
        linked.append(path.name)
    return linked


# ---------------------------------------------------------------- one update


def labels_tensor(run: State, indices: list[int]) -> torch.Tensor:
    return torch.tensor([run.settings.splits.train.labels[i] for i in indices]).to(run.device, non_blocking=True)


def update(run: State, group: list[list[int]]) -> tuple[float, float, float]:
    """One optimizer update over ``group`` (A batches); returns (lr used, mean loss, grad norm).

    The loss is the mean over the group's examples (each micro-batch weighted by its size),
    so a short last batch or a partial last accumulation counts each example once. The batches
    come padded from the token cache; the loss and the gradient norm reach the host together, in
    one transfer after the backward passes (the one wait on the device per update, which the
    non-finite check before ``optimizer.step()`` needs).
    """
    lr = float(run.optimizer.param_groups[0]["lr"])
    n = sum(len(b) for b in group)
    total = torch.zeros((), device=run.device)
    for i, indices in enumerate(group):
        enc = B.to_device(run.tokens.batch(indices), run.device)
        sync = not run.world.distributed or i == len(group) - 1
        with contextlib.nullcontext() if sync else run.net.no_sync():  # type: ignore[operator]
            with autocast(run.device, run.settings.args.bf16):
                logits = run.net(**enc).logits
            loss = F.cross_entropy(logits.float(), labels_tensor(run, indices), reduction="sum") / n
            loss.backward()
        total += loss.detach()
    norm = grad_norm(run)
    mean_loss, norm_value = torch.stack([mean_across(total, run.world).float(), norm.float()]).tolist()
    if hook_step(INJECT_NAN) == run.t:
        mean_loss = float("nan")
    if not math.isfinite(mean_loss):
        raise NonFiniteLoss(f"training loss is {mean_loss} at step {run.t}; stopped before that update")
    if not math.isfinite(norm_value):
        raise NonFiniteLoss(f"gradient norm is {norm_value} at step {run.t}; stopped before that update")
    run.mid_step = True  # from the weights' change to the step's count: not a state to save
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.t += 1
    run.follow_step()
    run.mid_step = False
    return lr, mean_loss, norm_value


def grad_norm(run: State) -> torch.Tensor:
    """The global gradient norm (a tensor on the device), clipped to --max_grad_norm when that is > 0."""
    params = [p for p in run.model.parameters() if p.grad is not None]
    limit = run.settings.args.max_grad_norm
    if limit > 0:
        return torch.nn.utils.clip_grad_norm_(params, limit)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))


def epoch_batches(run: State, epoch: int) -> list[list[int]]:
    """This rank's batches of ``epoch`` (``B.rank_batches``, length-grouped unless --no_group_by_length),
    computed once per epoch."""
    if run.order is None or run.order[0] != epoch:
        a = run.settings.args
        lengths = None if a.no_group_by_length else run.tokens.lengths
        n = len(run.settings.splits.train)
        batches = B.rank_batches(n, a.per_device_train_batch_size, a.seed, epoch, *_rw(run), lengths=lengths)
        run.order = (epoch, batches)
    return run.order[1]


# ---------------------------------------------------------------- evaluation


def end_epoch(run: State, stop: StopRequest | None = None) -> dict[str, Any]:
    """Validate at the end of an epoch (or of the run) and record it; ``run.best`` follows the best by
    ``--metric_for_best_model`` (``metrics.is_better``; ``best/`` is written by ``report_epoch``, after
    the checkpoint)."""
    step = run.t
    result = {"epoch": round(step / run.settings.updates_per_epoch, 4), "step": step}
    tokens = eval_tokens(run, "validation", run.settings.splits.validation)
    result.update(evaluate(run, run.model, run.settings.splits.validation, stop, tokens))
    run.history.append(result)
    a = run.settings.args
    if is_better(result, run.best, a.metric_for_best_model, a.greater_is_better):
        run.best = dict(result)
    return result


def report_epoch(run: State, result: dict[str, Any]) -> None:
    """What a validation writes: ``best/`` when it is the best so far, then ``eval.json`` (which thus
    names the best model only once ``best/`` holds it), and its line."""
    if run.best is not None and run.best["step"] == result["step"]:
        save_model(run, run.model, "best")
    write_eval(run, None)
    say(run.world, f"epoch {result['epoch']:g} step {result['step']}: validation {_fmt(result)}")


def best_is_missing(run: State) -> bool:
    """Whether the resumed checkpoint's model is the best one but ``best/`` may not hold it (a run that
    failed between its checkpoint and ``best/``: ``eval.json`` then names an older best, or none)."""
    missing = False
    if run.world.is_main and run.best is not None and run.best["step"] == run.t:
        try:
            saved = json.loads((run.settings.output_dir / "eval.json").read_text()).get("best") or {}
        except (OSError, ValueError, AttributeError):
            saved = {}
        missing = saved.get("step") != run.t or not (run.settings.output_dir / "best" / "config.json").is_file()
    return any_rank(missing, run.world, run.device)


# ---------------------------------------------------------------- the loop


def epoch_end(run: State, step: int) -> bool:
    total = run.settings.plan.schedule.total
    return step > 0 and (step % run.settings.updates_per_epoch == 0 or step == total)


def close_epoch(run: State, stop: StopRequest) -> None:
    """The end of an epoch: validation, then the resumable checkpoint, then ``best/`` and ``eval.json``.

    The checkpoint comes before every report, so that a failure in one (a full disk under
    ``best/``, an unwritable file) never loses the epoch's training (a failed validation leaves
    the state whole: the skeleton saves it, ``skeleton._fail``)."""
    result = end_epoch(run, stop)
    save(run)
    report_epoch(run, result)


def run_updates(run: State, bar: tqdm[Any], stop: StopRequest) -> None:
    """Updates from the current step to T; a signal raises ``Stopped`` at the next safe point."""
    a, upe = run.settings.args, run.settings.updates_per_epoch
    total = run.settings.plan.schedule.total
    assert total is not None
    accum = a.gradient_accumulation_steps
    if run.settings.resume is not None and best_is_missing(run):
        save_model(run, run.model, "best")  # the checkpoint was written, best/ was not
    if epoch_end(run, run.t) and not (run.history and run.history[-1]["step"] == run.t):
        close_epoch(run, stop)  # a stop cut this validation short: do it now
    while run.t < total:
        stop_together(stop, run.world, run.device)
        epoch = run.t // upe
        batches = epoch_batches(run, epoch)
        k = run.t - epoch * upe
        started = time.perf_counter()
        lr, loss, norm = update(run, batches[k * accum : (k + 1) * accum])
        row = {"step": run.t - 1, "epoch": epoch + 1, "lr": lr, "loss": loss, "grad_norm": norm}
        row["seconds"] = round(time.perf_counter() - started, 4)
        if run.log is not None:
            run.log.write(row)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}")
        if run.t == total:
            bar.close()  # complete: what follows is printed under it, the bar not drawn again
        if k == upe - 1 or run.t == total:
            close_epoch(run, stop)
        elif a.save_steps and run.t % a.save_steps == 0:
            save(run)


def _rw(run: State) -> tuple[int, int]:
    return run.world.rank, run.world.size


def _fmt(result: dict[str, Any]) -> str:
    return f"loss {result['loss']:.4f}, accuracy {result['accuracy']:.4f}, macro-F1 {result['macro_f1']:.4f}"


def finish(run: State, stop: StopRequest) -> dict[str, Any] | None:
    """Save the last model, test the best one, write eval.json and curves.png (a stop between parts
    leaves the step's checkpoint; resuming it redoes the report)."""
    stop_together(stop, run.world, run.device)
    save_model(run, run.model, "last", dedupe_with="best")
    stop_together(stop, run.world, run.device)
    ranks = rank_summary(run)
    test: dict[str, Any] | None = None
    if run.settings.splits.test is not None:
        best = M.load_model(run.settings.output_dir / "best", run.settings.splits.label_names).to(run.device)
        assert run.best is not None
        test = {"model": f"best (epoch {run.best['epoch']:g}, step {run.best['step']})"}
        test.update(
            evaluate(run, best, run.settings.splits.test, stop, eval_tokens(run, "test", run.settings.splits.test))
        )
    stop_together(stop, run.world, run.device)
    write_eval(run, test, ranks)
    if run.world.is_main:
        from lrsched.recipes.finetune.curves import draw_curves

        draw_curves(run.settings.output_dir)
    return test


def open_log(run: State) -> RunLog | None:
    """Rank 0's log.csv. Resuming from a checkpoint older than the folder's newest abandons the
    steps after it: their checkpoints move aside (``set_aside_future``) before the log is cut back."""
    if not run.world.is_main:
        return None
    if run.settings.resume is None:
        return RunLog(run.settings.output_dir, COLUMNS)
    directory = run.settings.output_dir / "checkpoints"
    history = history_log(run.settings.resume_path, run.settings.output_dir)  # before the future moves
    moved = set_aside_future(directory, run.t, run.settings.resume_path)
    if moved is not None:
        print(f"resuming from step {run.t}: the checkpoints of later steps moved to {moved}", flush=True)
    return RunLog(run.settings.output_dir, COLUMNS, resume_step=run.t, history=history)


def train(run: State, stop: StopRequest) -> str:
    """Train from the current step to the plan's end, then the final report (``finish``); ``FINISHED``.

    A signal raises ``Stopped`` at the next safe point (the skeleton saves and exits 0)."""
    total = run.settings.plan.schedule.total
    hide = not run.world.is_main or run.settings.args.disable_tqdm
    with tqdm(total=total, initial=run.t, disable=hide, unit="update") as bar:
        stop_together(stop, run.world, run.device)
        run_updates(run, bar, stop)
    if run.log is not None:
        run.log.close()
    run.test = finish(run, stop)
    return FINISHED


def result_lines(run: State) -> list[str]:
    """The best validation and the test result, as printed at the end."""
    best = run.best or {}
    lines = [f"best validation: epoch {best.get('epoch', 0):g}, {_fmt(best)}" if best else "no validation"]
    if run.test is not None:
        lines.append(f"test ({run.test['model']}): {_fmt(run.test)}")
    return lines
