"""A grpclib codec that encodes messages byte for byte like BuildKit's Go (gogo) types.

``bytes(msg)`` of betterproto 2.0.0b7 differs from Go in three ways that reach the wire (see
:mod:`bkcore.llb.digest`): map entries come in insertion order (Go sorts keys), a map value
that is ``""``/``b""``/an empty message loses its field (Go writes ``12 00``), and an empty
sub-message built without arguments is dropped. :class:`GoCodec` encodes with
:func:`bkcore.llb.digest.marshal` and also writes the sub-messages that Go declares
non-nullable even when they were never set (``SolveRequest.Cache`` is always ``42 00`` from
buildctl; ``UsageRecord.CreatedAt``, ``VertexStatus.timestamp``, ``VertexLog.timestamp``).

Use it on both ends: ``Server(handlers, codec=GoCodec(), status_details_codec=...)`` and
``Channel(..., codec=GoCodec(), ...)``. Decoding is betterproto's ``parse``. Messages that are
not betterproto messages (the raw-bytes pass-through some transports use) are written as is.
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

    from bkcore.llb.digest import marshal

    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    if not isinstance(message, betterproto.Message):
        raise TypeError(f"cannot encode {type(message).__name__} as protobuf")
    _mark_non_nullable(message)
    return marshal(message)


class GoCodec(CodecBase):
    """grpclib codec: Go-identical encoding, betterproto decoding (content-type
    ``application/grpc+proto``, which buildkitd accepts like ``application/grpc``)."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        if message_type is not None and not isinstance(message, message_type):
            if not isinstance(message, bytes | bytearray | memoryview):
                raise TypeError(
                    f"message must be of type {message_type.__name__}, not {type(message).__name__}"
                )
        return encode(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        if message_type is bytes:
            return bytes(data)
        return message_type().parse(data)
