"""make_shards: an image folder to WebDataset shards and back (every image and label), byte-identical
shards from the same folder, and every refusal (one line, exit status 2, nothing written)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import child_env

from lrsched.recipes.dino import make_shards
from lrsched.recipes.dino.files import list_folder
from lrsched.recipes.dino.make_shards import main
from lrsched.recipes.dino.shard_layout import shard_bytes

from .dino_helpers import make_image_folder

ODD_NAMES = ("a.b.c.jpg", "space name.JPG", "tab\there.jpg", os.fsdecode(b"bytes-\xfe.jpg"), "-dash.jpeg")


def folder(root: Path, n: int = 23, classes: int = 3) -> Path:
    """``n`` small JPEGs in ``classes`` class folders, a PNG, and files with odd names (dots, TABs, bytes)."""
    make_image_folder(root, n, classes=classes, sizes=(16, 40))
    for i, name in enumerate(ODD_NAMES):
        where = root / f"class{i % classes}" if classes else root
        (where / f"img{i:07d}.jpg").rename(where / name)
    from PIL import Image

    Image.new("L", (9, 7), 128).save((root / "class1" if classes else root) / "gray.png")
    return root


def read_shards(paths: list[Path]) -> list[tuple[str, dict[str, bytes]]]:
    """Samples of the shards with the standard library's tar reader: (key, {extension: bytes}), in order."""
    samples: list[tuple[str, dict[str, bytes]]] = []
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                key, ext = member.name.split(".", 1)
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                data = tar.extractfile(member)
                assert data is not None
                samples[-1][1][ext] = data.read()
    return samples


def shards_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.tar"))


def test_round_trip_every_image_and_label_in_listing_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = folder(tmp_path / "src")
    assert main([str(src), str(tmp_path / "out/train-%06d.tar"), "--max-count", "5"]) == 0
    line = capsys.readouterr().out.strip()
    assert f"24 images of {src} (3 classes in .cls) in 5 shards" in line
    assert line.endswith(f"--data-dir '{tmp_path}/out/train-{{000000..000004}}.tar'")
    paths = shards_in(tmp_path / "out")
    assert [p.name for p in paths] == [f"train-{i:06d}.tar" for i in range(5)]
    assert sorted(os.listdir(tmp_path / "out")) == [p.name for p in paths]  # no temporary file left
    listing = list_folder(src)
    samples = read_shards(paths)
    assert len(samples) == len(listing) == 24
    for i, (key, found) in enumerate(samples):
        suffix = listing.relative(i).rsplit(".", 1)[1].lower()
        assert key == f"{i:06d}"
        assert found == {suffix: listing.path(i).read_bytes(), "cls": str(listing.label_ids[i]).encode()}
    assert {s[1]["cls"] for s in samples} == {b"0", b"1", b"2"}


def test_webdataset_reads_the_shards_as_written(tmp_path: Path) -> None:
    """The package phase5 builds on groups the members into the same samples, labels included."""
    webdataset = pytest.importorskip("webdataset")
    src = folder(tmp_path / "src")
    assert main([str(src), str(tmp_path / "out/s-%03d.tar"), "--max-count", "7"]) == 0
    listing = list_folder(src)
    got = list(webdataset.WebDataset(str(tmp_path / "out/s-{000..003}.tar"), shardshuffle=False))
    assert [s["__key__"] for s in got] == [f"{i:06d}" for i in range(len(listing))]
    for i, sample in enumerate(got):
        suffix = listing.relative(i).rsplit(".", 1)[1].lower()
        assert sample[suffix] == listing.path(i).read_bytes()
        assert int(sample["cls"]) == listing.label_ids[i]


def test_the_same_folder_gives_byte_identical_shards(tmp_path: Path) -> None:
    """Another run, other file times and another umask: the same bytes; the headers hold nothing of the moment."""
    src = folder(tmp_path / "src")
    assert main([str(src), str(tmp_path / "a/s-%06d.tar"), "--max-bytes", "30000"]) == 0
    for path in src.rglob("*"):
        os.utime(path, (1e9, 1e9))
    old = os.umask(0o077)
    try:
        assert main([str(src), str(tmp_path / "b/s-%06d.tar"), "--max-bytes", "30000"]) == 0
    finally:
        os.umask(old)
    first, second = shards_in(tmp_path / "a"), shards_in(tmp_path / "b")
    assert len(first) > 2
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    with tarfile.open(first[0]) as tar:
        for m in tar.getmembers():
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) == (
                0,
                0,
                0,
                "",
                "",
                0o444,
                tarfile.REGTYPE,
            )
    assert first[0].read_bytes()[257:263] == b"ustar\x00"  # POSIX ustar headers


def test_limits_hold_and_sizes_are_as_planned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = folder(tmp_path / "src", n=40, classes=2)
    big = src / "class0" / "zz-big.png"
    from PIL import Image

    Image.frombytes("L", (300, 300), os.urandom(90000)).save(big)  # incompressible: about 90 KB
    assert main([str(src), str(tmp_path / "out/s-%04d.tar"), "--max-bytes", "40960", "--max-count", "6"]) == 0
    assert "(1 of them one image larger than --max-bytes)" in capsys.readouterr().out
    paths, listing = shards_in(tmp_path / "out"), list_folder(src)
    per_shard = [len(read_shards([p])) for p in paths]
    assert sum(per_shard) == len(listing) == 42
    assert max(per_shard) <= 6
    for path, count in zip(paths, per_shard):
        size = path.stat().st_size
        assert size % 10240 == 0
        assert size <= 40960 or count == 1
    alone = [p for p, count in zip(paths, per_shard) if p.stat().st_size > 40960]
    assert len(alone) == 1 and read_shards(alone)[0][1]["png"] == big.read_bytes()


def test_a_folder_without_class_folders_has_no_cls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = folder(tmp_path / "flat", n=12, classes=0)
    assert main([str(src), str(tmp_path / "out/s-%06d.tar")]) == 0
    assert "(no labels: no .cls)" in capsys.readouterr().out
    samples = read_shards(shards_in(tmp_path / "out"))
    assert len(samples) == 13 and all("cls" not in found for _, found in samples)


def test_files_beside_class_folders_mean_no_labels(tmp_path: Path) -> None:
    """As phase5 reads such a folder: labelled only when every image has a class folder."""
    src = folder(tmp_path / "src", n=10, classes=2)
    (src / "class0" / "img0000006.jpg").rename(src / "top.jpg")
    assert main([str(src), str(tmp_path / "out/s-%06d.tar")]) == 0
    assert all("cls" not in found for _, found in read_shards(shards_in(tmp_path / "out")))


def test_the_command_runs_as_a_module(tmp_path: Path) -> None:
    src = folder(tmp_path / "src", n=6, classes=2)
    cmd = [sys.executable, "-m", "lrsched.recipes.dino.make_shards", str(src), str(tmp_path / "o/s-%06d.tar")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stderr == ""
    assert len(read_shards(shards_in(tmp_path / "o"))) == 7


# --- refusals: one line, exit status 2, nothing written ---------------------------------------------------


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = 2) -> str:
    """Run ``argv``; check the status and that stderr is one line; that line."""
    assert main(argv) == status
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("make_shards: "), err
    return err


def everything_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("out", "extra", "said"),
    [
        ("o/s.tar", [], "needs one zero-padded shard number such as %06d"),
        ("o/s-%d.tar", [], "needs one zero-padded shard number"),
        ("o/s-%06d-%06d.tar", [], "needs one zero-padded shard number"),
        ("o/s-%06d%%.tar", [], "and no other %"),
        ("o/s-%06d.tar.gz", [], "the name ends with .tar"),
        ("o%06d/s-%06d.tar", [], "a % only in the file name"),
        ("o/{a,b}-%06d.tar", [], "no {}*?[] in it"),
        ("o/s-%06d.tar", ["--max-count", "-1"], "argument --max-count: '-1': must be 0 (no limit) or a whole number"),
        ("o/s-%06d.tar", ["--max-count", "2.5"], "argument --max-count"),
        ("o/s-%06d.tar", ["--max-count", "nan"], "argument --max-count"),
        ("o/s-%06d.tar", ["--max-bytes", "10000"], "a whole number of at least 10240"),
        ("o/s-%06d.tar", ["--max-bytes", "1e999"], "argument --max-bytes"),
        ("o/s-%06d.tar", ["--max-bytes", "0", "--max-count", "0"], "at least one limit is needed"),
        ("o/s-%06d.tar", ["--data-timeout", "-1"], "argument --data-timeout"),
        ("o/s-%01d.tar", ["--max-count", "2"], "12 shards need more than 1 digits"),
    ],
)
def test_bad_flags_and_patterns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str, extra: list[str], said: str
) -> None:
    src = folder(tmp_path / "src")
    before = everything_under(tmp_path)
    assert said in refused([str(src), str(tmp_path / out), *extra], capsys)
    assert everything_under(tmp_path) == before


def test_bad_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "o/s-%06d.tar")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.jpg").write_bytes(b"x")
    for split in ("train/a", "val/a"):
        make_image_folder(tmp_path / "split" / split, 2, classes=0, sizes=(8, 9))
    before = everything_under(tmp_path)
    assert "no such folder" in refused([str(tmp_path / "missing"), out], capsys)
    assert "is a file, not a folder" in refused([str(tmp_path / "file.jpg"), out], capsys)
    assert "no images (.jpg" in refused([str(tmp_path / "empty"), out], capsys)
    line = refused([str(tmp_path / "split"), out], capsys)
    assert "holds train/ and val/ (or test/): write each on its own" in line
    assert "is a file, not a folder" in refused(
        [str(tmp_path / "empty"), str(tmp_path / "file.jpg/s-%06d.tar")], capsys
    )
    assert everything_under(tmp_path) == before


def test_existing_shards_are_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = folder(tmp_path / "src")
    (tmp_path / "o").mkdir()
    (tmp_path / "o/s-0000012.tar").write_bytes(b"someone else's shard")
    line = refused([str(src), str(tmp_path / "o/s-%06d.tar")], capsys)
    assert "holds 1 shard(s) of that name already (s-0000012.tar)" in line and "never overwritten" in line
    assert os.listdir(tmp_path / "o") == ["s-0000012.tar"]
    assert (tmp_path / "o/s-0000012.tar").read_bytes() == b"someone else's shard"
    assert main([str(src), str(tmp_path / "o/t-%06d.tar")]) == 0  # another name in the same folder is fine


def test_a_shard_that_appears_while_writing_is_kept_and_ours_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = folder(tmp_path / "src")
    publish = make_shards.Written.publish

    def another_writer_first(self: make_shards.Written) -> None:
        (tmp_path / "o/s-000001.tar").write_bytes(b"theirs")
        publish(self)

    monkeypatch.setattr(make_shards.Written, "publish", another_writer_first)
    line = refused([str(src), str(tmp_path / "o/s-%06d.tar"), "--max-count", "10"], capsys)
    assert "s-000001.tar appeared while the shards were written" in line
    assert os.listdir(tmp_path / "o") == ["s-000001.tar"]
    assert (tmp_path / "o/s-000001.tar").read_bytes() == b"theirs"


# --- failures while writing: nothing stays ----------------------------------------------------------------


def failing_read(monkeypatch: pytest.MonkeyPatch, at: int, fail: object) -> None:
    """The ``at``-th file read calls ``fail`` (an exception to raise, or a function to call)."""
    read, calls = make_shards.Source.read, [0]

    def read_or_fail(self: make_shards.Source, i: int) -> bytes:
        calls[0] += 1
        if calls[0] == at:
            if isinstance(fail, BaseException):
                raise fail
            assert callable(fail)
            fail()
        return read(self, i)

    monkeypatch.setattr(make_shards.Source, "read", read_or_fail)


def test_a_full_disk_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = folder(tmp_path / "src")
    failing_read(monkeypatch, 17, OSError(28, "No space left on device"))
    line = refused([str(src), str(tmp_path / "new/deeper/s-%06d.tar"), "--max-count", "4"], capsys, status=1)
    assert "cannot write the shards (No space left on device); nothing written" in line
    assert not (tmp_path / "new").exists()  # the folders it made are gone too


def test_an_unreadable_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = folder(tmp_path / "src")
    victim = list_folder(src).path(9)
    failing_read(monkeypatch, 10, lambda: victim.write_bytes(b"shorter"))
    (tmp_path / "o").mkdir()
    line = refused([str(src), str(tmp_path / "o/s-%06d.tar"), "--max-count", "4"], capsys)
    assert f"{victim} changed while it was copied" in line and "-> 7 bytes" in line
    assert os.listdir(tmp_path / "o") == []


def test_a_stalled_read_ends_at_the_deadline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    src = folder(tmp_path / "src")
    failing_read(monkeypatch, 5, lambda: time.sleep(30))
    (tmp_path / "o").mkdir()
    started = time.monotonic()
    line = refused([str(src), str(tmp_path / "o/s-%06d.tar"), "--data-timeout", "1"], capsys, status=4)
    assert time.monotonic() - started < 10
    assert "--data-timeout 1: copying SRC made no progress for 1 s (4 images copied)" in line
    assert os.listdir(tmp_path / "o") == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_writing_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, sig: signal.Signals
) -> None:
    src = folder(tmp_path / "src")
    failing_read(monkeypatch, 13, lambda: os.kill(os.getpid(), sig))
    (tmp_path / "o").mkdir()
    line = refused([str(src), str(tmp_path / "o/s-%06d.tar"), "--max-count", "3"], capsys, status=128 + sig)
    assert line == f"make_shards: stopped by {sig.name}; nothing written\n"
    assert os.listdir(tmp_path / "o") == []


def test_planned_sizes_match_the_tar_module(tmp_path: Path) -> None:
    """The size rule the plan uses is the standard library's: checked on a shard of every member size 0-1100."""
    import io

    from lrsched.recipes.dino.shard_layout import header, member_bytes

    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for size in range(1100):
            tar.addfile(header(f"{size:06d}.bin", size), io.BytesIO(b"x" * size))
    assert path.stat().st_size == shard_bytes(sum(member_bytes(size) for size in range(1100)))


def test_too_little_free_space_is_said_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import collections

    src = folder(tmp_path / "src")
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(make_shards.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 50_000, 50_000))
    line = refused([str(src), str(tmp_path / "new/s-%06d.tar")], capsys, status=1)
    assert "MB needed in" in line and "0.1 MB free" in line and line.endswith("nothing written\n")
    assert not (tmp_path / "new").exists()
