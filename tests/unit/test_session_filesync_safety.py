"""A hostile FileSync sender cannot write outside the destination or corrupt it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from bkcore.errors import SessionError
from bkcore.session import Handler, ServerStream, Session
from bkcore.session.filesync import DIFFCOPY, sync_dir
from bkcore.session.filesync.packets import GO_DIR, GO_SYMLINK, Packet, PacketType, Stat

FILE = 0o644
DIR = GO_DIR | 0o755
LINK = GO_SYMLINK | 0o777


class ScriptedSender:
    """Sends a fixed listing, then answers every REQ with ``payload`` (or a partial file
    followed by ERR when ``fail_mid_file``)."""

    def __init__(
        self, stats: Sequence[Stat], payload: bytes = b"pwned", fail_mid_file: bool = False
    ) -> None:
        self.stats = stats
        self.payload = payload
        self.fail_mid_file = fail_mid_file

    def handlers(self) -> Mapping[str, Handler]:
        return {DIFFCOPY: Handler("stream", self.run, Packet, Packet)}

    async def run(self, stream: ServerStream) -> None:
        for s in self.stats:
            await stream.send(Packet(PacketType.STAT, stat=s))
        await stream.send(Packet())
        while (p := await stream.recv()) is not None:
            if p.type == PacketType.REQ:
                await stream.send(Packet(PacketType.DATA, id=p.id, data=self.payload))
                if self.fail_mid_file:
                    await stream.send(Packet(PacketType.ERR, data=b"disk on fire"))
                    return
                await stream.send(Packet(PacketType.DATA, id=p.id))
            elif p.type == PacketType.FIN:
                await stream.send(Packet(PacketType.FIN))
                return
            else:
                return


def run_sync(sender: ScriptedSender, dest: Path) -> None:
    session = Session()
    session.allow(sender)
    asyncio.run(sync_dir(session.caller(), "ctx", str(dest)))


def tree_of(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "stats",
    [
        [Stat("../escape", FILE, size=5)],
        [Stat("/abs/escape", FILE, size=5)],
        [Stat("ok/../../escape", FILE, size=5)],
        [Stat("./escape", FILE, size=5)],
        [Stat("a//b", FILE, size=5)],
        # a symlink to a directory outside, then a file "under" it
        [Stat("link", LINK, size=3, linkname="../out"), Stat("link/escape", FILE, size=5)],
        # a file under a parent that was never sent
        [Stat("nodir/escape", FILE, size=5)],
        # a hard link to something outside or unlisted
        [Stat("h", FILE, linkname="../out/escape")],
        [Stat("l", LINK, linkname="../out"), Stat("m", FILE, linkname="l")],
        # out of walk order
        [Stat("b", FILE, size=5), Stat("a", FILE, size=5)],
    ],
    ids=[
        "dotdot",
        "absolute",
        "inner-dotdot",
        "dot",
        "empty-component",
        "under-symlink",
        "missing-parent",
        "hardlink-outside",
        "hardlink-to-symlink",
        "order",
    ],
)
def test_hostile_listing_is_refused(tmp_path: Path, stats: list[Stat]) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    out.mkdir()
    with pytest.raises(SessionError):
        run_sync(ScriptedSender(stats), dest)
    assert tree_of(out) == []
    assert not (tmp_path / "escape").exists()
    assert not any("escape" in p for p in tree_of(dest))


def test_existing_symlink_in_dest_is_replaced_not_followed(tmp_path: Path) -> None:
    """The destination holds ``a -> ../out`` from an earlier sync; a listing with ``a`` as a
    directory and ``a/f`` must replace the link, never write through it."""
    dest, out = tmp_path / "dest", tmp_path / "out"
    out.mkdir()
    dest.mkdir()
    os.symlink("../out", dest / "a")
    run_sync(ScriptedSender([Stat("a", DIR), Stat("a/f", FILE, size=5)]), dest)
    assert tree_of(out) == []
    assert not (dest / "a").is_symlink()
    assert (dest / "a" / "f").read_bytes() == b"pwned"


def test_symlink_target_is_stored_not_followed(tmp_path: Path) -> None:
    dest, out = tmp_path / "dest", tmp_path / "out"
    out.mkdir()
    (out / "victim").write_bytes(b"safe")
    run_sync(ScriptedSender([Stat("v", LINK, size=13, linkname="../out/victim")]), dest)
    assert os.readlink(dest / "v") == "../out/victim"
    assert (out / "victim").read_bytes() == b"safe"


def test_unrequested_data_is_refused(tmp_path: Path) -> None:
    class Pusher(ScriptedSender):
        async def run(self, stream: ServerStream) -> None:
            await stream.send(Packet(PacketType.STAT, stat=Stat("f", FILE, size=5)))
            await stream.send(Packet(PacketType.DATA, id=7, data=b"x"))
            while await stream.recv() is not None:
                pass

    with pytest.raises(SessionError, match="unrequested"):
        run_sync(Pusher([]), tmp_path / "dest")


def test_failure_mid_file_keeps_old_content_and_no_temporaries(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "f").write_bytes(b"old content")
    (dest / "keep").write_bytes(b"kept")
    sender = ScriptedSender([Stat("f", FILE, size=5)], fail_mid_file=True)
    with pytest.raises(SessionError, match="disk on fire"):
        run_sync(sender, dest)
    assert (dest / "f").read_bytes() == b"old content"
    assert tree_of(dest) == ["f", "keep"]  # nothing deleted, no temporary left behind


def test_write_failure_on_the_last_entry_is_reported(tmp_path: Path) -> None:
    """The writer thread fails (name too long) after the listing is complete: the sync must
    raise, not hang waiting for the writer."""
    dest = tmp_path / "dest"
    with pytest.raises(SessionError, match="writing the destination failed"):
        run_sync(ScriptedSender([Stat("n" * 300, DIR)]), dest)
    with pytest.raises(SessionError, match="writing the destination failed"):
        run_sync(ScriptedSender([Stat("f" * 300, FILE, size=5)]), dest)
    assert tree_of(dest) == []
