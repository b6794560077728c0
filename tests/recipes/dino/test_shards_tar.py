"""recipes/dino/tar_members.py: the members of a tar from its headers, the same as Python's tarfile reads them,
whatever wrote the tar (tarfile in each format, GNU tar, long and non-ASCII names); cut or damaged tars refused."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from lrsched.recipes.dino import tar_members
from lrsched.recipes.dino.tar_members import Member


def by_tarfile(path: Path) -> list[Member]:
    with tarfile.open(path) as tar:
        return [Member(m.name, m.offset_data, m.size) for m in tar if m.isfile()]


def listed(path: Path) -> list[Member]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return tar_members.members(fd, os.fstat(fd).st_size, lambda: None)
    finally:
        os.close(fd)


NAMES = ["a.jpg", "a.cls", "dir/b.seg.png", "x" * 99 + ".jpg", "c" * 150 + "/d.jpg", "é-non-ascii.jpg", "e.jpg"]


def write(path: Path, fmt: int, names: list[str]) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for i, name in enumerate(names):
            content = bytes([i % 256]) * (i * 300 + 1)
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_are_what_tarfile_reads_in_every_format(tmp_path: Path, fmt: int) -> None:
    names = [n for n in NAMES if fmt != tarfile.USTAR_FORMAT or len(n) < 100 or "/" in n]
    path = write(tmp_path / "t.tar", fmt, names)
    got = listed(path)
    assert got == by_tarfile(path) and [m.name for m in got] == names


def test_plain_headers_are_parsed_without_tarfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "t.tar", tarfile.USTAR_FORMAT, ["a.jpg", "a.cls", "p" * 120 + "/q.jpg"])
    expected = by_tarfile(path)

    def no_tarfile(*args: object, **kwargs: object) -> list[Member]:
        raise AssertionError("plain ustar headers went to tarfile")

    monkeypatch.setattr(tar_members, "_tarfile_members", no_tarfile)
    assert listed(path) == expected  # the ustar prefix joined to the name


def test_a_tar_made_by_gnu_tar_with_folders_and_a_long_name(tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "sub").mkdir(parents=True)
    for name in ("s0.jpg", "s0.cls", "sub/s1.png", "sub/" + "L" * 120 + ".jpg"):
        (files / name).write_bytes(name.encode() * 7)
    path = tmp_path / "gnu.tar"
    subprocess.run(["tar", "cf", str(path), "--sort=name", "-C", str(files), "."], check=True)
    got = listed(path)
    assert got == by_tarfile(path) and len(got) == 4


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
def test_a_tar_cut_short_anywhere_is_refused(tmp_path: Path, fmt: int) -> None:
    whole = write(tmp_path / "t.tar", fmt, ["a.jpg", "b.jpg", "é.jpg", "c.jpg"]).read_bytes()
    members = by_tarfile(tmp_path / "t.tar")
    end = members[-1].offset + members[-1].size
    for cut in range(0, end + 511, 97):
        (tmp_path / "cut.tar").write_bytes(whole[:cut])
        with pytest.raises(tarfile.ReadError):
            listed(tmp_path / "cut.tar")


def test_a_damaged_header_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "t.tar", tarfile.USTAR_FORMAT, ["a.jpg", "b.jpg"])
    second = by_tarfile(path)[1].offset - 512
    with open(path, "r+b") as f:
        f.seek(second + 3)
        f.write(b"Z")  # one byte of the name: the checksum no longer matches
    with pytest.raises(tarfile.ReadError, match="damaged header at byte 1024"):
        listed(path)
