"""Registry authentication: ``WWW-Authenticate`` challenges, basic and bearer-token auth.

Credentials come from a callback ``(host) -> (user, secret) | None`` (sync or async) asked
with the host as dialled (``registry-1.docker.io`` for Docker Hub), so a session's auth
attachable can serve them; an empty user with a secret is an identity (refresh) token. A
:class:`~bkcore.registry_client.transport.AuthState` (one per session) keeps basic credentials
and bearer tokens in memory only, tokens until they expire.
"""

from __future__ import annotations

import base64
import inspect
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Credentials = tuple[str, str]
#: ``(host) -> (user, secret) | None``; may also return an awaitable of that.
CredentialsCallback = Callable[[str], "Credentials | Awaitable[Credentials | None] | None"]

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge (scheme lowercased)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value such as ``Bearer realm="...",service="..."``."""
    out: list[Challenge] = []
    pos = 0
    text = header.strip()
    while pos < len(text):
        m = re.match(r"\s*([A-Za-z][A-Za-z0-9_-]*)", text[pos:])
        if m is None:
            break
        scheme = m.group(1).lower()
        pos += m.end()
        params: dict[str, str] = {}
        while pos < len(text):
            pm = _PARAM.match(text, pos)
            if pm is None or pm.end() == pos:
                break
            quoted, bare = pm.group(2), pm.group(3)
            value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare or ""
            params[pm.group(1).lower()] = value
            pos = pm.end()
        out.append(Challenge(scheme, params))
        # A following scheme starts after a comma that _PARAM did not consume.
        while pos < len(text) and text[pos] in ", ":
            pos += 1
    return out


def basic_header(creds: Credentials) -> str:
    raw = f"{creds[0]}:{creds[1]}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


async def call_credentials(callback: CredentialsCallback | None, host: str) -> Credentials | None:
    """Ask ``callback`` for ``host``'s credentials; sync and async callbacks both work."""
    if callback is None:
        return None
    result = callback(host)
    if inspect.isawaitable(result):
        result = await result
    return result


@dataclass(slots=True)
class BearerToken:
    token: str
    expires_at: float

    def valid(self) -> bool:
        return time.monotonic() < self.expires_at


def scope_for(repository: str, actions: str) -> str:
    """``repository:<name>:<actions>`` as the token spec writes scopes."""
    return f"repository:{repository}:{actions}"
