"""tar exporter: deterministic archive layout and delivery through FileSend."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bkcore.errors import ExportError
from bkcore.plugins.exporters.tar import CHUNK, TarExporter, tar_chunks
from bkcore.progress import ProgressStream, VertexEvent
from bkcore.session.session import Session
from bkcore.sessions.filesync import FileSendTarget


def _tree(root: Path) -> Path:
    root.mkdir()
    (root / "b").mkdir()
    (root / "b" / "z.txt").write_bytes(b"zzz")
    (root / "a.txt").write_bytes(b"hello\n")
    os.link(root / "a.txt", root / "b" / "hard")
    os.symlink("a.txt", root / "ln")
    (root / "setuid").write_bytes(b"")
    os.chmod(root / "setuid", 0o4755)
    if os.geteuid() == 0:
        os.chown(root / "b" / "z.txt", 1234, 5678)
    os.utime(root / "a.txt", ns=(0, 1_000_000_000 * 100 + 600_000_000))  # 100.6 s
    os.mkfifo(root / "fifo")
    return root


def _archive(root: Path, epoch: int | None = None) -> bytes:
    return b"".join(tar_chunks(str(root), epoch=epoch))


def test_layout_order_types_and_metadata(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
        data = _archive(root)
    members = tarfile.open(fileobj=io.BytesIO(data)).getmembers()
    names = [m.name for m in members]
    # depth first, bytewise sorted; no root entry, no ./ prefix; sockets skipped
    assert names == ["a.txt", "b", "b/hard", "b/z.txt", "fifo", "ln", "setuid"]
    by = {m.name: m for m in members}
    assert by["a.txt"].isreg() and by["a.txt"].size == 6 and by["a.txt"].mtime == 101  # rounded
    assert by["b/hard"].islnk() and by["b/hard"].linkname == "a.txt"  # first path has the data
    assert by["ln"].issym() and by["ln"].linkname == "a.txt"
    assert by["fifo"].isfifo()
    assert by["setuid"].mode == 0o4755
    assert all(m.uname == "" and m.gname == "" for m in members)
    if os.geteuid() == 0:
        assert (by["b/z.txt"].uid, by["b/z.txt"].gid) == (1234, 5678)
    # raw bytes: USTAR magic, directory names end with "/", two zero blocks, no record padding
    assert data[257:265] == b"ustar\x0000"
    assert b"b/\x00" in data[:2048]
    assert data.endswith(bytes(1024)) and len(data) % 512 == 0
    assert len(data) < 10240  # not padded to a 10 KiB record
    assert data == _archive(root)  # deterministic


def test_epoch_sets_every_mtime(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    members = tarfile.open(fileobj=io.BytesIO(_archive(root, epoch=1_000_000_000))).getmembers()
    assert {m.mtime for m in members} == {1_000_000_000}


def test_xattrs_become_pax_records(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "f").write_text("x")
    try:
        os.setxattr(root / "f", "user.note", b"v1")
    except OSError:
        pytest.skip("this file system has no user xattrs")
    member = tarfile.open(fileobj=io.BytesIO(_archive(root))).getmember("f")
    assert member.pax_headers["SCHILY.xattr.user.note"] == "v1"


def test_large_files_stream_in_chunks(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    payload = os.urandom(3 * CHUNK + 5)
    (root / "big").write_bytes(payload)
    (root / "small").write_bytes(b"s")
    chunks = list(tar_chunks(str(root)))
    assert len(chunks) > 3 and max(len(c) for c in chunks) <= CHUNK + 1024
    tf = tarfile.open(fileobj=io.BytesIO(b"".join(chunks)))
    extracted = tf.extractfile("big")
    assert extracted is not None and extracted.read() == payload


@dataclass
class _Ctx:
    root: Path
    caller: Any
    progress: ProgressStream = field(default_factory=ProgressStream)
    refs: dict[str, Any] = field(default_factory=dict)  # platform -> a result's tree (Path)

    def view(self, result: object) -> contextlib.AbstractContextManager[Path]:
        @contextlib.contextmanager
        def cm() -> Iterator[Path]:
            yield result if isinstance(result, Path) else self.root

        return cm()


def test_export_writes_the_client_file_atomically(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    dest = tmp_path / "out" / "result.tar"
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    session = Session()
    session.allow(FileSendTarget(file=str(dest)))
    ctx = _Ctx(root, session.caller())
    reader = ctx.progress.subscribe()
    response = asyncio.run(TarExporter().export(ctx, None, {}))
    assert response == {}
    assert dest.read_bytes() == _archive(root)
    assert sorted(os.listdir(dest.parent)) == ["result.tar"]  # no temp file left
    events = [e for e in reader.read_nowait() if isinstance(e, VertexEvent)]
    assert [e.name for e in events] == ["exporting to client tarball"] * 2
    assert events[-1].completed and not events[-1].error


def test_export_failures(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    no_target = Session()  # no FileSend: the client did not ask for an output
    with pytest.raises(ExportError, match="not supported by the client"):
        asyncio.run(TarExporter().export(_Ctx(root, no_target.caller()), None, {}))
    with pytest.raises(ExportError, match="needs a client session"):
        asyncio.run(TarExporter().export(_Ctx(root, None), None, {}))
    with pytest.raises(ExportError, match="source-date-epoch"):
        asyncio.run(TarExporter().export(_Ctx(root, None), None, {"source-date-epoch": "x"}))


def test_long_and_non_utf8_names_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "t"
    long_dir = root / ("d" * 90) / ("e" * 90)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 120)).write_text("deep")
    odd = os.fsencode(root) + b"/caf\xe9"
    with open(odd, "wb") as f:
        f.write(b"latin-1 name")
    data = _archive(root)
    out = tmp_path / "x"
    out.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tf:
        tf.extractall(out, filter="tar")
    assert (out / ("d" * 90) / ("e" * 90) / ("f" * 120)).read_text() == "deep"
    with open(os.fsencode(out) + b"/caf\xe9", "rb") as f:
        assert f.read() == b"latin-1 name"


@pytest.mark.parametrize(
    ("kind", "name", "link"),
    [
        (tarfile.REGTYPE, "a/b.txt", ""),
        (tarfile.DIRTYPE, "a/dir", ""),
        (tarfile.SYMTYPE, "ln", "../x/y"),
        (tarfile.LNKTYPE, "hard", "a/b.txt"),
        (tarfile.CHRTYPE, "dev/null", ""),
        (tarfile.BLKTYPE, "dev/sda", ""),
        (tarfile.FIFOTYPE, "fifo", ""),
        (tarfile.REGTYPE, "n" * 100, ""),
    ],
)
def test_fast_header_is_byte_identical_to_tarfile(kind: bytes, name: str, link: str) -> None:
    from bkcore.plugins.exporters.tar import ustar_header

    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.mode, info.uid, info.gid, info.mtime = 0o4755, 1234, 5678, 1_700_000_000
    info.uname = info.gname = ""
    info.size = 12345 if kind == tarfile.REGTYPE else 0
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 8, 3
    assert ustar_header(info) == info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    info.name = "é" + name  # needs a PAX record: left to tarfile
    assert ustar_header(info) is None


def test_multi_platform_tarball_has_one_top_directory_per_platform(tmp_path: Path) -> None:
    amd = tmp_path / "amd"
    amd.mkdir()
    (amd / "f").write_text("amd\n")
    os.link(amd / "f", amd / "g")
    arm = tmp_path / "arm"
    arm.mkdir()
    (arm / "f").write_text("arm\n")
    dest = tmp_path / "out.tar"
    session = Session()
    session.allow(FileSendTarget(file=str(dest)))
    ctx = _Ctx(tmp_path / "unused", session.caller(), refs={"linux/arm64": arm, "linux/amd64": amd})
    asyncio.run(TarExporter().export(ctx, None, {}))
    with tarfile.open(dest) as tf:
        members = [(m.name, m.type, m.linkname) for m in tf.getmembers()]
        assert members == [
            ("linux_amd64", tarfile.DIRTYPE, ""),
            ("linux_amd64/f", tarfile.REGTYPE, ""),
            ("linux_amd64/g", tarfile.LNKTYPE, "linux_amd64/f"),
            ("linux_arm64", tarfile.DIRTYPE, ""),
            ("linux_arm64/f", tarfile.REGTYPE, ""),
        ]
        extracted = tf.extractfile("linux_arm64/f")
        assert extracted is not None and extracted.read() == b"arm\n"
