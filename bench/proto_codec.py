"""Encode/decode cost of the wire messages, per codec, in one invocation.

What the daemon's gRPC layer spends per message for the messages that dominate traffic:
diffcopy DATA packets (32 KiB chunks, as Go sends), STAT packets (one per file of a listing)
and a Status stream message (the 1147-byte VertexWarning captured from buildkitd). Measured,
interleaved per round:

* ``packets.py``: the hand-written fsutil codec of core/session/filesync (the anchor);
* ``betterproto``: ``bytes(msg)`` / ``Cls().parse(data)`` of the generated bkcore.api.pb classes;
* ``GoCodec``: bkcore.api.codec.GoCodec.encode (Go-identical bytes) / decode.

Prints the median microseconds per message and the ratio to the anchor. No figure is asserted.

    python bench/proto_codec.py [--rounds 7] [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _time(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()

    from bkcore.api.codec import GoCodec
    from bkcore.api.pb import control, fsutil
    from bkcore.session.filesync import packets

    codec = GoCodec()
    chunk = bytes(range(256)) * 128  # 32 KiB
    data_hand = packets.Packet(type=packets.PacketType.DATA, id=7, data=chunk)
    data_gen = fsutil.Packet(type=2, id=7, data=chunk)  # type: ignore[arg-type]
    stat_hand = packets.Packet(
        stat=packets.Stat(
            path="usr/lib/python3/dist-packages/x.py", mode=0o644, size=12345, mod_time=1 << 60
        ),
        id=1234,
    )
    stat_gen = fsutil.Packet(
        stat=fsutil.Stat(
            path="usr/lib/python3/dist-packages/x.py", mode=0o644, size=12345, mod_time=1 << 60
        ),
        id=1234,
    )
    capture = json.loads((REPO / "tests/data/vectors/control_capture.json").read_text())
    warning = next(bytes.fromhex(s["hex"]) for s in capture["samples"] if s["len"] == 1147)
    status_msg = control.StatusResponse().parse(warning)

    data_wire, stat_wire = bytes(data_hand), bytes(stat_hand)
    cases: list[tuple[str, dict[str, Callable[[], Any]]]] = [
        (
            "DATA 32 KiB encode",
            {
                "packets.py": lambda: bytes(data_hand),
                "betterproto": lambda: bytes(data_gen),
                "GoCodec": lambda: codec.encode(data_gen, fsutil.Packet),
            },
        ),
        (
            "DATA 32 KiB decode",
            {
                "packets.py": lambda: packets.Packet.FromString(data_wire),
                "betterproto": lambda: fsutil.Packet().parse(data_wire),
                "GoCodec": lambda: codec.decode(data_wire, fsutil.Packet),
            },
        ),
        (
            "STAT encode",
            {
                "packets.py": lambda: bytes(stat_hand),
                "betterproto": lambda: bytes(stat_gen),
                "GoCodec": lambda: codec.encode(stat_gen, fsutil.Packet),
            },
        ),
        (
            "STAT decode",
            {
                "packets.py": lambda: packets.Packet.FromString(stat_wire),
                "betterproto": lambda: fsutil.Packet().parse(stat_wire),
                "GoCodec": lambda: codec.decode(stat_wire, fsutil.Packet),
            },
        ),
        (
            "StatusResponse 1147 B encode",
            {
                "betterproto": lambda: bytes(status_msg),
                "GoCodec": lambda: codec.encode(status_msg, control.StatusResponse),
            },
        ),
        (
            "StatusResponse 1147 B decode",
            {
                "betterproto": lambda: control.StatusResponse().parse(warning),
                "GoCodec": lambda: codec.decode(warning, control.StatusResponse),
            },
        ),
    ]
    print(f"{'case':32} {'codec':12} {'median us':>10} {'min us':>9} {'ratio':>7}")
    for title, fns in cases:
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():  # interleaved: load hits every codec alike
                samples[name].append(_time(fn, args.n))
        anchor = statistics.median(next(iter(samples.values())))
        for name, values in samples.items():
            med = statistics.median(values)
            print(f"{title:32} {name:12} {med:10.2f} {min(values):9.2f} {med / anchor:7.2f}")


if __name__ == "__main__":
    main()
