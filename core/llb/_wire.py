"""Go-compatible bytes for the parts betterproto encodes differently from gogo-protobuf.

Ops are serialized by betterproto (see spec llb.md §2: identical once the pitfalls are
avoided). The Definition envelope is not: betterproto drops map values that are empty
(Go writes ``12 00`` for the empty ``Locations`` of every op and for ``""`` descriptions)
and writes maps in insertion order. These helpers frame those messages by hand, reading
the field values from ``bkcore.llb.pb`` objects.
"""

from __future__ import annotations

import betterproto
from bkcore.llb import pb

_U64 = (1 << 64) - 1


def varint(n: int) -> bytes:
    """Protobuf varint; negative numbers as 10-byte two's complement like Go's int64."""
    n &= _U64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)


def field_bytes(num: int, data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return varint(num << 3 | 2) + varint(len(raw)) + raw


def _present(msg: betterproto.Message) -> bool:
    return bool(betterproto.serialized_on_wire(msg))


def op_metadata_bytes(md: pb.OpMetadata) -> bytes:
    """``OpMetadata`` as gogo writes it: sorted maps, every entry with key and value."""
    out = bytearray()
    if md.ignore_cache:
        out += field_varint(1, 1)
    for key in sorted(md.description):
        out += field_bytes(2, field_bytes(1, key) + field_bytes(2, md.description[key]))
    if _present(md.export_cache):
        out += field_bytes(4, field_varint(1, 1) if md.export_cache.value else b"")
    for key in sorted(md.caps):
        out += field_bytes(5, field_bytes(1, key) + field_varint(2, int(md.caps[key])))
    if _present(md.progress_group):
        out += field_bytes(6, bytes(md.progress_group))
    return bytes(out)


def source_info_bytes(info: pb.SourceInfo) -> bytes:
    out = bytearray()
    if info.filename:
        out += field_bytes(1, info.filename)
    if info.data:
        out += field_bytes(2, info.data)
    if _present(info.definition):
        out += field_bytes(3, definition_bytes(info.definition))
    return bytes(out)


def source_bytes(src: pb.Source) -> bytes:
    out = bytearray()
    for key in sorted(src.locations):
        out += field_bytes(1, field_bytes(1, key) + field_bytes(2, bytes(src.locations[key])))
    for info in src.infos:
        out += field_bytes(2, source_info_bytes(info))
    return bytes(out)


def definition_bytes(defn: pb.Definition) -> bytes:
    """A ``Definition`` byte-identical to the Go client's for the same content."""
    out = bytearray()
    for op in defn.def_:
        out += field_bytes(1, op)
    for key in sorted(defn.metadata):
        md = op_metadata_bytes(defn.metadata[key])
        out += field_bytes(2, field_bytes(1, key) + field_bytes(2, md))
    if _present(defn.source):
        out += field_bytes(3, source_bytes(defn.source))
    return bytes(out)
