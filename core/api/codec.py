"""A grpclib codec that encodes messages byte for byte like BuildKit's Go (gogo) types.

``bytes(msg)`` of betterproto 2.0.0b7 differs from Go where it reaches the wire (see
:mod:`bkcore.llb.digest`): a map value that is ``""`` or an empty message loses its field
(gogo writes ``12 00``; it omits only an empty ``bytes`` value, as in ``Result.metadata`` or
``Stat.xattrs``), and an empty sub-message built without arguments is dropped.
:class:`GoCodec` writes those like Go and also writes the sub-messages that BuildKit declares
non-nullable even when they were never set (``SolveRequest.Cache`` is always ``42 00`` from
buildctl; ``UsageRecord.CreatedAt``, ``VertexStatus.timestamp``, ``VertexLog.timestamp``).
Map entries keep their insertion order: buildkitd's Control types do not sort map keys (the
captured ``WorkerRecord.Labels`` are unsorted), so a decoded message re-encodes byte for byte;
sort a map before filling it for deterministic output. (LLB ops, whose bytes are hashed, use
:func:`bkcore.llb.digest.marshal`, which sorts as gogo's stable marshaler does.)

Use it on both ends: ``Server(handlers, codec=GoCodec(), status_details_codec=...)`` and
``Channel(..., codec=GoCodec(), ...)``. Decoding is betterproto's ``parse``. Raw ``bytes``
(the pass-through some transports use) are written as they are, and the hand-written classes
of :mod:`bkcore.session.filesync.packets` (``bytes(msg)`` / ``Cls.FromString``) work too:
they write the same bytes as the generated ``fsutil`` classes and are 10-50 times faster
(``bench/proto_codec.py``), which matters for file sync, where every file is a STAT packet
and every 32 KiB a DATA packet.
"""

from __future__ import annotations

from typing import Any

from grpclib.encoding.base import CodecBase

__all__ = ["NON_NULLABLE", "GoCodec", "encode"]

# (message class name, field) written even when unset: gogoproto.nullable=false in BuildKit.
NON_NULLABLE: frozenset[tuple[str, str]] = frozenset(
    {
        ("SolveRequest", "cache"),
        ("UsageRecord", "created_at"),
        ("VertexStatus", "timestamp"),
        ("VertexLog", "timestamp"),
        ("Range", "start"),
        ("Range", "end"),
    }
)
_CONTROL_MODULE = "bkcore.api.pb.control"


def _mark_non_nullable(msg: Any) -> None:
    """Mark Go's non-nullable sub-messages of ``msg`` (recursively) as present."""
    import betterproto

    meta = msg._betterproto
    cls = type(msg)
    for name in meta.sorted_field_names:
        field = meta.meta_by_field_name[name]
        if field.proto_type not in ("message", "map"):
            continue
        value = getattr(msg, name, None)
        if value is None:
            continue
        if isinstance(value, betterproto.Message):
            if (cls.__name__, name) in NON_NULLABLE and (
                cls.__module__ == _CONTROL_MODULE or cls.__name__ == "Range"
            ):
                value._serialized_on_wire = True
            _mark_non_nullable(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, betterproto.Message):
                    _mark_non_nullable(item)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, betterproto.Message):
                    _mark_non_nullable(item)


def encode(message: Any) -> bytes:
    """Go's encoding of a betterproto message (raw bytes are passed through)."""
    import betterproto

    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    if not isinstance(message, betterproto.Message):
        if callable(getattr(type(message), "__bytes__", None)):
            return bytes(message)  # a hand-written codec class (core/session/filesync/packets)
        raise TypeError(f"cannot encode {type(message).__name__} as protobuf")
    _mark_non_nullable(message)
    out = bytearray()
    _encode(message, out)
    return bytes(out)


_VARINT = frozenset({"enum", "bool", "int32", "int64", "uint32", "uint64", "sint32", "sint64"})
_FIXED = {
    "fixed32": ("<I", 5),
    "sfixed32": ("<i", 5),
    "float": ("<f", 5),
    "fixed64": ("<Q", 1),
    "sfixed64": ("<q", 1),
    "double": ("<d", 1),
}


def _varint(value: int, out: bytearray) -> None:
    value &= (1 << 64) - 1
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _int(ptype: str, value: Any) -> int:
    if ptype == "bool":
        return 1 if value else 0
    if ptype in ("sint32", "sint64"):
        return (int(value) << 1) ^ (int(value) >> 63)
    return int(value)


def _scalar(number: int, ptype: str, value: Any, out: bytearray) -> None:
    import struct

    if ptype in _VARINT:
        _varint(number << 3, out)
        _varint(_int(ptype, value), out)
    elif ptype in _FIXED:
        fmt, wire = _FIXED[ptype]
        _varint(number << 3 | wire, out)
        out += struct.pack(fmt, value)
    else:
        data = value.encode() if ptype == "string" else bytes(value)
        _varint(number << 3 | 2, out)
        _varint(len(data), out)
        out += data


def _is_zero(ptype: str, value: Any) -> bool:
    if ptype in _VARINT:
        return _int(ptype, value) == 0
    if ptype in _FIXED:
        return bool(value == 0) and str(value)[0] != "-"  # -0.0 is written by Go
    return len(value) == 0


def _message(number: int, value: Any, out: bytearray, force: bool) -> None:
    body = bytearray()
    _encode(value, body)
    if body or force or value._serialized_on_wire:
        _varint(number << 3 | 2, out)
        _varint(len(body), out)
        out += body


def _encode(msg: Any, out: bytearray) -> None:
    import struct

    import betterproto

    meta = msg._betterproto
    for name in meta.sorted_field_names:
        field = meta.meta_by_field_name[name]
        ptype = field.proto_type
        if field.group:
            selected, value = betterproto.which_one_of(msg, field.group)
            if selected != name:
                continue
            if ptype == "message":
                _message(field.number, value, out, force=True)
            else:
                _scalar(field.number, ptype, value, out)
            continue
        value = getattr(msg, name)
        if value is None:
            continue
        if ptype == "map":
            ktype, vtype = field.map_types
            for key, item in value.items():
                entry = bytearray()
                _scalar(1, ktype, key, entry)
                if vtype == "message":
                    _message(2, item, entry, force=True)
                elif vtype != "bytes" or item:  # gogo omits an empty bytes value only
                    _scalar(2, vtype, item, entry)
                _varint(field.number << 3 | 2, out)
                _varint(len(entry), out)
                out += entry
        elif isinstance(value, list):
            if ptype == "message":
                for item in value:
                    _message(field.number, item, out, force=True)
            elif ptype in _VARINT or ptype in _FIXED:
                if value:
                    packed = bytearray()
                    for item in value:
                        if ptype in _VARINT:
                            _varint(_int(ptype, item), packed)
                        else:
                            packed += struct.pack(_FIXED[ptype][0], item)
                    _varint(field.number << 3 | 2, out)
                    _varint(len(packed), out)
                    out += packed
            else:
                for item in value:
                    _scalar(field.number, ptype, item, out)
        elif ptype == "message":
            _message(field.number, value, out, force=False)
        elif field.optional or not _is_zero(ptype, value):
            _scalar(field.number, ptype, value, out)
    out += msg._unknown_fields


class GoCodec(CodecBase):
    """grpclib codec: Go-identical encoding, betterproto decoding. Subtype ``proto``: a
    grpclib client then sends ``content-type: application/grpc`` as buildctl does, and a
    grpclib server accepts that (it answers ``application/grpc+proto``, which grpc-go takes)."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message_type, type) and not isinstance(message, message_type):
            import betterproto

            raw = isinstance(message, bytes | bytearray | memoryview)
            handwritten = callable(getattr(type(message), "__bytes__", None))
            if isinstance(message, betterproto.Message) or not (raw or handwritten):
                raise TypeError(
                    f"message must be of type {message_type.__name__}, not {type(message).__name__}"
                )
        return encode(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        import betterproto

        if message_type is bytes:
            return bytes(data)
        if isinstance(message_type, type) and issubclass(message_type, betterproto.Message):
            return message_type().parse(data)
        return message_type.FromString(data)  # a hand-written codec class
