"""Bundles: deterministic packing, and extraction that refuses every unsafe member."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from relaymd.storage.bundle import (
    BundleError,
    UnsafeBundleError,
    extract_bundle,
    pack_bundle,
)
from relaymd.storage.hashing import sha256_file


def _job_dir(root: Path) -> Path:
    src = root / "job"
    (src / "inputs" / "empty").mkdir(parents=True)
    (src / "system.xml").write_text("<System/>")
    (src / "inputs" / "state.xml").write_text("<State/>")
    run = src / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    return src


def test_pack_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    src = _job_dir(tmp_path)
    first = pack_bundle(src, tmp_path / "a.tar.gz")
    os.utime(src / "system.xml", (1, 1))  # times do not matter
    second = pack_bundle(src, tmp_path / "b.tar.gz")
    assert first == second and first.files == 3
    assert first.sha256 == sha256_file(tmp_path / "a.tar.gz")
    assert first.size == (tmp_path / "a.tar.gz").stat().st_size
    (src / "system.xml").write_text("<System v='2'/>")
    assert pack_bundle(src, tmp_path / "c.tar.gz").sha256 != first.sha256

    out = tmp_path / "out"
    paths = extract_bundle(tmp_path / "a.tar.gz", out)
    assert {p.relative_to(out).as_posix() for p in paths} == {
        "inputs",
        "inputs/empty",
        "inputs/state.xml",
        "run.sh",
        "system.xml",
    }
    assert (out / "inputs" / "state.xml").read_text() == "<State/>"
    assert (out / "inputs" / "empty").is_dir()
    assert os.access(out / "run.sh", os.X_OK)
    assert not os.access(out / "system.xml", os.X_OK)
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert {(m.uid, m.gid, m.mtime, m.uname) for m in tar} == {(0, 0, 0, "")}


def test_pack_follows_file_symlinks_and_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    src = _job_dir(tmp_path)
    outside = tmp_path / "ff.xml"
    outside.write_text("<ForceField/>")
    (src / "ff.xml").symlink_to(outside)
    # A link leaving the job directory is packed only when asked for.
    with pytest.raises(BundleError, match=f"ff.xml: symlink to {outside}, outside"):
        pack_bundle(src, tmp_path / "a.tar.gz")
    packed = pack_bundle(src, tmp_path / "a.tar.gz", follow_external_links=True)
    assert packed.files == 4
    out = tmp_path / "out"
    extract_bundle(tmp_path / "a.tar.gz", out)
    assert not (out / "ff.xml").is_symlink() and (out / "ff.xml").read_text() == "<ForceField/>"

    (src / "dangling").symlink_to(tmp_path / "absent")
    with pytest.raises(BundleError, match="dangling: broken symlink"):
        pack_bundle(src, tmp_path / "b.tar.gz", follow_external_links=True)
    (src / "dangling").unlink()
    os.mkfifo(src / "pipe")
    with pytest.raises(BundleError, match="pipe: not a regular file"):
        pack_bundle(src, tmp_path / "b.tar.gz", follow_external_links=True)
    (src / "pipe").unlink()
    (src / "linked_dir").symlink_to(tmp_path)
    with pytest.raises(BundleError, match="linked_dir: symlink to something other"):
        pack_bundle(src, tmp_path / "b.tar.gz", follow_external_links=True)
    with pytest.raises(BundleError, match="inside"):
        pack_bundle(src, src / "self.tar.gz", follow_external_links=True)


def _tarball(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([_file("/etc/evil")], "absolute path '/etc/evil'"),
        ([_file("ok.txt"), _file("../evil")], "path '../evil' contains '..'"),
        ([_file("a/../../evil")], "contains '..'"),
        ([_link("link", "/etc/passwd", tarfile.SYMTYPE)], "absolute symlink target"),
        ([_link("link", "../../outside", tarfile.SYMTYPE)], "symlink target '../../outside'"),
        ([_link("link", "/etc/passwd", tarfile.LNKTYPE)], "absolute hardlink target"),
        ([_link("link", "../outside", tarfile.LNKTYPE)], "hardlink target '../outside'"),
        ([_link("link", "not-there", tarfile.LNKTYPE)], "not an earlier file"),
        ([_special("dev/sda", tarfile.BLKTYPE)], "device, FIFO or other special file"),
        ([_special("tty", tarfile.CHRTYPE)], "device, FIFO or other special file"),
        ([_special("fifo", tarfile.FIFOTYPE)], "device, FIFO or other special file"),
        ([_file("big.bin", b"x" * 2000)], "2000 bytes, over the 1000-byte limit per member"),
        ([_file("a", b"x" * 600), _file("b", b"x" * 600)], "exceeds the 1100-byte limit in total"),
        ([_file("same"), _file("same")], "listed twice"),
    ],
)
def test_unsafe_members_are_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], reason: str
) -> None:
    archive = _tarball(tmp_path / "evil.tar.gz", *members)
    dest = tmp_path / "work" / "inputs"
    with pytest.raises(UnsafeBundleError) as caught:
        extract_bundle(archive, dest, max_member_bytes=1000, max_total_bytes=1100)
    bad_member = members[-1][0].name
    assert f"bundle member {bad_member!r}" in str(caught.value)
    assert reason in str(caught.value)
    assert not dest.exists()
    assert list((tmp_path / "work").iterdir()) == []  # staging removed
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_links_inside_the_tree_are_kept(tmp_path: Path) -> None:
    archive = _tarball(
        tmp_path / "ok.tar.gz",
        _file("data/real.txt", b"payload"),
        _link("data/alias", "real.txt", tarfile.SYMTYPE),
        _link("hard.txt", "data/real.txt", tarfile.LNKTYPE),
        _file("./dot/prefixed.txt", b"p"),
    )
    out = tmp_path / "out"
    extract_bundle(archive, out)
    assert (out / "data" / "alias").is_symlink()
    assert (out / "data" / "alias").read_bytes() == b"payload"
    assert (out / "hard.txt").read_bytes() == b"payload"
    assert (out / "dot" / "prefixed.txt").read_bytes() == b"p"


def test_bad_archives_and_destinations(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(BundleError, match=r"not a readable tar\.gz"):
        extract_bundle(garbage, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    good = _tarball(tmp_path / "good.tar.gz", _file("a"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(BundleError, match="absent or empty"):
        extract_bundle(good, busy)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert extract_bundle(good, empty) == [empty / "a"]
