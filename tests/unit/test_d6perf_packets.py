"""The inline packet decoder gives what the general field-by-field decoder gives, for every
field shape (multi-byte varints, unknown and repeated fields, xattrs, change tokens), and
refuses truncated input."""

from __future__ import annotations

import random
import stat as st

import pytest

from bkcore.session.filesync.packets import Packet, PacketType, Stat, go_mode


def sample(rng: random.Random) -> Packet:
    kind = rng.choice([PacketType.STAT, PacketType.DATA, PacketType.REQ, PacketType.HASH])
    stat = None
    if kind == PacketType.STAT and rng.random() < 0.9:
        stat = Stat(
            path="/".join(rng.choice(["a", "bé", "c" * 200, "\udcff"]) for _ in range(3)),
            mode=go_mode(rng.choice([st.S_IFREG | 0o644, st.S_IFDIR | 0o755, st.S_IFLNK | 0o777])),
            uid=rng.choice([0, 1000, 65534, 2**31]),
            gid=rng.choice([0, 5, 2**20]),
            size=rng.choice([0, 1, 127, 128, 2**40]),
            mod_time=rng.choice([0, -1, 1_700_000_000_123_456_789]),
            linkname=rng.choice(["", "target", "x" * 300]),
            devmajor=rng.choice([0, 8]),
            devminor=rng.choice([0, 300]),
            xattrs=rng.choice([{}, {"user.a": b"1", "security.capability": b"\x00\x01"}]),
            change=rng.choice(["", "2049:123:1700000000", "!racy"]),
        )
    return Packet(
        kind,
        stat=stat,
        id=rng.choice([0, 1, 127, 128, 2**31]),
        data=rng.choice([b"", b"sha256", bytes(range(256)) * 200]),
    )


def test_fast_decoder_matches_the_general_one() -> None:
    rng = random.Random(5)
    for _ in range(500):
        p = sample(rng)
        wire = bytes(p)
        assert Packet.FromString(wire) == p
        assert Packet._decode_slow(wire, Packet()) == p
        if p.stat is not None:
            body = bytes(p.stat)
            assert Stat.FromString(body) == Stat._decode_slow(body) == p.stat


def test_unknown_and_repeated_fields() -> None:
    s = Stat("a", go_mode(st.S_IFREG | 0o600), size=3)
    wire = bytes(Packet(PacketType.STAT, stat=s, id=7))
    extra = b"\x28\x09" + b"\xa2\x06\x02hi" + b"\x18\x08"  # field 5, field 100, id again
    p = Packet.FromString(wire + extra)
    assert p.stat == s and p.id == 8
    stat_extra = bytes(s) + b"\x2a\x01z" + b"\x28\x05"  # unknown-typed field 5 LEN, size again
    assert Stat.FromString(stat_extra).size == 5


def test_truncated_input_is_refused() -> None:
    wire = bytes(
        Packet(PacketType.STAT, stat=Stat("dir/file", go_mode(0o644), size=2**40), data=b"xyz")
    )
    for cut in range(1, len(wire)):
        try:
            Packet.FromString(wire[:cut])
        except ValueError:
            continue
        # a prefix that ends exactly between fields is a valid (shorter) message
        assert cut in (2, len(wire) - 5)
    with pytest.raises(ValueError):
        Packet.FromString(b"\x22\x05ab")
