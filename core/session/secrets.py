"""The Secrets protocol (session.md §6): its messages and the daemon side, :func:`get_secret`.

The client side (the attachable serving ``GetSecret`` from files and environment variables)
is ``bkcore.sessions.secrets.provider.SecretsProvider``. Values are never put in exceptions,
reprs or logs; errors name only the secret id.
"""

from __future__ import annotations

from dataclasses import dataclass

import betterproto

from bkcore.errors import SessionError
from bkcore.session.transport import Caller, CallError, Status

__all__ = [
    "GETSECRET",
    "GetSecretRequest",
    "GetSecretResponse",
    "SecretNotFoundError",
    "get_secret",
]

GETSECRET = "/moby.buildkit.secrets.v1.Secrets/GetSecret"


@dataclass(eq=False, repr=False)
class GetSecretRequest(betterproto.Message):
    id: str = betterproto.string_field(1)
    annotations: dict[str, str] = betterproto.map_field(  # noqa: RUF009
        2, betterproto.TYPE_STRING, betterproto.TYPE_STRING
    )


@dataclass(eq=False, repr=False)
class GetSecretResponse(betterproto.Message):
    data: bytes = betterproto.bytes_field(1)

    def __repr__(self) -> str:  # never show the value
        return f"GetSecretResponse(<{len(self.data)} bytes>)"


class SecretNotFoundError(SessionError):
    """The client does not provide the requested secret."""


async def get_secret(caller: Caller, secret_id: str) -> bytes:
    """Fetch secret ``secret_id`` from the client; :class:`SecretNotFoundError` when absent."""
    try:
        response = await caller.call_unary(
            GETSECRET, GetSecretRequest(id=secret_id), GetSecretResponse
        )
    except CallError as exc:
        if exc.code in (Status.NOT_FOUND, Status.UNIMPLEMENTED):
            raise SecretNotFoundError(f"secret {secret_id} not found") from None
        raise SessionError(f"secret {secret_id}: {exc.message}") from None
    return response.data
