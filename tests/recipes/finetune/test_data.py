"""train.py's data: the fixed corpus split, stratified subsets, user files, and batch order."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from lrsched.errors import UsageError
from lrsched.recipes.finetune import batches as B
from lrsched.recipes.finetune import data as D
from lrsched.recipes.finetune import metrics
from lrsched.strategy import batches_per_epoch


def flags(**kw: object) -> D.DataFlags:
    base: dict[str, object] = dict(
        train_file=None,
        validation_file=None,
        test_file=None,
        text_column="text",
        label_column="label",
        max_train_samples=None,
        max_eval_samples=None,
        max_test_samples=None,
        seed=42,
    )
    base.update(kw)
    return D.DataFlags(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def corpus() -> D.Splits:
    return D.load_splits(flags())


def test_corpus_split_is_disjoint_stratified_and_fixed(corpus: D.Splits) -> None:
    s = corpus
    assert s.label_names == ["negative", "neutral", "positive"]
    sizes = [len(s.train), len(s.validation), len(s.test or [])]
    total = sum(sizes)
    assert 36_000 < total < 38_159  # 38,158 rows, minus duplicates and conflicting texts
    assert abs(sizes[0] / total - 0.8) < 0.002 and abs(sizes[1] / total - 0.1) < 0.002
    texts = [set(s.train.texts), set(s.validation.texts), set((s.test or s.validation).texts)]
    assert sum(map(len, texts)) == total  # no duplicates inside a split
    assert not texts[0] & texts[1] and not texts[0] & texts[2] and not texts[1] & texts[2]
    for part in (s.validation, s.test):
        assert part is not None
        for label, count in Counter(part.labels).items():
            share = Counter(s.train.labels)[label] / len(s.train)
            assert abs(count / len(part) - share) < 0.002
    again = D.load_splits(flags(seed=7))  # --seed does not move the split
    assert again.test == s.test and again.validation == s.validation


def test_subsets_are_stratified_seeded_and_inside_their_split(corpus: D.Splits) -> None:
    a = D.load_splits(flags(max_train_samples=100, max_eval_samples=50, max_test_samples=30))
    b = D.load_splits(flags(max_train_samples=100, max_eval_samples=50, max_test_samples=30))
    c = D.load_splits(flags(max_train_samples=100, max_eval_samples=50, max_test_samples=30, seed=1))
    assert (len(a.train), len(a.validation), len(a.test or [])) == (100, 50, 30)
    assert a == b and a.train != c.train
    assert set(a.train.texts) <= set(corpus.train.texts)
    assert set(a.validation.texts) <= set(corpus.validation.texts)
    full = Counter(corpus.train.labels)
    for label, count in Counter(a.train.labels).items():
        assert abs(count - 100 * full[label] / len(corpus.train)) < 1


def test_dedupe_drops_conflicting_texts_and_keeps_first() -> None:
    pairs = [("a", "x"), ("b", "y"), ("a", "x"), ("c", "x"), ("c", "y"), ("", "x")]
    assert D.dedupe(pairs) == [("a", "x"), ("b", "y")]


def test_label_order_numeric_and_text() -> None:
    assert D.label_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert D.label_order(["pos", "neg"]) == ["neg", "pos"]


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows))
    return path


def test_user_csv_and_jsonl_files(tmp_path: Path) -> None:
    rows = [(f"text number {i}", "pos" if i % 3 else "neg") for i in range(30)]
    train = write_csv(tmp_path / "train.csv", rows)
    val = tmp_path / "val.jsonl"
    val.write_text("\n".join(json.dumps({"sentence": f"v {i}", "y": "neg"}) for i in range(4)) + "\n")
    with pytest.raises(UsageError, match=r"--validation_file .*no column 'text'"):
        D.load_splits(flags(train_file=train, validation_file=val))
    val.write_text("\n".join(json.dumps({"text": f"v {i}", "label": "neg"}) for i in range(4)) + "\n")
    s = D.load_splits(flags(train_file=train, validation_file=val))
    assert s.label_names == ["neg", "pos"] and len(s.train) == 30 and s.validation.labels == [0] * 4
    assert s.test is None
    held = D.load_splits(flags(train_file=train))  # no --validation_file: 10% of each label held out
    assert len(held.validation) == 1 + 2 and not set(held.validation.texts) & set(held.train.texts)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'text,lab\n"a",neg\n', "no column 'label'"),
        (b"text,label\n\xff\xfe,neg\n", "unreadable"),
        (b"text,label\n", "no rows"),
    ],
)
def test_bad_train_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=f"--train_file {path}: .*{message}"):
        D.load_splits(flags(train_file=path))


def test_unknown_label_in_test_file(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", [(f"t {i}", "pos" if i % 2 else "neg") for i in range(20)])
    test = write_csv(tmp_path / "test.csv", [("x", "neutral")])
    with pytest.raises(UsageError, match=r"--test_file .*label 'neutral'.*not among the training labels"):
        D.load_splits(flags(train_file=train, test_file=test))


def test_bad_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\nnot json\n')
    with pytest.raises(UsageError, match="line 2 is not JSON"):
        D.load_splits(flags(train_file=path))


@pytest.mark.parametrize(("n", "batch", "world"), [(100, 8, 1), (101, 8, 2), (7, 3, 2), (5, 4, 3)])
def test_batch_order_is_a_function_of_seed_and_epoch(n: int, batch: int, world: int) -> None:
    shards = [B.rank_batches(n, batch, 3, 5, rank, world) for rank in range(world)]
    assert shards == [B.rank_batches(n, batch, 3, 5, rank, world) for rank in range(world)]
    assert all(len(s) == batches_per_epoch(n, batch, world) for s in shards)
    seen = [i for s in shards for b in s for i in b]
    assert set(seen) == set(range(n)) and len(seen) == world * -(-n // world)
    assert B.rank_batches(n, batch, 3, 6) != B.rank_batches(n, batch, 3, 5)
    assert B.rank_batches(n, batch, 4, 5) != B.rank_batches(n, batch, 3, 5)


def test_eval_shards_cover_each_example_once() -> None:
    shards = [i for r in range(3) for b in B.eval_shard(10, 2, r, 3) for i in b]
    assert sorted(shards) == list(range(10))
    lengths = [5, 1, 9, 3, 7, 2, 8, 6, 4, 0]
    shards = [i for r in range(3) for b in B.eval_shard(10, 2, r, 3, lengths) for i in b]
    assert sorted(shards) == list(range(10))
    mine = [i for b in B.eval_shard(10, 2, 0, 1, lengths) for i in b]
    assert [lengths[i] for i in mine] == sorted(lengths, reverse=True)


def _lengths(n: int, seed: int = 0) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randint(3, 128) for _ in range(n)]


@pytest.mark.parametrize(
    ("n", "batch", "world"), [(1000, 8, 1), (1001, 8, 2), (7, 3, 2), (5, 4, 3), (29747, 32, 1), (2000, 16, 4)]
)
def test_length_grouped_batches_keep_the_order_contract(n: int, batch: int, world: int) -> None:
    """Grouped order: a pure function of (seed, epoch), the same batch counts, ranks disjoint within an
    epoch (every example once, DistributedSampler's padding only), and less padding than a permutation."""
    lengths = _lengths(n)
    shards = [B.rank_batches(n, batch, 3, 5, rank, world, lengths) for rank in range(world)]
    assert shards == [B.rank_batches(n, batch, 3, 5, rank, world, list(lengths)) for rank in range(world)]
    assert all(len(s) == batches_per_epoch(n, batch, world) for s in shards)
    seen = [i for s in shards for b in s for i in b]
    assert set(seen) == set(range(n)) and len(seen) == world * -(-n // world)
    order = B.length_grouped_order(lengths, batch * world, 3, 5)
    assert sorted(order) == list(range(n))  # a permutation: ranks share nothing but the padding
    assert B.rank_batches(n, batch, 3, 6, lengths=lengths) != B.rank_batches(n, batch, 3, 5, lengths=lengths)
    assert B.rank_batches(n, batch, 4, 5, lengths=lengths) != B.rank_batches(n, batch, 3, 5, lengths=lengths)
    if n >= 1000:

        def padded(bs: list[list[int]]) -> float:
            return sum(max(lengths[i] for i in b) for b in bs) / len(bs)

        plain = [B.rank_batches(n, batch, 3, 5, r, world) for r in range(world)]
        assert max(map(padded, shards)) < 0.9 * min(map(padded, plain))


def test_length_grouping_sorts_within_mega_batches_and_shuffles_the_batches() -> None:
    n, batch = 6400, 32  # 200 batches: mega-batches of min(6400 // 128, 50) = 50 batches
    lengths = _lengths(n, 1)
    order = B.length_grouped_order(lengths, batch, 7, 0)
    perm = B.epoch_permutation(n, 7, 0)
    batches = [order[i : i + batch] for i in range(0, n, batch)]
    megas = [set(perm[i : i + 50 * batch]) for i in range(0, n, 50 * batch)]
    for b in batches:
        assert sum(set(b) <= m for m in megas) == 1  # each batch from one seeded mega-batch
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    firsts = [next(k for k, m in enumerate(megas) if b[0] in m) for b in batches]
    assert firsts != sorted(firsts)  # the batches are shuffled across mega-batches
    assert len(set(firsts[:50])) > 1


def _batch_sets(order: list[int], batch: int) -> Counter[frozenset[int]]:
    return Counter(frozenset(order[i : i + batch]) for i in range(0, len(order), batch))


@pytest.mark.parametrize(("n", "batch"), [(640, 32), (6400, 32), (1001, 8), (50, 16), (7, 3)])
def test_length_grouping_cuts_the_batches_hf_cuts(n: int, batch: int) -> None:
    """Oracle: HF's ``get_length_grouped_indices`` (``LengthGroupedSampler``), drawing the same permutation,
    cuts the same batches (so the same padding); it keeps them in mega-batch order where train.py shuffles
    them, and moves the longest example into the first batch, which changes at most two batches."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    lengths = _lengths(n, 3)
    ours = _batch_sets(B.length_grouped_order(lengths, batch, 5, 2), batch)
    theirs = _batch_sets(get_length_grouped_indices(lengths, batch, generator=B._generator(5, 2)), batch)
    assert sum(ours.values()) == sum(theirs.values())
    assert sum((ours - theirs).values()) <= 2


def test_grouped_rank_batches_share_lengths_across_ranks() -> None:
    """Rank r's batch k comes from global batch k: the ranks' batches at a step have similar lengths."""
    n, batch, world = 4000, 8, 2
    lengths = _lengths(n, 2)
    order = B.length_grouped_order(lengths, batch * world, 0, 0)
    shards = [B.rank_batches(n, batch, 0, 0, r, world, lengths) for r in range(world)]
    for k in range(len(shards[0])):
        assert set(shards[0][k]) | set(shards[1][k]) == set(order[k * batch * world : (k + 1) * batch * world])


def test_wrong_number_of_lengths_is_refused() -> None:
    with pytest.raises(ValueError, match="3 lengths for 4 examples"):
        B.rank_batches(4, 2, 0, 0, lengths=[1, 2, 3])


@pytest.fixture(scope="module")
def tokenizer() -> object:
    from lrsched.recipes.finetune import model as M

    return M.load_tokenizer(M.default_model_dir())


def test_token_cache_batches_equal_the_tokenizers(corpus: D.Splits, tokenizer: object) -> None:
    """Tokenized once, padded per batch: bitwise what tokenizing the batch's texts gives (so the model sees
    the same tensors), for random batches and the longest texts (truncated to max_length)."""
    import random

    import torch

    texts = corpus.train.texts[:3000]
    for max_length in (64, 16):
        cache = B.TokenCache(tokenizer, texts, max_length)
        assert cache.exact
        assert max(cache.lengths) == max_length
        rng = random.Random(0)
        longest = sorted(range(len(texts)), key=lambda i: -len(texts[i]))[:8]
        for indices in [longest, *(rng.sample(range(len(texts)), 1 + k % 40) for k in range(40))]:
            ours = cache.batch(indices)
            theirs = tokenizer(
                [texts[i] for i in indices], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )  # type: ignore[operator]
            assert set(ours) == set(theirs.keys())
            for key in ours:
                assert torch.equal(ours[key], theirs[key]), key
            assert cache.padded_length(indices) == theirs["input_ids"].shape[1]


def test_token_cache_falls_back_to_the_tokenizer_when_it_cannot_reproduce_it(
    corpus: D.Splits, tokenizer: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    texts = corpus.train.texts[:50]
    monkeypatch.setattr(tokenizer, "padding_side", "left")  # cache pads left; tokenizer pads left too: still exact
    cache = B.TokenCache(tokenizer, texts, 64)
    assert cache.exact
    monkeypatch.setattr(B.TokenCache, "_check", lambda self: False)
    cache = B.TokenCache(tokenizer, texts, 64)
    assert not cache.exact
    theirs = tokenizer(texts[:5], padding=True, truncation=True, max_length=64, return_tensors="pt")  # type: ignore[operator]
    ours = cache.batch(range(5))  # type: ignore[arg-type]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_macro_f1_against_hand_counts() -> None:
    true = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    pred = [0, 1, 0, 1, 2, 2, 2, 0, 1]
    m = metrics.confusion(true, pred, 3)
    # label 0: tp 2 fp 1 fn 1 -> 4/6; label 1: tp 1 fp 2 fn 1 -> 2/5; label 2: tp 2 fp 1 fn 2 -> 4/7
    assert metrics.macro_f1(m) == pytest.approx((4 / 6 + 2 / 5 + 4 / 7) / 3)
    assert metrics.accuracy(m) == pytest.approx(5 / 9)
    assert metrics.macro_f1(metrics.confusion([0, 0], [0, 0], 2)) == pytest.approx(0.5)
    assert metrics.majority_baseline([1, 1, 0], [1, 0, 0, 1]) == 0.5


def test_a_utf8_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\n" + b"".join(f"t{i},{i % 2}\n".encode() for i in range(20)))
    s = D.load_splits(flags(train_file=path))
    assert s.label_names == ["0", "1"] and len(s.train) + len(s.validation) == 20


def test_a_single_label_training_file_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", [(f"text {i}", "pos") for i in range(20)])
    with pytest.raises(UsageError, match=r"every text has the label 'pos'; a classifier needs at least two labels"):
        D.load_splits(flags(train_file=path))


@pytest.mark.parametrize(("label", "kind"), [(["pos"], "list"), ({"y": 1}, "object")])
def test_a_json_list_or_object_as_a_label_is_refused(tmp_path: Path, label: object, kind: str) -> None:
    path = tmp_path / "train.jsonl"
    rows = [{"text": f"t {i}", "label": "neg" if i % 2 else "pos"} for i in range(10)]
    rows[3]["label"] = label  # type: ignore[assignment]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UsageError, match=rf"row 4: 'label' is a JSON {kind} .*must be a string or a number"):
        D.load_splits(flags(train_file=path))


def test_a_giant_text_is_clipped_as_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    giant = "word " * 2_000_000  # 10 MB on one line
    rows = [{"text": f"t {i}", "label": i % 2} for i in range(20)] + [{"text": giant, "label": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    limit = D.chars_for_tokens(128)
    s = D.load_splits(flags(train_file=path, max_chars=limit))
    longest = max([*s.train.texts, *s.validation.texts], key=len)
    assert len(longest) <= limit and longest.startswith("word word")
    assert D.clean_text("  a \n b  ", 100) == "a b" and D.clean_text("ab cd ef", 5) == "ab cd"
