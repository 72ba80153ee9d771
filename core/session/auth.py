"""The Auth protocol (session.md §6) and the daemon side of registry credentials.

The client side (the attachable answering ``Credentials`` from the Docker config and
credential helpers) is ``bkcore.sessions.auth``. Here:

* the ``moby.filesync.v1.Auth`` messages and method names;
* :func:`get_credentials`: ask one session for a host's credentials;
* :func:`session_credentials`: a registry credentials callback over a build's sessions;
* :func:`registry_client`: the registry client an op uses, sharing one set of connections
  (hosts config, httpx clients, SSL contexts) per engine, with auth state (challenges,
  bearer tokens) per session group. Credentials are asked for when a registry challenges and
  never written anywhere; tokens live in memory until they expire or the session ends.

The daemon fetches bearer tokens itself with the credentials: like buildctl, the client
answers ``GetTokenAuthority`` and ``FetchToken`` with ``Unimplemented``.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import betterproto

from bkcore.errors import SessionError
from bkcore.session.transport import Caller, CallError, Status

if TYPE_CHECKING:
    from bkcore.engine import Engine
    from bkcore.registry_client import AuthState, RegistryClient
    from bkcore.session.manager import ConnectedSession, SessionManager
    from bkcore.source import SourceContext

__all__ = [
    "CREDENTIALS",
    "FETCH_TOKEN",
    "GET_TOKEN_AUTHORITY",
    "VERIFY_TOKEN_AUTHORITY",
    "CredentialsRequest",
    "CredentialsResponse",
    "FetchTokenRequest",
    "FetchTokenResponse",
    "GetTokenAuthorityRequest",
    "GetTokenAuthorityResponse",
    "VerifyTokenAuthorityRequest",
    "VerifyTokenAuthorityResponse",
    "close_registry_clients",
    "get_credentials",
    "registry_client",
    "registry_client_for",
    "session_credentials",
]

_SERVICE = "/moby.filesync.v1.Auth/"
CREDENTIALS = _SERVICE + "Credentials"
FETCH_TOKEN = _SERVICE + "FetchToken"
GET_TOKEN_AUTHORITY = _SERVICE + "GetTokenAuthority"
VERIFY_TOKEN_AUTHORITY = _SERVICE + "VerifyTokenAuthority"

#: How long a credentials lookup waits for a session of the group that is not connected.
SESSION_WAIT = 1.0


@dataclass(eq=False, repr=False)
class CredentialsRequest(betterproto.Message):
    host: str = betterproto.string_field(1)


@dataclass(eq=False, repr=False)
class CredentialsResponse(betterproto.Message):
    username: str = betterproto.string_field(1)
    secret: str = betterproto.string_field(2)

    def __repr__(self) -> str:  # never show the secret
        return f"CredentialsResponse(username={self.username!r}, secret=<hidden>)"


@dataclass(eq=False, repr=False)
class FetchTokenRequest(betterproto.Message):
    client_id: str = betterproto.string_field(1)
    host: str = betterproto.string_field(2)
    realm: str = betterproto.string_field(3)
    service: str = betterproto.string_field(4)
    scopes: list[str] = betterproto.string_field(5)  # noqa: RUF009


@dataclass(eq=False, repr=False)
class FetchTokenResponse(betterproto.Message):
    token: str = betterproto.string_field(1)
    expires_in: int = betterproto.int64_field(2)
    issued_at: int = betterproto.int64_field(3)

    def __repr__(self) -> str:
        return f"FetchTokenResponse(token=<hidden>, expires_in={self.expires_in})"


@dataclass(eq=False, repr=False)
class GetTokenAuthorityRequest(betterproto.Message):
    host: str = betterproto.string_field(1)
    salt: bytes = betterproto.bytes_field(2)


@dataclass(eq=False, repr=False)
class GetTokenAuthorityResponse(betterproto.Message):
    public_key: bytes = betterproto.bytes_field(1)


@dataclass(eq=False, repr=False)
class VerifyTokenAuthorityRequest(betterproto.Message):
    host: str = betterproto.string_field(1)
    payload: bytes = betterproto.bytes_field(2)
    salt: bytes = betterproto.bytes_field(3)


@dataclass(eq=False, repr=False)
class VerifyTokenAuthorityResponse(betterproto.Message):
    signed: bytes = betterproto.bytes_field(1)


async def get_credentials(caller: Caller, host: str) -> tuple[str, str] | None:
    """``(username, secret)`` the session has for registry ``host``; None for anonymous.

    A session without the Auth attachable (or answering ``Unimplemented``/``NotFound``)
    means anonymous; any other failure is a :class:`SessionError` naming the host only.
    """
    if not caller.supports(CREDENTIALS):
        return None
    try:
        response = await caller.call_unary(
            CREDENTIALS, CredentialsRequest(host=host), CredentialsResponse
        )
    except CallError as exc:
        if exc.code in (Status.UNIMPLEMENTED, Status.NOT_FOUND):
            return None
        raise SessionError(f"registry credentials for {host}: {exc.message}") from None
    if not response.username and not response.secret:
        return None
    return response.username, response.secret


def session_credentials(
    sessions: SessionManager, group: Sequence[str]
) -> Callable[[str], Awaitable[tuple[str, str] | None]]:
    """A registry credentials callback asking the sessions of ``group`` in order.

    The first session with credentials for the host answers; sessions that are gone are
    skipped (when none is connected, the first is waited for a moment: a client may open
    its session after starting the solve); none with credentials means anonymous.
    """
    ids = tuple(group)

    async def connected() -> list[ConnectedSession]:
        out: list[ConnectedSession] = []
        for sid in ids:
            try:
                out.append(await sessions.get(sid, 0))
            except SessionError:
                continue
        if not out and ids:
            try:
                out.append(await sessions.get(ids[0], SESSION_WAIT))
            except SessionError:
                pass
        return out

    async def credentials(host: str) -> tuple[str, str] | None:
        last: SessionError | None = None
        for conn in await connected():
            try:
                creds = await get_credentials(conn.caller, host)
            except SessionError as exc:
                last = exc
                continue
            if creds is not None:
                return creds
        if last is not None:
            raise last
        return None

    return credentials


# -- one registry client per engine --------------------------------------------------------------
@dataclass(eq=False)
class _EngineClients:
    base: RegistryClient
    states: dict[tuple[str, ...], AuthState] = field(default_factory=dict)


_ENGINES: dict[int, _EngineClients] = {}


def registry_client(engine: Engine, group: Sequence[str]) -> RegistryClient:
    """The registry client for an op of ``engine`` whose jobs have the sessions ``group``.

    All clients of one engine share its connections (the hosts config, read once, and one
    httpx client per TLS setting). Each session group gets its own auth state; the states
    of groups whose sessions all ended are dropped here. The returned client needs no
    closing (``async with`` is fine: it leaves the shared connections open).
    """
    from bkcore.registry_client import AuthState, RegistryClient, load_hosts

    key = id(engine)
    entry = _ENGINES.get(key)
    if entry is None:
        entry = _EngineClients(RegistryClient(hosts=load_hosts()))
        _ENGINES[key] = entry
        weakref.finalize(engine, _ENGINES.pop, key, None)
    live = set(engine.sessions.ids())
    for ended in [g for g in entry.states if not live.intersection(g)]:
        del entry.states[ended]
    ids = tuple(group)
    state = entry.states.get(ids)
    if state is None:
        state = AuthState(session_credentials(engine.sessions, ids) if ids else None)
        if ids:
            entry.states[ids] = state
    return entry.base.with_auth(state)


def registry_client_for(ctx: SourceContext) -> RegistryClient:
    """:func:`registry_client` for a source op: the sessions of the jobs sharing it."""
    group: list[str] = []
    for job in ctx.jobs():
        sid = job.values.get("session")
        if isinstance(sid, str) and sid and sid not in group:
            group.append(sid)
    return registry_client(ctx.engine, group)


async def close_registry_clients(engine: Engine) -> None:
    """Close the shared connections of ``engine`` (when it stops) and forget its tokens."""
    entry = _ENGINES.pop(id(engine), None)
    if entry is not None:
        entry.states.clear()
        await entry.base.aclose()
