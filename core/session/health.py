"""``grpc.health.v1.Health``: every client session serves it (the daemon polls Check)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import betterproto

from bkcore.session.transport import Handler, Metadata

__all__ = ["HEALTH_CHECK", "HealthCheckRequest", "HealthCheckResponse", "HealthService"]

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = 1


@dataclass(eq=False, repr=False)
class HealthCheckRequest(betterproto.Message):
    service: str = betterproto.string_field(1)


@dataclass(eq=False, repr=False)
class HealthCheckResponse(betterproto.Message):
    status: int = betterproto.int32_field(1)


class HealthService:
    """Answers ``SERVING`` while the session is open."""

    def handlers(self) -> Mapping[str, Handler]:
        return {
            HEALTH_CHECK: Handler("unary", self._check, HealthCheckRequest, HealthCheckResponse)
        }

    async def _check(self, request: HealthCheckRequest, metadata: Metadata) -> HealthCheckResponse:
        return HealthCheckResponse(status=SERVING)
