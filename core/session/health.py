"""``grpc.health.v1.Health``: every client session serves it (the daemon polls Check)."""

from __future__ import annotations

from collections.abc import Mapping

from bkcore.session.filesync.packets import _fields, _put_bytes_field, _put_varint_field
from bkcore.session.transport import Handler, Metadata

__all__ = ["HEALTH_CHECK", "HealthCheckRequest", "HealthCheckResponse", "HealthService"]

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = 1


# Hand-written like the filesync packets: the same bytes as generated code, without
# betterproto's import and per-message cost (the daemon polls Check every 5 s per session).


class HealthCheckRequest:
    """``grpc.health.v1.HealthCheckRequest{string service = 1}``."""

    __slots__ = ("service",)

    def __init__(self, service: str = "") -> None:
        self.service = service

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HealthCheckRequest) and other.service == self.service

    def __repr__(self) -> str:
        return f"HealthCheckRequest(service={self.service!r})"

    def __bytes__(self) -> bytes:
        out = bytearray()
        _put_bytes_field(1, self.service.encode(), out)
        return bytes(out)

    @classmethod
    def FromString(cls, data: bytes | memoryview) -> HealthCheckRequest:
        msg = cls()
        for field, wire, value in _fields(data):
            if field == 1 and wire == 2:
                msg.service = bytes(value).decode()
        return msg


class HealthCheckResponse:
    """``grpc.health.v1.HealthCheckResponse{ServingStatus status = 1}``."""

    __slots__ = ("status",)

    def __init__(self, status: int = 0) -> None:
        self.status = status

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HealthCheckResponse) and other.status == self.status

    def __repr__(self) -> str:
        return f"HealthCheckResponse(status={self.status})"

    def __bytes__(self) -> bytes:
        out = bytearray()
        _put_varint_field(1, self.status, out)
        return bytes(out)

    @classmethod
    def FromString(cls, data: bytes | memoryview) -> HealthCheckResponse:
        msg = cls()
        for field, wire, value in _fields(data):
            if field == 1 and wire == 0:
                msg.status = value - (1 << 64) if value >= 1 << 63 else value
        return msg


class HealthService:
    """Answers ``SERVING`` while the session is open."""

    def handlers(self) -> Mapping[str, Handler]:
        return {
            HEALTH_CHECK: Handler("unary", self._check, HealthCheckRequest, HealthCheckResponse)
        }

    async def _check(self, request: HealthCheckRequest, metadata: Metadata) -> HealthCheckResponse:
        return HealthCheckResponse(status=SERVING)
