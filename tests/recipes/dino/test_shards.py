"""WebDataset shards as --data-dir (recipes/dino/shards.py): every way to name them, tars made by other tools
read as they are, labels, the run's index of them, changes seen, samples that cannot be read, deadlines."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lrsched.errors import UsageError
from lrsched.recipes.dino import shards
from lrsched.recipes.dino.augment import Geometry
from lrsched.recipes.dino.data import Sampler, data_changes, load_dataset
from lrsched.recipes.dino.files import read_index, write_index
from lrsched.recipes.dino.liveness import Stalled
from lrsched.recipes.dino.stream import readable, train_loader
from lrsched.recipes.dino.tar_members import Member

PER_SHARD = 10


def image_bytes(i: int, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A small distinct image: a random 8x8 colour grid smoothed up to 40-59 px a side."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng([seed, i])
    grid = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    out = io.BytesIO()
    grid.resize((40 + i % 20, 40 + (7 * i) % 20), Image.Resampling.BILINEAR).save(out, fmt)
    return out.getvalue()


def make_shards(
    folder: Path, n: int, *, per_shard: int = PER_SHARD, classes: int = 2, seed: int = 0, first: int = 0
) -> list[Path]:
    """``n`` samples ``key.jpg`` (+ ``key.cls`` when ``classes``) in ``folder/train-NNNNNN.tar`` shards of
    ``per_shard``, written with Python's tarfile (numbering from shard ``first``)."""
    import tarfile

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(0, n, per_shard):
        path = folder / f"train-{first + s // per_shard:06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s, min(n, s + per_shard)):
                members = [("jpg", image_bytes(i, seed))] + ([("cls", str(i % classes).encode())] if classes else [])
                for ext, content in members:
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
        paths.append(path)
    return paths


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    make_shards(tmp_path / "shards", 30)
    return tmp_path / "shards"


def pixels(image: object) -> bytes:
    return image.tobytes()  # type: ignore[attr-defined,no-any-return]


# --- naming the shard set ------------------------------------------------------------------------


def test_braces_expand_in_order_zero_padded_lists_and_several() -> None:
    assert shards.expand_braces("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert shards.expand_braces("{x,y}/{8..10}") == ["x/8", "x/9", "x/10", "y/8", "y/9", "y/10"]
    assert shards.expand_braces("plain.tar") == ["plain.tar"]
    assert shards.expand_braces("odd{}.tar") == ["odd{}.tar"]


def test_every_way_to_name_shards_lists_the_same_samples(shard_dir: Path) -> None:
    (shard_dir / "all.shards").write_text("# three shards\ntrain-000000.tar\n\ntrain-000001.tar\ntrain-000002.tar\n")
    listed = "\n".join(str(p) for p in sorted(shard_dir.glob("*.tar")))
    (shard_dir.parent / "abs.txt").write_text(listed + "\n")
    forms = [
        str(shard_dir / "train-{000000..000002}.tar"),
        str(shard_dir / "train-*.tar"),
        str(shard_dir),
        str(shard_dir / "all.shards"),
        str(shard_dir.parent / "abs.txt"),
    ]
    listings = [shards.list_shards(shards.shard_paths(f)) for f in forms]
    assert {len(x) for x in listings} == {30}
    assert len({x.digest for x in listings}) == 1 and len({x.shards_digest for x in listings}) == 1
    assert listings[0].relative(0) == "train-000000.tar/000000.jpg"
    assert listings[0].relative(29) == "train-000002.tar/000029.jpg"
    assert len(shards.list_shards(shards.shard_paths(shard_dir / "train-000001.tar"))) == PER_SHARD
    assert shards.is_shard_spec(shard_dir / "train-000001.tar") and not shards.is_shard_spec(shard_dir / "x.png")


def test_names_that_give_no_shards_are_refused_in_one_line(shard_dir: Path) -> None:
    with pytest.raises(UsageError, match=r"names no \.tar shards"):
        shards.shard_paths(str(shard_dir / "none-*.tar"))
    with pytest.raises(UsageError, match=r"shard .*train-000003\.tar: no such file"):
        shards.shard_paths(str(shard_dir / "train-{000000..000003}.tar"))
    missing = shard_dir / "gone.tar"
    assert shards.is_shard_spec(missing)
    with pytest.raises(UsageError) as err:
        load_dataset(missing)
    assert str(err.value) == f"--data-dir {missing}: no such file"


def test_a_folder_mixing_images_and_tars_is_refused(shard_dir: Path) -> None:
    (shard_dir / "sub").mkdir()
    (shard_dir / "sub" / "a.png").write_bytes(image_bytes(0, fmt="PNG"))
    with pytest.raises(UsageError) as err:
        load_dataset(shard_dir)
    assert str(err.value) == (
        f"--data-dir {shard_dir}: holds both .tar shards and images (first: sub/a.png); "
        "a data folder is one or the other"
    )
    shutil.rmtree(shard_dir / "sub")
    (shard_dir / "b.jpg").write_bytes(image_bytes(1))
    with pytest.raises(UsageError, match=r"first: b\.jpg"):
        load_dataset(shard_dir)


# --- tars made by other tools, labels ------------------------------------------------------------


def test_a_shard_made_by_gnu_tar_is_read_as_it_is(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    for i in range(12):
        (files / f"s{i:03d}.png").write_bytes(image_bytes(i, fmt="PNG"))
        (files / f"s{i:03d}.cls").write_text(f"{i % 3}\n")
    shard = tmp_path / "made-by-tar.tar"
    subprocess.run(["tar", "cf", str(shard), "--sort=name", "-C", str(files), "."], check=True)
    listing = shards.list_shards([shard])
    assert len(listing) == 12 and list(listing.label_ids) == [i % 3 for i in range(12)]
    from PIL import Image

    for i in range(12):
        assert listing.relative(i) == f"made-by-tar.tar/./s{i:03d}.png"
        with Image.open(files / f"s{i:03d}.png") as img:
            assert pixels(listing.read(i, "RGB")) == pixels(img.convert("RGB"))


def test_shards_made_by_webdatasets_writer_are_read_as_they_are(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    pattern = str(tmp_path / "wds-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=7, verbose=0) as sink:
        for i in range(20):
            sink.write({"__key__": f"k{i:04d}", "png": image_bytes(i, fmt="PNG"), "cls": i % 4})
    ds = load_dataset(tmp_path / "wds-{000000..000002}.tar")
    listing = ds.listings[0]
    assert len(listing) == 20 and list(listing.label_ids) == [i % 4 for i in range(20)]
    assert listing.relative(7) == "wds-000001.tar/k0007.png"
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes(7, fmt="PNG"))) as img:
        assert pixels(listing.read(7, "RGB")) == pixels(img.convert("RGB"))
    assert ds.knn_train is not None and ds.knn_test is not None and len(ds.knn_test) == 2


def test_labels_come_from_cls_and_without_them_there_is_no_knn(tmp_path: Path) -> None:
    make_shards(tmp_path / "labelled", 30, classes=3)
    ds = load_dataset(tmp_path / "labelled")
    assert ds.knn_train is ds.train and ds.knn_test is not None
    assert len(ds.train) == 27 and len(ds.knn_test) == 3  # every 10th held out, as a folder's
    assert ds.knn_test.labels is not None and ds.knn_test.labels.tolist() == [9 % 3, 19 % 3, 29 % 3]
    make_shards(tmp_path / "bare", 30, classes=0)
    bare = load_dataset(tmp_path / "bare")
    assert bare.knn_train is None and bare.knn_test is None and len(bare.train) == 30
    assert bare.knn_note == "not every sample has a .cls member (no labels)"


def test_a_cls_that_is_not_a_class_is_refused_naming_the_member(tmp_path: Path) -> None:
    import tarfile

    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        for name, content in (("a.jpg", image_bytes(0)), ("a.cls", b"cat")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    with pytest.raises(UsageError, match=r"shard .*bad\.tar: a\.cls holds 'cat', not a class"):
        shards.list_shards([path])


def test_a_shard_cut_short_at_start_is_refused_naming_it(shard_dir: Path) -> None:
    shard = shard_dir / "train-000001.tar"
    os.truncate(shard, shard.stat().st_size // 2)
    with pytest.raises(UsageError, match=r"shard .*train-000001\.tar: not a readable uncompressed tar \(cut short"):
        load_dataset(shard_dir)


# --- the run's index, changes ------------------------------------------------------------------


def test_the_index_of_a_shard_run_is_written_read_back_and_checked(shard_dir: Path, tmp_path: Path) -> None:
    ds = load_dataset(shard_dir)
    index = tmp_path / "data_index.tsv"
    write_index(ds.fingerprint(), ds.listings, index)
    lines = index.read_text().splitlines()
    assert len(lines) == 31 and lines[1] == "0\ttrain-000000.tar/000000.jpg" and lines[2].startswith("1\t")
    assert read_index(index) == ds.fingerprint()
    index.write_text("\n".join([lines[0], "1" + lines[1][1:], *lines[2:]]) + "\n")  # one label changed
    with pytest.raises(UsageError, match="do not match the header's digest"):
        read_index(index)


def test_an_added_removed_or_resized_shard_changes_the_fingerprint(shard_dir: Path) -> None:
    before = load_dataset(shard_dir).fingerprint()
    assert before["layout"] == "webdataset" and before["shards"] == 3
    make_shards(shard_dir, 10, first=3, seed=1)
    assert data_changes(before, load_dataset(shard_dir).fingerprint())[:2] == ["shards 3 -> 4", "files 30 -> 40"]
    (shard_dir / "train-000003.tar").unlink()
    (shard_dir / "train-000002.tar").unlink()
    assert data_changes(before, load_dataset(shard_dir).fingerprint())[0] == "shards 3 -> 2"
    make_shards(shard_dir, 30)
    with open(shard_dir / "train-000001.tar", "ab") as f:
        f.write(bytes(10240))  # the same members, one more record of zeros: another size
    assert data_changes(before, load_dataset(shard_dir).fingerprint()) == [
        "the same 3 shards in number, other names or sizes"
    ]


def test_a_folder_keeps_its_fingerprint_without_shard_keys(tmp_path: Path) -> None:
    from .dino_helpers import make_image_folder

    fingerprint = load_dataset(make_image_folder(tmp_path / "f", 12, classes=2, sizes=(20, 30))).fingerprint()
    assert set(fingerprint) == {"name", "files", "digests", "channels", "mean", "std"}


# --- samples that cannot be read ----------------------------------------------------------------


def test_a_shard_gone_resized_or_holding_a_bad_image_makes_its_samples_unreadable(shard_dir: Path) -> None:
    ds = load_dataset(shard_dir / "train-{000000..000002}.tar", timeout=0)
    listing, train = ds.listings[0], ds.train
    first = shard_dir / "train-000000.tar"
    bad = int(listing.starts[3])
    with open(first, "r+b") as f:
        f.seek(bad)
        f.write(b"not an image" * 4)  # sample 3's image, in place: same size
    with pytest.raises(UsageError, match=r"cannot read image .*train-000000\.tar/000003\.jpg"):
        listing.read(3, "RGB")
    image, skipped = readable(train, 3)  # train ids: sample 3 is train item 3
    assert [name for name, _ in skipped] == [str(shard_dir / "train-000000.tar" / "000003.jpg")]
    assert pixels(image) == pixels(listing.read(4, "RGB"))
    second = shard_dir / "train-000001.tar"
    os.truncate(second, second.stat().st_size - 5000)
    with pytest.raises(UsageError, match=r"000012\.jpg \(its shard changed size since it was listed: \d+ -> \d+"):
        listing.read(12, "RGB")
    second.unlink()
    with pytest.raises(UsageError, match=r"000015\.jpg \(No such file or directory\)"):
        listing.read(15, "RGB")
    assert pixels(listing.read(20, "RGB"))  # the other shards still read


# --- order, workers, ranks ------------------------------------------------------------------------


def test_crops_from_shards_do_not_depend_on_the_number_of_workers_or_the_start(shard_dir: Path) -> None:
    ds = load_dataset(shard_dir)
    geo = Geometry(32, 16, 2, ds.channels)

    def crops(workers: int, start: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        sampler = Sampler(len(ds.train), 4, 2, seed=5)
        stream = train_loader(ds.train, geo, sampler, rank=1, start=start, stop=6, workers=workers)
        return {b.step: (b.global_px, b.local_px) for b in stream}

    main = crops(0, 0)
    assert sorted(main) == list(range(6))
    for other in (crops(2, 0), crops(1, 3)):
        for step, (g, loc) in other.items():
            assert torch.equal(g, main[step][0]) and torch.equal(loc, main[step][1])


def test_two_ranks_take_disjoint_samples_of_every_step(shard_dir: Path) -> None:
    ds = load_dataset(shard_dir)
    sampler = Sampler(len(ds.train), 4, 2, seed=3)
    for step in range(2 * sampler.batches_per_epoch):
        a, b = set(sampler.indices(step, 0).tolist()), set(sampler.indices(step, 1).tolist())
        assert len(a) == len(b) == 4 and not a & b


# --- deadlines ------------------------------------------------------------------------------------


def test_a_shard_whose_read_blocks_stalls_the_listing_at_its_deadline(
    shard_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    real, shards_read = shards.members, []

    def blocked(fd: int, size: int, alive: Callable[[], None]) -> list[Member]:
        shards_read.append(fd)
        if len(shards_read) == 2:  # the second shard
            open(fifo, "rb").close()  # blocks in the kernel: no writer ever comes
        return real(fd, size, alive)

    monkeypatch.setattr(shards, "members", blocked)
    started = time.monotonic()
    with pytest.raises(Stalled) as err:
        load_dataset(shard_dir, timeout=1)
    assert time.monotonic() - started < 6
    assert str(err.value) == (
        "--data-timeout 1: listing the shards of --data-dir made no progress for 1 s (10 samples listed)"
    )
