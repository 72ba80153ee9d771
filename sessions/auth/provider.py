"""Auth, client side: answer ``Credentials`` for registry hosts (session.md §6).

The daemon asks with the host as dialled (``registry-1.docker.io`` for Docker Hub,
``127.0.0.1:5000``); the answer is ``(Username, Secret)``, empty for anonymous, an identity
token as the Secret with an empty Username. ``FetchToken``, ``GetTokenAuthority`` and
``VerifyTokenAuthority`` answer ``Unimplemented`` (like buildctl without a token
authority), so the daemon fetches bearer tokens itself with the credentials.

The Docker config is read on the first request (not when the session opens) and each
host's answer is remembered for the provider's life (one build session) so a credential
helper runs once per host. Nothing is logged; errors name the host and file only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from bkcore.errors import SessionError
from bkcore.session.auth import (
    CREDENTIALS,
    FETCH_TOKEN,
    GET_TOKEN_AUTHORITY,
    VERIFY_TOKEN_AUTHORITY,
    CredentialsRequest,
    CredentialsResponse,
    FetchTokenRequest,
    FetchTokenResponse,
    GetTokenAuthorityRequest,
    GetTokenAuthorityResponse,
    VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
)
from bkcore.session.transport import CallError, Handler, Metadata, Status
from bkcore.sessions.auth.dockerconfig import AuthEntry, DockerConfig

__all__ = ["AuthProvider"]


class AuthProvider:
    """Client-side attachable serving ``moby.filesync.v1.Auth`` from a Docker config.

    ``config_dir`` defaults to ``$DOCKER_CONFIG`` or ``~/.docker`` (read at first use).
    """

    def __init__(self, config_dir: str | Path | None = None) -> None:
        self._dir = Path(config_dir) if config_dir is not None else None
        self._config: DockerConfig | None = None
        self._answers: dict[str, AuthEntry | None] = {}
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"AuthProvider(hosts_asked={sorted(self._answers)!r})"

    def handlers(self) -> Mapping[str, Handler]:
        return {
            CREDENTIALS: Handler(
                "unary", self._credentials, CredentialsRequest, CredentialsResponse
            ),
            FETCH_TOKEN: Handler(
                "unary", self._unimplemented, FetchTokenRequest, FetchTokenResponse
            ),
            GET_TOKEN_AUTHORITY: Handler(
                "unary", self._unimplemented, GetTokenAuthorityRequest, GetTokenAuthorityResponse
            ),
            VERIFY_TOKEN_AUTHORITY: Handler(
                "unary",
                self._unimplemented,
                VerifyTokenAuthorityRequest,
                VerifyTokenAuthorityResponse,
            ),
        }

    async def lookup(self, host: str) -> AuthEntry | None:
        """The credentials for ``host`` (remembered per provider)."""
        async with self._lock:
            if host in self._answers:
                return self._answers[host]
            if self._config is None:
                self._config = await asyncio.to_thread(DockerConfig.load, self._dir)
            entry = await self._config.lookup(host)
            self._answers[host] = entry
            return entry

    async def _credentials(
        self, request: CredentialsRequest, metadata: Metadata
    ) -> CredentialsResponse:
        if not request.host:
            raise CallError(Status.INVALID_ARGUMENT, "no registry host given")
        try:
            entry = await self.lookup(request.host)
        except SessionError as exc:
            raise CallError(Status.UNKNOWN, str(exc)) from None
        if entry is None:
            return CredentialsResponse()
        username, secret = entry.for_session()
        return CredentialsResponse(username=username, secret=secret)

    async def _unimplemented(self, request: object, metadata: Metadata) -> object:
        raise CallError(Status.UNIMPLEMENTED, "no token authority on this client")
