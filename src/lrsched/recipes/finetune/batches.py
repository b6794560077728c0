"""Batch order and token ids for train.py.

- Batch order is a pure function of ``(seed, epoch)``: resuming mid-epoch skips exactly the
  batches already consumed. Under DDP each rank takes every ``world``-th index of the epoch's
  permutation, padded like ``DistributedSampler`` so every rank has the same batch count.
- By default an epoch groups texts of similar length into batches (sorted within seeded
  mega-batches, the batches then shuffled), so little of each step multiplies padding.
- ``TokenCache`` tokenizes a split once; batches are padded from its ids.

An epoch's per-rank batch count is ``lrsched.strategy.batches_per_epoch`` (``rank_batches`` returns
that many). torch is imported inside the functions, so importing this module does not load it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

MEGA_BATCHES = 50
"""Length grouping sorts mega-batches of at most this many (global) batches, as HF's ``LengthGroupedSampler``;
fewer when the epoch has under 4 x 50 batches, so that there are at least 4 mega-batches."""


def _generator(seed: int, epoch: int) -> Any:
    import torch  # here, not at the top: importing this module does not load torch

    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_permutation(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the ``n`` training examples in ``epoch``: a pure function of (seed, epoch)."""
    import torch

    return torch.randperm(n, generator=_generator(seed, epoch)).tolist()


def length_grouped_order(lengths: Sequence[int], batch: int, seed: int, epoch: int) -> list[int]:
    """A seeded order of all examples whose consecutive runs of ``batch`` have similar lengths.

    The epoch's permutation (``epoch_permutation``) is cut into mega-batches of ``m`` batches
    (``m = min(n // (4 batch), MEGA_BATCHES)``, at least 1); each is sorted by length, longest first
    (ties keep the permutation's order), and cut into batches; the full batches are then shuffled
    with the same generator, and a short one (the end of the last mega-batch) stays last. A pure
    function of ``(lengths, batch, seed, epoch)``; each example appears once.
    """
    import torch

    n = len(lengths)
    gen = _generator(seed, epoch)
    order = torch.randperm(n, generator=gen).tolist()
    mega = max(1, min(n // (4 * batch), MEGA_BATCHES)) * batch
    full: list[list[int]] = []
    short: list[int] = []
    for start in range(0, n, mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        for k in range(0, len(chunk), batch):
            if k + batch <= len(chunk):
                full.append(chunk[k : k + batch])
            else:
                short = chunk[k:]
    shuffled = torch.randperm(len(full), generator=gen).tolist()
    return [i for b in shuffled for i in full[b]] + short


def rank_batches(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    lengths: Sequence[int] | None = None,
) -> list[list[int]]:
    """This rank's batches of ``epoch``: every ``world``-th index, padded to equal shares.

    With ``lengths`` (tokens per example, ``n`` of them) the epoch's order is length-grouped
    (``length_grouped_order``) in global batches of ``batch_size x world``: rank ``r`` takes
    items ``r, r + world, ...`` of each, so every rank's batch ``k`` comes from global batch ``k``
    and has lengths like its neighbours on the other ranks. Without, a plain permutation."""
    if lengths is None:
        order = epoch_permutation(n, seed, epoch)
    else:
        if len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} examples")
        order = length_grouped_order(lengths, batch_size * world, seed, epoch)
    share = -(-n // world)
    order += order[: share * world - n]
    mine = order[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def eval_shard(
    n: int, batch_size: int, rank: int = 0, world: int = 1, lengths: Sequence[int] | None = None
) -> list[list[int]]:
    """Evaluation batches of this rank: indices ``rank::world`` (no padding, no repeats), in order,
    or longest first when ``lengths`` are given (less padding; the metrics are sums over examples)."""
    mine = list(range(rank, n, world))
    if lengths is not None:
        mine.sort(key=lambda i: -lengths[i])
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


# ---------------------------------------------------------------- tokens, once


class TokenCache:
    """The token ids of every text of a split, tokenized once; batches are padded from them.

    A batch equals what ``tokenizer(texts, padding=True, truncation=True, max_length=L)`` returns
    (checked on the split's longest and shortest texts when the cache is built): ``input_ids`` padded
    with the pad token on the tokenizer's padding side, ``attention_mask`` 1 on the tokens, and
    ``token_type_ids`` (when the tokenizer makes them) all 0 for a single text. A tokenizer for which
    that does not hold (``exact`` False) is called per batch instead, as before.
    """

    CHUNK = 2048

    def __init__(self, tokenizer: Any, texts: Sequence[str], max_length: int) -> None:
        import torch

        self.tokenizer, self.texts, self.max_length = tokenizer, texts, max_length
        ids: list[int] = []
        lengths: list[int] = []
        for start in range(0, len(texts), self.CHUNK):
            enc = tokenizer(
                list(texts[start : start + self.CHUNK]),
                truncation=True,
                max_length=max_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            for row in enc["input_ids"]:
                ids += row
                lengths.append(len(row))
        self.lengths = lengths
        """Tokens of each text, after truncation."""
        self.ids = torch.tensor(ids, dtype=torch.long)
        self.offsets = [0]
        for length in lengths:
            self.offsets.append(self.offsets[-1] + length)
        self.keys = [k for k in tokenizer.model_input_names if k in ("input_ids", "attention_mask", "token_type_ids")]
        self.exact = tokenizer.pad_token_id is not None and "input_ids" in self.keys and self._check()

    def _check(self) -> bool:
        """Whether batches from the cache equal the tokenizer's on the longest and shortest texts."""
        import torch

        if not self.lengths:
            return True
        by_length = sorted(range(len(self.lengths)), key=lambda i: self.lengths[i])
        probe = sorted({*by_length[:4], *by_length[-4:]})
        ours = self.batch(probe, exact=True)
        theirs = self.tokenizer(
            [self.texts[i] for i in probe],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return set(ours) == set(theirs.keys()) and all(torch.equal(ours[k], theirs[k]) for k in ours)

    def batch(self, indices: Sequence[int], exact: bool | None = None) -> dict[str, Any]:
        """The padded batch of these examples (CPU tensors), as the tokenizer would make it."""
        import torch

        if not (self.exact if exact is None else exact):
            texts = [self.texts[i] for i in indices]
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            return dict(enc)
        width = max(self.lengths[i] for i in indices)
        ids = torch.full((len(indices), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for row, i in enumerate(indices):
            length = self.lengths[i]
            cols = slice(width - length, width) if left else slice(0, length)
            ids[row, cols] = self.ids[self.offsets[i] : self.offsets[i + 1]]
            mask[row, cols] = 1
        out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        return {k: out[k] for k in self.keys}

    def padded_length(self, indices: Sequence[int]) -> int:
        """The length a batch of these examples is padded to."""
        return max(self.lengths[i] for i in indices)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A padded batch on ``device`` (asynchronous copy where the device allows it)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
