"""FileSend: exports delivered to the client's directory, file or stdout."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bkcore.errors import SessionError
from bkcore.session import Session
from bkcore.session.filesync import send_dir_to_client, send_file_to_client
from bkcore.sessions.filesync import FileSendTarget


def test_directory_export_replaces_output(tmp_path: Path) -> None:
    rootfs, out = tmp_path / "rootfs", tmp_path / "out"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "hosts").write_bytes(b"127.0.0.1 localhost\n")
    (rootfs / "big").write_bytes(os.urandom(5 << 20))  # streamed in blocks
    os.symlink("etc/hosts", rootfs / "h")
    out.mkdir()
    (out / "unrelated").write_bytes(b"mine")
    target = FileSendTarget(dest_dir=str(out))
    session = Session()
    session.allow(target)
    stats = asyncio.run(send_dir_to_client(session.caller(), str(rootfs)))
    assert stats.files_sent == 2
    assert (out / "etc" / "hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert (out / "big").read_bytes() == (rootfs / "big").read_bytes()
    assert os.readlink(out / "h") == "etc/hosts"
    # swapped in whole once complete (not merged as by BuildKit's client)
    assert not (out / "unrelated").exists()
    assert sorted(os.listdir(tmp_path)) == ["out", "rootfs"]


def test_file_export_is_atomic_and_carries_metadata(tmp_path: Path) -> None:
    out = tmp_path / "image.tar"
    target = FileSendTarget(file=str(out))
    session = Session()
    session.allow(target)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            yield bytes([65 + i]) * 1000

    n = asyncio.run(send_file_to_client(session.caller(), chunks(), {"image.name": "x:latest"}))
    assert n == 3000
    assert out.read_bytes() == b"A" * 1000 + b"B" * 1000 + b"C" * 1000
    assert target.metadata.get("exporter-md-image.name") == "x:latest"

    async def failing() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("exporter crashed")

    out.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        asyncio.run(send_file_to_client(session.caller(), failing()))
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tar"]


def test_export_without_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="not supported by the client"):
        asyncio.run(send_dir_to_client(Session().caller(), str(tmp_path)))
    with pytest.raises(SessionError):
        FileSendTarget(dest_dir="a", file="b")
