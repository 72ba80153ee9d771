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
from typing import Any, Final, NamedTuple, TypeVar, cast

import betterproto

__all__ = ["digest_op", "marshal", "op_digest", "present"]

M = TypeVar("M", bound=betterproto.Message)


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
    return _encode(msg)


# ------------------------------------------------------------------------ the encoder
#
# Field values are read from the instance ``__dict__`` (betterproto's ``__getattribute__``
# costs ~2 us a read: it checks oneof groups and materialises defaults). A field still
# holding betterproto's PLACEHOLDER was never set: it is the zero value (an absent
# sub-message), which is exactly what reading it through betterproto would give.
# Each message class is compiled once into a tuple of field plans in field-number order.

_PLACEHOLDER: Final[Any] = betterproto.PLACEHOLDER
_raw_get: Final = object.__getattribute__  # an instance's __dict__ past betterproto
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
# Single-byte varints, the common case for keys, lengths, enums and small numbers.
_SMALL: Final = tuple(bytes((i,)) for i in range(128))

# field kinds
_K_SCALAR: Final = 0
_K_MESSAGE: Final = 1
_K_MAP: Final = 2
_K_STRING: Final = 3  # fast paths of the common scalars (a list takes the general path)
_K_INT: Final = 4  # int32/int64/uint32/uint64/enum: the value is the varint
_INT_TYPES: Final = frozenset({"enum", "int32", "int64", "uint32", "uint64"})


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _SMALL[value]
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


def _scalar_body(proto_type: str, value: Any) -> bytes:
    """The encoded value of one scalar (no key); a length prefix for strings and bytes."""
    if proto_type == "string":
        data: bytes = value.encode("utf-8")
        return _varint(len(data)) + data
    if proto_type == "bytes":
        data = bytes(value)
        return _varint(len(data)) + data
    if proto_type in _VARINT_TYPES:
        return _varint(_varint_value(proto_type, value))
    return struct.pack(_FIXED_FORMATS[proto_type][0], value)


def _is_zero(proto_type: str, value: Any) -> bool:
    if proto_type in _FIXED_FORMATS:
        fmt = _FIXED_FORMATS[proto_type][0]
        return struct.pack(fmt, value) == bytes(struct.calcsize(fmt))
    if proto_type in _VARINT_TYPES:
        return _varint_value(proto_type, value) == 0
    return len(value) == 0


def _wire_type(proto_type: str) -> int:
    if proto_type in _VARINT_TYPES:
        return 0
    if proto_type in _FIXED_FORMATS:
        return _FIXED_FORMATS[proto_type][1]
    return 2


class _Plan(NamedTuple):
    name: str
    kind: int
    proto_type: str
    group: str | None
    optional: bool
    force: bool  # an always-present sub-message
    key: bytes  # tag of a single value
    packed_key: bytes  # tag of a packed repeated field / a length-delimited value
    map_types: tuple[str, str] | None
    map_keys: tuple[bytes, bytes]  # tags of a map entry's key and value


_PLANS: dict[type, tuple[_Plan, ...]] = {}


def _plan(cls: type) -> tuple[_Plan, ...]:
    meta = cast(Any, cls)._betterproto
    plans = []
    for name in meta.sorted_field_names:
        field = meta.meta_by_field_name[name]
        if field.wraps:
            raise TypeError(f"{cls.__name__}.{name}: wrapper types are not supported")
        ptype = field.proto_type
        kind = {"map": _K_MAP, "message": _K_MESSAGE, "string": _K_STRING}.get(ptype, _K_SCALAR)
        if ptype in _INT_TYPES:
            kind = _K_INT
        wire = 2 if kind in (_K_MAP, _K_MESSAGE) else _wire_type(ptype)
        ktype, vtype = field.map_types or ("string", "string")
        plans.append(
            _Plan(
                name,
                kind,
                ptype,
                field.group,
                bool(field.optional),
                (cls.__name__, name) in _ALWAYS_PRESENT,
                _key(field.number, wire),
                _key(field.number, 2),
                field.map_types,
                (_key(1, _wire_type(ktype)), _key(2, _wire_type(vtype))),
            )
        )
    _PLANS[cls] = result = tuple(plans)
    return result


def _encode(msg: betterproto.Message) -> bytes:
    cls = type(msg)
    plans = _PLANS.get(cls)
    if plans is None:
        plans = _plan(cls)
    values = _raw_get(msg, "__dict__")
    parts: list[bytes] = []
    add = parts.append
    for p in plans:
        value = values[p.name]
        if p.group is not None:
            if values["_group_current"].get(p.group) != p.name:
                continue
            if value is _PLACEHOLDER:
                value = getattr(msg, p.name)
            if p.kind == _K_MESSAGE:  # the selected member is always written
                body = _encode(value)
                add(p.key + _varint(len(body)) + body)
            else:
                add(p.key + _scalar_body(p.proto_type, value))
            continue
        if value is _PLACEHOLDER:
            if p.force:
                add(p.key + b"\x00")
            continue
        if value is None:  # proto3 `optional` left unset
            continue
        kind = p.kind
        if kind == _K_STRING and value.__class__ is str:
            if value or p.optional:
                data = value.encode("utf-8")
                n = len(data)
                add(p.key + (_SMALL[n] if n < 128 else _varint(n)) + data)
        elif kind == _K_INT and not isinstance(value, list):
            number = int(value)
            if number or p.optional:
                add(p.key + (_SMALL[number] if 0 <= number < 128 else _varint(number)))
        elif kind == _K_MESSAGE:
            if isinstance(value, list):
                for item in value:  # repeated message elements are always written
                    body = _encode(item)
                    add(p.key + _varint(len(body)) + body)
                continue
            body = _encode(value)
            if body or p.force or _raw_get(value, "__dict__")["_serialized_on_wire"]:
                add(p.key + _varint(len(body)) + body)
        elif kind == _K_MAP:
            assert p.map_types is not None
            ktype, vtype = p.map_types
            kkey, vkey = p.map_keys
            for k in sorted(value):  # Go sorts by key; both key and value always written
                v = value[k]
                if vtype == "message":
                    vbody = _encode(v)
                    vpart = vkey + _varint(len(vbody)) + vbody
                else:
                    vpart = vkey + _scalar_body(vtype, v)
                entry = kkey + _scalar_body(ktype, k) + vpart
                add(p.packed_key + _varint(len(entry)) + entry)
        elif isinstance(value, list):
            ptype = p.proto_type
            if ptype in _VARINT_TYPES or ptype in _FIXED_FORMATS:
                if value:
                    packed = b"".join(_packed_item(ptype, v) for v in value)
                    add(p.packed_key + _varint(len(packed)) + packed)
            else:
                for item in value:
                    add(p.key + _scalar_body(ptype, item))
        elif p.optional or not _is_zero(p.proto_type, value):
            add(p.key + _scalar_body(p.proto_type, value))
    add(values["_unknown_fields"])
    return b"".join(parts)


def _packed_item(proto_type: str, value: Any) -> bytes:
    if proto_type in _VARINT_TYPES:
        return _varint(_varint_value(proto_type, value))
    return struct.pack(_FIXED_FORMATS[proto_type][0], value)
