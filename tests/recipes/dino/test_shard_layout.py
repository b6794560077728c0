"""shard_layout: the names of a shard set and the plan of which samples go in which shard."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lrsched.errors import UsageError
from lrsched.recipes.dino.shard_layout import Limits, member_bytes, parse_pattern, plan_shards, shard_bytes


@given(
    costs=st.lists(st.integers(1, 40).map(member_bytes), max_size=60),
    count=st.integers(0, 7),
    size=st.sampled_from([0, 10240, 20480, 51200]),
)
def test_a_plan_keeps_order_and_limits_and_fills_each_shard(costs: list[int], count: int, size: int) -> None:
    """Every sample once, in order; no shard over a limit unless it holds one sample; and each shard is full:
    the next sample would have broken a limit."""
    limits = Limits(count, size or (0 if count else 10240))
    counts = plan_shards(costs, limits)
    assert sum(counts) == len(costs) and all(n > 0 for n in counts)
    start = 0
    for n in counts:
        shard = costs[start : start + n]
        if n > 1:
            assert not limits.count or n <= limits.count
            assert not limits.size or shard_bytes(sum(shard)) <= limits.size
        if start + n < len(costs):
            assert not limits.fits(n, sum(shard), costs[start + n])
        start += n


def test_sizes_follow_the_tar_format() -> None:
    assert [member_bytes(s) for s in (0, 1, 512, 513)] == [512, 1024, 1024, 1536]
    assert [shard_bytes(m) for m in (0, 9216, 9217)] == [10240, 10240, 20480]


def test_a_pattern_names_and_braces(tmp_path: Path) -> None:
    pattern = parse_pattern(str(tmp_path / "train-%04d.tar"))
    assert (pattern.name(7), pattern.braces(12)) == ("train-0007.tar", str(tmp_path / "train-{0000..0011}.tar"))
    (tmp_path / "train-0003.tar").touch()
    (tmp_path / "train-0003.tar.bak").touch()
    (tmp_path / "xtrain-0003.tar").touch()
    assert pattern.existing() == ["train-0003.tar"]


@pytest.mark.parametrize("text", ["", "a/b.tar", "a/%6d.tar", "a/%00d.tar", "a/%06d", "a/%06d.tar.gz", "a/[x]%06d.tar"])
def test_bad_patterns_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="OUT_PATTERN"):
        parse_pattern(text)
