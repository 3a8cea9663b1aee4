"""The definitions tarball: reproducible, and extracted without surprises."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from functions.shared.definitions import build_tarball, safe_extract
from functions.shared.errors import DefinitionsCorrupt


def write_tar(
    path: Path, members: list[tarfile.TarInfo], data: bytes = b"x", mode: str = "w"
) -> None:
    with tarfile.open(path, mode) as tar:
        for member in members:
            member.size = len(data) if member.isfile() else 0
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


def test_tarball_is_reproducible(tmp_path):
    (tmp_path / "a.hdb").write_text("x:1:Y\n")
    first = build_tarball(tmp_path, [tmp_path / "a.hdb"])
    (tmp_path / "a.hdb").touch()  # a new mtime must not change the bytes
    assert build_tarball(tmp_path, [tmp_path / "a.hdb"]) == first


def test_round_trip(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.hdb").write_text("x:1:Y\n")
    tarball = tmp_path / "db.tar"
    tarball.write_bytes(build_tarball(source, [source / "a.hdb"]))
    assert safe_extract(tarball, tmp_path / "out") == ["a.hdb"]
    assert (tmp_path / "out" / "a.hdb").read_text() == "x:1:Y\n"


def test_a_gzip_tarball_an_older_version_published_still_extracts(tmp_path):
    tarball = tmp_path / "db.tar.gz"
    write_tar(tarball, [tarfile.TarInfo("old.hdb")], data=b"x:1:Y\n", mode="w:gz")
    assert safe_extract(tarball, tmp_path / "out") == ["old.hdb"]
    assert (tmp_path / "out" / "old.hdb").read_text() == "x:1:Y\n"


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../escape.hdb"),
        tarfile.TarInfo("/etc/evil.hdb"),
        tarfile.TarInfo("sub/dir.hdb"),
        tarfile.TarInfo("notes.sh"),
    ],
)
def test_unsafe_member_names_are_rejected_and_nothing_is_written(tmp_path, member):
    tarball = tmp_path / "bad.tar"
    good = tarfile.TarInfo("good.hdb")
    write_tar(tarball, [good, member])
    target = tmp_path / "defs" / "v1"
    with pytest.raises(DefinitionsCorrupt):
        safe_extract(tarball, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "escape.hdb").exists()


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE]
)
def test_links_devices_and_directories_are_rejected(tmp_path, kind):
    member = tarfile.TarInfo("link.hdb")
    member.type = kind
    member.linkname = "/etc/passwd"
    tarball = tmp_path / "bad.tar"
    write_tar(tarball, [member])
    with pytest.raises(DefinitionsCorrupt):
        safe_extract(tarball, tmp_path / "out")


@pytest.mark.parametrize("mode", ["w:bz2", "w:xz"])
def test_only_plain_or_gzip_tarballs_are_read(tmp_path, mode):
    # Nothing our publishers ever wrote; a bz2 or xz stream expands far more than gzip.
    tarball = tmp_path / "db.tar"
    write_tar(tarball, [tarfile.TarInfo("a.hdb")], mode=mode)
    with pytest.raises(DefinitionsCorrupt):
        safe_extract(tarball, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_not_a_tarball(tmp_path):
    tarball = tmp_path / "junk.tar"
    tarball.write_bytes(b"definitely not a tarball")
    with pytest.raises(DefinitionsCorrupt):
        safe_extract(tarball, tmp_path / "out")
