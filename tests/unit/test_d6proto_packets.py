"""The hand-written fsutil packets (core/session/filesync/packets.py) and the generated
bkcore.api.pb.fsutil classes encode and decode the same bytes, so either can sit on the wire."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from bkcore.api.codec import GoCodec
from bkcore.api.pb import control, filesync, fsutil, gateway, sshforward
from bkcore.session.filesync import packets

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"

DIR = packets.GO_DIR | 0o755
LINK = packets.GO_SYMLINK | 0o777
CASES: list[packets.Packet] = [
    packets.Packet(),  # end of listing: zero-length message
    packets.Packet(stat=packets.Stat(path="bin", mode=DIR, mod_time=1795712345000000000)),
    packets.Packet(
        stat=packets.Stat(
            path="bin/sh", mode=LINK, size=7, mod_time=1795712345000000000, linkname="busybox"
        ),
        id=6,
    ),
    packets.Packet(
        stat=packets.Stat(
            path="dev/null",
            mode=packets.GO_DEVICE | packets.GO_CHARDEV | 0o666,
            uid=1000,
            gid=1000,
            devmajor=1,
            devminor=3,
        ),
        id=9,
    ),
    # sorted xattrs; an empty value is omitted as gogo does for map<string, bytes>
    packets.Packet(
        stat=packets.Stat(
            path="f",
            mode=0o4755 & 0o777 | packets.GO_SETUID,
            size=1 << 40,
            mod_time=-1,  # before 1970: a 10-byte varint
            xattrs={"security.capability": b"\x01\x00", "user.a": b"x", "user.empty": b""},
        ),
        id=1 << 31,
    ),
    packets.Packet(type=packets.PacketType.REQ, id=8),
    packets.Packet(type=packets.PacketType.DATA, id=1, data=b"\x7fELF" + bytes(40000)),
    packets.Packet(type=packets.PacketType.DATA, id=1),  # end of file 1
    packets.Packet(type=packets.PacketType.FIN),
    packets.Packet(type=packets.PacketType.ERR, data=b'no access allowed to dir "x"'),
]


def _generated(p: packets.Packet) -> fsutil.Packet:
    """The same packet built from field values with the generated classes."""
    kwargs: dict[str, Any] = {"type": int(p.type), "id": p.id, "data": p.data}
    if p.stat is not None:
        s = p.stat
        kwargs["stat"] = fsutil.Stat(
            path=s.path,
            mode=s.mode,
            uid=s.uid,
            gid=s.gid,
            size=s.size,
            mod_time=s.mod_time,
            linkname=s.linkname,
            devmajor=s.devmajor,
            devminor=s.devminor,
            xattrs=dict(sorted(s.xattrs.items())),
        )
    return fsutil.Packet(**kwargs)


@pytest.mark.parametrize("packet", CASES, ids=repr)
def test_same_bytes_both_ways(packet: packets.Packet) -> None:
    wire = bytes(packet)
    generated = _generated(packet)
    assert GoCodec().encode(generated, fsutil.Packet) == wire
    decoded = fsutil.Packet().parse(wire)
    assert GoCodec().encode(decoded, fsutil.Packet) == wire
    # an empty xattr value is omitted on the wire and read back as b"" by both sides
    back = packets.Packet.FromString(GoCodec().encode(generated, fsutil.Packet))
    assert back == packet
    if packet.stat is not None:
        assert decoded.stat.path == packet.stat.path and decoded.stat.mode == packet.stat.mode
        assert decoded.stat.mod_time == packet.stat.mod_time


def test_stat_only_packet_has_no_type_field() -> None:
    stat = packets.Packet(stat=packets.Stat(path="hello.txt", mode=0o644, size=14))
    assert bytes(stat)[:1] == b"\x12"  # type STAT = 0 is not written
    assert bytes(_generated(stat)) == bytes(stat)


def test_bkcore_change_token_is_an_unknown_field_kept_by_generated_classes() -> None:
    # packets.py sends Stat.change as field 1001; a Go peer (and our generated classes)
    # skip it, and the generated classes write it back unchanged
    p = packets.Packet(stat=packets.Stat(path="a", mode=0o644, change="tok1"), id=3)
    wire = bytes(p)
    decoded = fsutil.Packet().parse(wire)
    assert decoded.stat.path == "a"
    assert cast(Any, decoded.stat)._unknown_fields  # the token
    assert GoCodec().encode(decoded, fsutil.Packet) == wire


def test_bytes_messages_of_every_package_match() -> None:
    for data in (b"", b"x", bytes(range(256)) * 200):
        wire = bytes(packets.BytesMessage(data))
        for cls in (control.BytesMessage, filesync.BytesMessage, sshforward.BytesMessage):
            msg = cast(Any, cls)(data=data)
            assert bytes(msg) == wire and GoCodec().encode(msg, cls) == wire
            assert cls().parse(wire).data == data


def test_capture_packets_decode_alike() -> None:
    capture = json.loads((VECTORS / "session_capture.json").read_text())
    seen = 0
    for call in capture["inner_calls"].values():
        if "DiffCopy" not in call["path"]:
            continue
        for ev in call["events"]:
            if ev.get("ev") != "MSG" or len(ev["hex"]) != 2 * ev["len"]:
                continue
            raw = bytes.fromhex(ev["hex"])
            hand = packets.Packet.FromString(raw)
            gen = fsutil.Packet().parse(raw)
            assert bytes(hand) == raw == GoCodec().encode(gen, fsutil.Packet)
            assert int(hand.type) == int(gen.type) and hand.id == gen.id
            assert hand.data == gen.data
            if hand.stat is not None:
                assert gen.stat._serialized_on_wire and hand.stat.path == gen.stat.path
                assert (hand.stat.mode, hand.stat.size, hand.stat.mod_time) == (
                    gen.stat.mode,
                    gen.stat.size,
                    gen.stat.mod_time,
                )
            seen += 1
    assert seen > 30


def test_gogo_map_values() -> None:
    # gogo writes an empty string value ("12 00") but omits an empty bytes value
    res = gateway.Result(metadata={"k": b""})
    assert GoCodec().encode(res, gateway.Result) == bytes.fromhex("5203" "0a016b")  # fmt: skip
    req = gateway.SolveRequest(frontend_opt={"k": ""})
    expect = bytes.fromhex("1a05" "0a016b" "1200")  # fmt: skip
    assert GoCodec().encode(req, gateway.SolveRequest) == expect


def test_go_codec_carries_hand_written_packets() -> None:
    # the fast hand-written classes can be declared in a grpclib Handler with GoCodec
    codec = GoCodec()
    pkt = CASES[2]
    wire = codec.encode(pkt, packets.Packet)
    assert wire == bytes(pkt) == codec.encode(_generated(pkt), fsutil.Packet)
    assert codec.decode(wire, packets.Packet) == pkt
    # a hand-written packet sent where the generated class is declared is fine too
    assert codec.encode(pkt, fsutil.Packet) == wire
    assert codec.encode(bytearray(b"\x08\x03"), fsutil.Packet) == b"\x08\x03"
    assert codec.decode(b"\x08\x03", bytes) == b"\x08\x03"
    with pytest.raises(TypeError):
        codec.encode(object(), fsutil.Packet)
    with pytest.raises(TypeError):
        codec.encode(control.InfoRequest(), fsutil.Packet)
