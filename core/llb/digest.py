"""Vertex digests and Go-compatible deterministic protobuf encoding for the LLB model.

A vertex digest is ``"sha256:" + hex(sha256(op_bytes))`` over the exact bytes stored in
``Definition.def``, so a Python client only gets BuildKit's digests when it writes the same
bytes as the Go client (gogo-protobuf, ``stable_marshaler_all``; see spec/llb.md §2).
:func:`marshal` is that encoder. It walks a betterproto message using the class metadata
betterproto generates and applies the Go rules:

* fields in ascending field-number order, oneof members at their own number;
* proto3 implicit presence: zero scalars, empty strings/bytes, enum 0 and empty repeated
  fields are omitted, except the selected oneof member, which is always written;
* negative int32/int64 values are 10-byte two's-complement varints;
* a sub-message is written when it is *present*: received on the wire, given a field value,
  or marked with :func:`present`; a present empty message is ``tag 00``. ``Range.start`` and
  ``Range.end`` are non-nullable in Go and always written;
* repeated message elements are always written, even when empty;
* map entries are sorted by key and always carry both key and value (``12 00`` for an empty
  value);
* numeric repeated fields are packed (proto3 default); unknown fields are appended as read.

betterproto 2.0.0b7 pitfalls this module exists for (``bytes(msg)`` gets them wrong):

1. An empty sub-message constructed with no arguments (``WorkerConstraints()``,
   ``LowerDiffInput()``, ``MergeInput()``) is silently dropped; Go writes ``5a 00`` etc. and
   the digest changes. Use ``present(pb.WorkerConstraints())`` or pass a field explicitly.
   (A sub-message mutated in place, ``m.args.append(...)``, is not marked as set either;
   :func:`marshal` writes any sub-message whose encoding is non-empty.)
2. Map entries are emitted in dict insertion order; Go sorts by key.
3. Map entries whose value is ``""``, ``b""`` or an empty message lose the value field; Go
   writes ``12 00``. This changes ``Definition.metadata``/``Source.locations`` bytes.
4. Unknown fields are re-emitted at the end of the message, not in field-number order, so
   ops from newer clients may not round-trip byte for byte: always hash the bytes as
   received (:func:`op_digest`), never a re-encoding.
5. ``Message.parse`` does not reject truncated or mistyped input (a cut length-delimited
   field is read short, a varint where a message belongs becomes an ``int``); see
   :func:`bkcore.llb.dump.load_definition` for the strict check.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Final, TypeVar, cast

import betterproto

__all__ = ["digest_op", "marshal", "op_digest", "present"]

M = TypeVar("M", bound=betterproto.Message)

_MASK64: Final = (1 << 64) - 1
_VARINT_TYPES: Final = frozenset(
    {"enum", "bool", "int32", "int64", "uint32", "uint64", "sint32", "sint64"}
)
_FIXED_FORMATS: Final = {
    "fixed32": ("<I", 5),
    "sfixed32": ("<i", 5),
    "float": ("<f", 5),
    "fixed64": ("<Q", 1),
    "sfixed64": ("<q", 1),
    "double": ("<d", 1),
}
# Go non-nullable sub-messages (gogoproto.nullable=false): written even when never set.
_ALWAYS_PRESENT: Final = frozenset({("Range", "start"), ("Range", "end")})


def op_digest(op_bytes: bytes) -> str:
    """Digest of one serialized op: ``"sha256:<lowercase hex>"``."""
    return "sha256:" + hashlib.sha256(op_bytes).hexdigest()


def digest_op(op: betterproto.Message) -> tuple[bytes, str]:
    """Marshal an ``Op`` with :func:`marshal`; returns ``(op_bytes, digest)``."""
    data = marshal(op)
    return data, op_digest(data)


def present(msg: M) -> M:
    """Mark a (possibly empty) sub-message as set, so it is written like a non-nil Go pointer."""
    msg._serialized_on_wire = True
    return msg


def marshal(msg: betterproto.Message) -> bytes:
    """Encode ``msg`` exactly as BuildKit's Go types do (rules in the module docstring)."""
    out = bytearray()
    _encode_message(msg, out)
    return bytes(out)


def _varint(value: int) -> bytes:
    value &= _MASK64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint((number << 3) | wire_type)


def _varint_value(proto_type: str, value: Any) -> int:
    if proto_type == "bool":
        return 1 if value else 0
    if proto_type in ("sint32", "sint64"):
        return (int(value) << 1) ^ (int(value) >> 63)
    return int(value)


def _is_zero(proto_type: str, value: Any) -> bool:
    if proto_type in _FIXED_FORMATS:
        fmt = _FIXED_FORMATS[proto_type][0]
        return struct.pack(fmt, value) == bytes(struct.calcsize(fmt))
    if proto_type in _VARINT_TYPES:
        return _varint_value(proto_type, value) == 0
    return len(value) == 0


def _scalar(number: int, proto_type: str, value: Any, out: bytearray) -> None:
    """Append one scalar field (key + value); callers decide whether zero is written."""
    if proto_type in _VARINT_TYPES:
        out += _key(number, 0) + _varint(_varint_value(proto_type, value))
    elif proto_type in _FIXED_FORMATS:
        fmt, wire_type = _FIXED_FORMATS[proto_type]
        out += _key(number, wire_type) + struct.pack(fmt, value)
    else:
        data = value.encode("utf-8") if proto_type == "string" else bytes(value)
        out += _key(number, 2) + _varint(len(data)) + data


def _packed_item(proto_type: str, value: Any) -> bytes:
    if proto_type in _VARINT_TYPES:
        return _varint(_varint_value(proto_type, value))
    return struct.pack(_FIXED_FORMATS[proto_type][0], value)


def _submessage(number: int, value: betterproto.Message, out: bytearray, force: bool) -> None:
    body = marshal(value)
    if body or force or value._serialized_on_wire:
        out += _key(number, 2) + _varint(len(body)) + body


def _map_value(number: int, proto_type: str, value: Any, out: bytearray) -> None:
    if proto_type == "message":
        body = marshal(value)
        out += _key(number, 2) + _varint(len(body)) + body
    else:
        _scalar(number, proto_type, value, out)


def _encode_message(msg: betterproto.Message, out: bytearray) -> None:
    meta = cast(Any, msg)._betterproto
    type_name = type(msg).__name__
    for name in meta.sorted_field_names:
        field = meta.meta_by_field_name[name]
        if field.wraps:
            raise TypeError(f"{type_name}.{name}: wrapper types are not supported")
        if field.group:
            selected, value = cast(tuple[str, Any], betterproto.which_one_of(msg, field.group))
            if selected != name:
                continue
            if field.proto_type == "message":
                _submessage(field.number, value, out, force=True)
            else:
                _scalar(field.number, field.proto_type, value, out)
            continue
        value = getattr(msg, name)
        if value is None:  # proto3 `optional` left unset
            continue
        ptype = field.proto_type
        if ptype == "map":
            assert field.map_types is not None
            ktype, vtype = field.map_types
            for k in sorted(value):
                entry = bytearray()
                _scalar(1, ktype, k, entry)
                _map_value(2, vtype, value[k], entry)
                out += _key(field.number, 2) + _varint(len(entry)) + entry
        elif isinstance(value, list):
            if ptype == "message":
                for item in value:
                    _submessage(field.number, item, out, force=True)
            elif ptype in _VARINT_TYPES or ptype in _FIXED_FORMATS:
                if value:
                    packed = b"".join(_packed_item(ptype, v) for v in value)
                    out += _key(field.number, 2) + _varint(len(packed)) + packed
            else:
                for item in value:
                    _scalar(field.number, ptype, item, out)
        elif ptype == "message":
            _submessage(field.number, value, out, force=(type_name, name) in _ALWAYS_PRESENT)
        elif field.optional or not _is_zero(ptype, value):
            _scalar(field.number, ptype, value, out)
    out += msg._unknown_fields
