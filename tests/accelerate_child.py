"""One rank of the 2-process Accelerate check (run by test_torch_sched under torchrun, CPU, gloo).

``python accelerate_child.py A|B|naive OUT_DIR``: trains a tiny model for ``UPDATES`` optimizer updates
per rank with gradient accumulation 2, following README's pattern A (scheduler left out of
``prepare``, stepped when ``accelerator.sync_gradients``) or B (scheduler prepared, its schedule
sized Accelerate's way: warm-up and total times ``num_processes``), or the trap issue 11 found
(``naive``: prepared, but sized per rank), and writes the LR each update
used to ``OUT_DIR/rank<k>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from lrsched import Schedule
from lrsched.torch_sched import ScheduledLR

UPDATES, WARMUP, ACCUM, BASE = 8, 3, 2, 0.01


def schedule(pattern: str, processes: int) -> Schedule:
    """The schedule a user writes: per-rank updates (A), or per-rank updates x processes (B)."""
    scale = processes if pattern == "B" else 1
    return Schedule("linear", base=BASE, final=0.0, warmup=WARMUP * scale, total=UPDATES * scale)


def main(pattern: str, out: Path) -> None:
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=ACCUM)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=BASE)
    n = accelerator.num_processes
    data = torch.utils.data.TensorDataset(torch.randn(UPDATES * ACCUM * n, 4))
    loader = torch.utils.data.DataLoader(data, batch_size=1)
    scheduler = ScheduledLR(optimizer, schedule(pattern, n))
    prepared = pattern != "A"
    if not prepared:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    else:
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    used = []
    for (x,) in loader:
        with accelerator.accumulate(model):
            accelerator.backward(model(x).pow(2).mean())
            if accelerator.sync_gradients:
                used.append(optimizer.param_groups[0]["lr"])  # the LR this update uses
            optimizer.step()
            if prepared:
                scheduler.step()  # Accelerate's wrapper: steps only on updates, num_processes times
            optimizer.zero_grad()
        if not prepared and accelerator.sync_gradients:
            scheduler.step()
    result = {"processes": n, "lr": used}
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    # Leave without tearing the gloo group down: on this loaded 2-core machine gloo's teardown
    # sometimes aborts a rank ("terminate called without an active exception") after the work is
    # done and written; that is not what this check is about.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
