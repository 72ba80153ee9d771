"""The diffcopy packet codec against bytes captured from buildctl/buildkitd v0.11.6."""

from __future__ import annotations

import os
import stat

from bkcore.session.filesync.packets import (
    BytesMessage,
    Packet,
    PacketType,
    Stat,
    go_mode,
    posix_mode,
)

CAPTURED_STAT = "121c0a0a446f636b657266696c6510a40328d70130b5c185c8e2efe9f518"
CAPTURED_DOCKERIGNORE = "121e0a0d2e646f636b657269676e6f726510a403280630e79791c8e2efe9f518"


def test_captured_stat_packets_roundtrip() -> None:
    p = Packet.FromString(bytes.fromhex(CAPTURED_STAT))
    assert p.type == PacketType.STAT and p.stat is not None
    assert (p.stat.path, p.stat.mode, p.stat.size) == ("Dockerfile", 420, 215)
    assert p.stat.mod_time == 1795713036732948661
    assert bytes(p).hex() == CAPTURED_STAT
    q = Packet.FromString(bytes.fromhex(CAPTURED_DOCKERIGNORE))
    assert q.stat is not None and q.stat.path == ".dockerignore" and q.stat.size == 6
    assert bytes(q).hex() == CAPTURED_DOCKERIGNORE


def test_control_packets_match_capture() -> None:
    assert bytes(Packet()) == b""  # end of listing
    assert bytes(Packet(PacketType.REQ)).hex() == "0801"  # REQ{ID 0}
    assert bytes(Packet(PacketType.REQ, id=1)).hex() == "08011801"
    assert bytes(Packet(PacketType.DATA, id=0)).hex() == "0802"
    assert bytes(Packet(PacketType.FIN)).hex() == "0803"
    data = Packet.FromString(bytes.fromhex("080222062a2e746d700a"))
    assert data.type == PacketType.DATA and data.data == b"*.tmp\n"
    big = Packet(PacketType.DATA, id=8, data=b"x" * 32768)
    assert bytes(big)[:8].hex() == "0802180822808002"  # as captured for 32 KiB chunks


def test_full_stat_roundtrip_with_negative_time_xattrs_and_extension() -> None:
    s = Stat(
        path="dir/\udcff-name",
        mode=(1 << 31) | 0o755,
        uid=1000,
        gid=1000,
        size=0,
        mod_time=-5,
        linkname="",
        devmajor=1,
        devminor=3,
        xattrs={"user.a": b"\x00\x01", "user.b": b""},
        change="1:2:3",
    )
    back = Packet.FromString(bytes(Packet(PacketType.STAT, stat=s)))
    assert back.stat == s
    # unknown fields are skipped (forward compatibility)
    assert Stat.FromString(bytes(s) + bytes.fromhex("a01f05")).path == s.path
    assert BytesMessage.FromString(bytes(BytesMessage(b"abc"))).data == b"abc"


def test_go_mode_conversion() -> None:
    assert go_mode(stat.S_IFDIR | 0o755) == 2147484141  # captured "bin"
    assert go_mode(stat.S_IFLNK | 0o777) == 134218239  # captured "bin/sh"
    assert go_mode(stat.S_IFREG | 0o644) == 420
    for mode in (
        stat.S_IFREG | 0o4755,
        stat.S_IFDIR | 0o1777,
        stat.S_IFCHR | 0o600,
        stat.S_IFBLK | 0o660,
        stat.S_IFIFO | 0o2644,
    ):
        assert posix_mode(go_mode(mode)) == mode
    assert go_mode(stat.S_IFSOCK | 0o755) == 0o755  # the socket bit is cleared
    assert os.sep == "/"
