"""Streaming image data: listing a folder, sources, the k-NN split, the index, the data order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lrsched.errors import UsageError
from lrsched.recipes.dino import data
from lrsched.recipes.dino.data import Sampler, data_changes, open_folder
from lrsched.recipes.dino.files import list_folder, read_index, read_index_header, write_index

from .dino_helpers import make_image_folder


def test_listing_is_sorted_labels_come_from_the_first_sub_folder(tmp_path: Path) -> None:
    for rel in ("b/x/2.png", "b/1.jpg", "a/3.JPEG", "top.webp", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    listing = list_folder(tmp_path)
    assert [listing.relative(i) for i in range(len(listing))] == ["top.webp", "a/3.JPEG", "b/1.jpg", "b/x/2.png"]
    assert listing.classes == ("a", "b")
    assert list(listing.label_ids) == [-1, 0, 1, 1]
    assert not listing.labelled  # a file at the top level has no class


def test_listing_digest_sees_any_change_and_a_symlink_loop_is_listed_once(tmp_path: Path) -> None:
    make_image_folder(tmp_path, 6, classes=2, sizes=(20, 30))
    os.symlink(tmp_path, tmp_path / "class0" / "loop")
    before = list_folder(tmp_path)
    assert len(before) == 6 and before.digest == list_folder(tmp_path).digest
    (tmp_path / "class1" / "img0000001.jpg").rename(tmp_path / "class1" / "renamed.jpg")
    assert list_folder(tmp_path).digest != before.digest


def test_a_folder_is_never_decoded_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_image_folder(tmp_path, 2 * data.STATS_SAMPLE, classes=2, sizes=(20, 30))
    opened: list[Path] = []
    real = data.read_image

    def counting(path: Path, mode: str | None) -> object:
        opened.append(path)
        return real(path, mode)

    monkeypatch.setattr(data, "read_image", counting)
    ds = open_folder(tmp_path)
    assert len(opened) == data.STATS_SAMPLE  # only the sample for the channel statistics
    assert ds.channels == 3 and len(ds.train) == 2 * data.STATS_SAMPLE - 2 * data.STATS_SAMPLE // 10


def test_labelled_folder_holds_out_every_tenth_file_for_knn(tmp_path: Path) -> None:
    make_image_folder(tmp_path, 30, classes=3, sizes=(20, 30))
    ds = open_folder(tmp_path)
    assert ds.knn_train is ds.train and ds.knn_test is not None
    assert len(ds.train) == 27 and len(ds.knn_test) == 3
    assert ds.knn_test.labels is not None
    assert ds.knn_test.labels.tolist() == [list_folder(tmp_path).label_ids[i] for i in (9, 19, 29)]


def test_train_and_test_sub_folders_are_used_as_they_are(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train", 8, classes=2, sizes=(20, 30))
    make_image_folder(tmp_path / "val", 4, classes=2, sizes=(20, 30), seed=1)
    ds = open_folder(tmp_path)
    assert (len(ds.train), len(ds.knn_test or [])) == (8, 4)
    assert len(ds.fingerprint()["digests"]) == 2


def test_unlabelled_folder_trains_on_everything_and_says_why_knn_is_skipped(tmp_path: Path) -> None:
    make_image_folder(tmp_path, 12, classes=0, sizes=(20, 30))
    ds = open_folder(tmp_path)
    assert len(ds.train) == 12 and ds.knn_train is None and ds.knn_test is None
    assert ds.knn_note == "no class sub-folders (no labels)"


def test_grayscale_folder_trains_on_one_channel(tmp_path: Path) -> None:
    from PIL import Image

    for i in range(3):
        Image.new("L", (20, 10), color=40 * i).save(tmp_path / f"{i}.png")
    ds = open_folder(tmp_path)
    assert ds.channels == 1 and ds.train.image(0).mode == "L"
    assert ds.mean[0] == pytest.approx(40 / 255, abs=1e-6)


def test_empty_missing_or_unreadable_folder_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no images"):
        open_folder(tmp_path)
    (tmp_path / "fake.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match=r"cannot read image .*fake\.png"):
        open_folder(tmp_path)
    with pytest.raises(UsageError, match="no such directory"):
        open_folder(tmp_path / "nowhere")


def test_a_file_that_breaks_after_the_start_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    make_image_folder(tmp_path, 3, classes=0, sizes=(20, 30))
    source = open_folder(tmp_path).train  # the sampled images must be readable at start ...
    (tmp_path / "img0000000.jpg").write_bytes(b"not a jpeg")  # ... one that breaks later: the stream replaces it
    with pytest.raises(UsageError, match=r"cannot read image .*img0000000\.jpg"):
        source.image(0)
    assert source.image(1).mode == "RGB"


def test_index_file_records_the_fingerprint_and_every_file(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "imgs", 5, classes=2, sizes=(20, 30))
    ds = open_folder(tmp_path / "imgs")
    write_index(ds.fingerprint(), ds.listings, tmp_path / "data_index.tsv")
    lines = (tmp_path / "data_index.tsv").read_text().splitlines()
    assert read_index_header(tmp_path / "data_index.tsv") == ds.fingerprint()
    assert lines[1:] == [f"{i % 2}\tclass{i % 2}/img{i:07d}.jpg" for i in sorted(range(5), key=lambda i: (i % 2, i))]
    make_image_folder(tmp_path / "imgs", 6, classes=2, sizes=(20, 30))
    changes = data_changes(ds.fingerprint(), open_folder(tmp_path / "imgs").fingerprint())
    assert changes == ["files 5 -> 6"]
    assert data_changes(ds.fingerprint(), ds.fingerprint()) == []


def test_sampler_draws_one_permutation_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = torch.randperm

    def counting(n: int, **kw: object) -> torch.Tensor:
        calls.append(n)
        return real(n, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "randperm", counting)
    s = Sampler(size=1_281_167, batch=64, world=1, seed=0)
    for t in range(50):
        assert s.indices(t, 0).shape == (64,)
    assert calls == [1_281_167]
    s.indices(s.batches_per_epoch, 0)
    assert len(calls) == 2


def test_sampler_is_a_pure_function_of_seed_and_step() -> None:
    s = Sampler(size=100, batch=8, world=2, seed=3)
    assert s.batches_per_epoch == 6
    assert torch.equal(s.indices(7, 0), Sampler(100, 8, 2, 3).indices(7, 0))
    for step in range(6):  # one epoch: ranks and steps never repeat an image
        seen = torch.cat([s.indices(step, r) for r in range(2)])
        assert len(set(seen.tolist())) == 16
    epoch = torch.cat([s.indices(t, r) for t in range(6) for r in range(2)])
    assert len(set(epoch.tolist())) == 96
    assert not torch.equal(s.indices(0, 0), s.indices(6, 0))  # a new permutation each epoch
    assert torch.equal(s.indices(3, 1), Sampler(100, 8, 2, 3).indices(3, 1))  # after other epochs: same
    assert s.position(13) == (2, 1)


# --- the walk stays inside --data-dir -----------------------------------------------------------


def _names(listing: data.Listing) -> list[str]:
    return [listing.relative(i) for i in range(len(listing))]


def test_links_leading_outside_the_folder_are_not_followed_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    make_image_folder(root, 4, classes=2, sizes=(20, 30))
    make_image_folder(tmp_path / "elsewhere", 2, classes=0, sizes=(20, 30))
    os.symlink("/", root / "class0" / "root")  # walking it would meet unreadable /proc entries
    os.symlink("..", root / "up")  # lists the data folder's parent
    os.symlink(tmp_path / "elsewhere" / "img0000000.jpg", root / "class1" / "outside.jpg")
    os.symlink(root / "class1" / "img0000001.jpg", root / "class0" / "inside.jpg")  # inside: followed
    listing = list_folder(root)
    assert _names(listing) == [
        "class0/img0000000.jpg",
        "class0/img0000002.jpg",
        "class0/inside.jpg",
        "class1/img0000001.jpg",
        "class1/img0000003.jpg",
    ]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did not follow 3 symbolic links that lead outside the folder" in err[0]
    assert "--follow-links follows them" in err[0]
    os.unlink(root / "class0" / "root")
    followed = _names(list_folder(root, follow_links=True))
    assert "class1/outside.jpg" in followed and "up/elsewhere/img0000000.jpg" in followed


def test_entries_that_cannot_be_read_are_skipped_with_one_counted_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_image_folder(tmp_path, 6, classes=3, sizes=(20, 30))
    os.symlink("loop.png", tmp_path / "class0" / "loop.png")  # stat: too many levels of symbolic links
    os.symlink("gone.png", tmp_path / "class0" / "dangling.png")
    real = os.scandir

    def refusing(path: str) -> object:
        if str(path).endswith("class2"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(os, "scandir", refusing)
    listing = list_folder(tmp_path)
    assert _names(listing) == [
        "class0/img0000000.jpg",
        "class0/img0000003.jpg",
        "class1/img0000001.jpg",
        "class1/img0000004.jpg",
    ]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--data-dir {tmp_path}: skipped 3 entries that could not be read (first: " in err[0]


def test_an_unlistable_data_folder_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refusing(path: str) -> object:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "scandir", refusing)
    with pytest.raises(UsageError, match=rf"--data-dir {tmp_path}: cannot list it \(Permission denied\)"):
        list_folder(tmp_path)


# --- data_index.tsv holds any file name ---------------------------------------------------------


ODD_NAMES = ("tab\there.png", "new\nline.png", os.fsdecode(b"bad\xff-utf8.png"), "-dash.png", '"quoted.png', "é ok.png")


def _odd_folder(root: Path) -> Path:
    from PIL import Image

    for i, name in enumerate(ODD_NAMES):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 16), (40 * i, 20, 200 - 30 * i)).save(folder / f"{name}", format="PNG")
    return root


def test_the_index_holds_any_file_name_and_reads_back_whole(tmp_path: Path) -> None:
    ds = open_folder(_odd_folder(tmp_path / "imgs"))
    write_index(ds.fingerprint(), ds.listings, tmp_path / "data_index.tsv")
    raw = (tmp_path / "data_index.tsv").read_bytes()
    raw.decode("utf-8")  # the index is UTF-8 whatever the names are
    lines = raw.split(b"\n")
    assert len(lines) == 1 + len(ODD_NAMES) + 1 and lines[-1] == b""  # one line per file, every name
    assert b'1\t"class1/new\\nline.png"' in lines and b'0\t"class0/tab\\there.png"' in lines
    assert b"1\tclass1/-dash.png" in lines and "1\tclass1/é ok.png".encode() in lines
    assert read_index(tmp_path / "data_index.tsv") == ds.fingerprint()
    assert read_index(tmp_path / "missing.tsv") is None


def test_an_index_with_a_split_or_changed_line_is_refused_in_one_line(tmp_path: Path) -> None:
    ds = open_folder(_odd_folder(tmp_path / "imgs"))
    path = tmp_path / "data_index.tsv"
    write_index(ds.fingerprint(), ds.listings, path)
    good = path.read_text()
    header, body = good.split("\n", 1)
    old_format = (
        header
        + "\n"
        + "".join(f"{lab}\t{ds.listings[0].relative(i)}\n" for i, lab in enumerate(ds.listings[0].label_ids))
    )
    broken = {
        "old, unescaped format": old_format.encode("utf-8", "surrogateescape"),
        "cut short": good[:-1].encode(),
        "a line missing": (header + "\n" + body.split("\n", 1)[1]).encode(),
        "a line too many": (good + '0\t"x.png"\n').encode(),
        "a renamed file": good.replace("-dash.png", "-dish.png").encode(),
        "a wrong label": good.replace("1\tclass1/-dash.png", "0\tclass1/-dash.png").encode(),
        "no header": body.encode(),
    }
    for what, content in broken.items():
        path.write_bytes(content)
        with pytest.raises(UsageError) as err:
            read_index(path)
        message = str(err.value)
        assert "\n" not in message and message.startswith(f"{path}: not a data index this program can read"), what
        assert message.endswith("move it aside and the run writes it again"), what


def test_the_index_of_train_and_test_folders_reads_back(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "d" / "train", 6, classes=2, sizes=(20, 30))
    make_image_folder(tmp_path / "d" / "val", 4, classes=2, sizes=(20, 30), seed=1)
    ds = open_folder(tmp_path / "d")
    write_index(ds.fingerprint(), ds.listings, tmp_path / "data_index.tsv")
    assert read_index(tmp_path / "data_index.tsv") == ds.fingerprint()
    assert (tmp_path / "data_index.tsv").read_text().splitlines()[-1] == "1\tval/class1/img0000003.jpg"
