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
``Channel(..., codec=GoCodec(), ...)``. Decoding is betterproto's ``parse`` after a strict
check of the bytes against the schema (betterproto itself accepts truncated and mistyped
input, and recurses without bound): malformed bytes raise :class:`MalformedMessageError`, a
``GRPCError(INVALID_ARGUMENT)``. Raw ``bytes``
(the pass-through some transports use) are written as they are, and the hand-written classes
of :mod:`bkcore.session.filesync.packets` (``bytes(msg)`` / ``Cls.FromString``) work too:
they write the same bytes as the generated ``fsutil`` classes and are 10-50 times faster
(``bench/proto_codec.py``), which matters for file sync, where every file is a STAT packet
and every 32 KiB a DATA packet.
"""

from __future__ import annotations

from typing import Any

from grpclib.const import Status
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError

__all__ = [
    "MAX_DEPTH",
    "NON_NULLABLE",
    "GoCodec",
    "MalformedMessageError",
    "decode",
    "encode",
    "recv_limited",
]

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


# -- strict decoding ---------------------------------------------------------------------------

#: Messages nested deeper than this are refused before betterproto (which recurses) sees them.
MAX_DEPTH = 100
_WIRE_OF = {**dict.fromkeys(_VARINT, 0), **{t: w for t, (_, w) in _FIXED.items()}}
_SIZE_OF_WIRE = {1: 8, 5: 4}


class MalformedMessageError(GRPCError):
    """Bytes that are not a valid encoding of the expected message: INVALID_ARGUMENT, with one
    line naming the message type and the problem. Raised by :meth:`GoCodec.decode`, so a
    servicer's ``stream.recv_message()`` raises it and grpclib answers with that status."""

    def __init__(self, type_name: str, reason: str) -> None:
        super().__init__(Status.INVALID_ARGUMENT, f"malformed {type_name} message: {reason}")


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= end:
            raise ValueError("varint runs past the end")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >> 64:
                raise ValueError("varint overflows 64 bits")
            return result, pos
    raise ValueError("varint longer than 10 bytes")


def _check(data: bytes, start: int, end: int, cls: Any, depth: int) -> None:
    """Raise ValueError unless data[start:end] is a well-formed encoding of ``cls``
    (lengths inside the data, wire types matching the schema, UTF-8 strings). Unknown fields
    are allowed (skipped, as Go does)."""
    if depth > MAX_DEPTH:
        raise ValueError(f"messages nested deeper than {MAX_DEPTH} levels")
    meta = cls._betterproto
    pos = start
    while pos < end:
        key, pos = _read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"{cls.__name__}: field number 0")
        value_start = pos
        if wire == 0:
            _, pos = _read_varint(data, pos, end)
        elif wire in _SIZE_OF_WIRE:
            pos += _SIZE_OF_WIRE[wire]
        elif wire == 2:
            length, value_start = _read_varint(data, pos, end)
            pos = value_start + length
        else:
            raise ValueError(f"{cls.__name__} field {number}: unsupported wire type {wire}")
        if pos > end:
            raise ValueError(f"{cls.__name__} field {number} runs past the end")
        name = meta.field_name_by_number.get(number)
        if name is None:
            continue
        ptype = meta.meta_by_field_name[name].proto_type
        expected = _WIRE_OF.get(ptype, 2)
        if wire != expected:
            packed = wire == 2 and isinstance(meta.default_gen[name](), list)
            if not packed:
                raise ValueError(
                    f"{cls.__name__}.{name} (field {number}) has wire type {wire}, "
                    f"expected {expected}"
                )
            elif ptype in _VARINT:
                p = value_start
                while p < pos:
                    _, p = _read_varint(data, p, pos)
            elif (pos - value_start) % _SIZE_OF_WIRE[expected]:
                raise ValueError(f"{cls.__name__}.{name}: packed data has a partial element")
        elif ptype in ("message", "map"):
            _check(data, value_start, pos, meta.cls_by_field[name], depth + 1)
        elif ptype == "string":
            try:
                data[value_start:pos].decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{cls.__name__}.{name} is not valid UTF-8") from None


def decode(data: bytes, message_type: Any) -> Any:
    """Decode ``data`` strictly (see :class:`MalformedMessageError`)."""
    import betterproto

    if message_type is bytes:
        return bytes(data)
    data = bytes(data)
    name = getattr(message_type, "__name__", "protobuf")
    try:
        if isinstance(message_type, type) and issubclass(message_type, betterproto.Message):
            _check(data, 0, len(data), message_type, 0)
            return message_type().parse(data)
        return message_type.FromString(data)  # a hand-written codec class validates itself
    except (ValueError, UnicodeDecodeError, IndexError) as exc:
        raise MalformedMessageError(name, str(exc) or type(exc).__name__) from None


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
        return decode(data, message_type)


async def recv_limited(stream: Any, message_type: Any, max_recv: int) -> Any:
    """Read the one request message of a grpclib server ``stream`` with a size limit, as
    grpc-go's server does (buildkitd keeps its 4 MiB default): the length prefix is read
    before the body is buffered, and a longer message is RESOURCE_EXHAUSTED with grpc-go's
    wording. A missing or truncated body is INVALID_ARGUMENT, compression UNIMPLEMENTED, and
    the body is decoded strictly (:class:`MalformedMessageError`)."""
    import struct

    inner = stream._stream  # the h2 stream: read the length before the body is buffered
    meta = await inner.recv_data(5)
    if len(meta) < 5:
        raise GRPCError(Status.INVALID_ARGUMENT, "request message is missing")
    compressed, length = struct.unpack(">?I", meta)
    if compressed:
        raise GRPCError(Status.UNIMPLEMENTED, "compressed messages are not supported")
    if length > max_recv:
        raise GRPCError(
            Status.RESOURCE_EXHAUSTED,
            f"grpc: received message larger than max ({length} vs. {max_recv})",
        )
    body = await inner.recv_data(length) if length else b""
    if len(body) != length:
        raise GRPCError(Status.INVALID_ARGUMENT, "request message is truncated")
    return decode(body, message_type)
