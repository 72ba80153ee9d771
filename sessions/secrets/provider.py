"""Secrets, client side: serve secret values by id (session.md §6).

The messages and the daemon side (:func:`bkcore.session.secrets.get_secret`) live in
:mod:`bkcore.session.secrets`. Values are never put in exceptions, reprs or logs; errors name
only the secret id.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bkcore.errors import SessionError
from bkcore.session.secrets import GETSECRET, GetSecretRequest, GetSecretResponse
from bkcore.session.transport import CallError, Handler, Metadata, Status

__all__ = [
    "MAX_SECRET_SIZE",
    "SecretSource",
    "SecretsProvider",
    "parse_secret_spec",
]

MAX_SECRET_SIZE = 500 * 1024


@dataclass(frozen=True)
class SecretSource:
    """Where a secret comes from: a file or an environment variable of the client."""

    id: str
    file: str | None = None
    env: str | None = None

    def read(self) -> bytes:
        if self.file is not None:
            with open(self.file, "rb") as f:
                data = f.read(MAX_SECRET_SIZE + 1)
        elif self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise CallError(Status.NOT_FOUND, "not found")
            data = os.fsencode(value)
        else:
            raise CallError(Status.NOT_FOUND, "not found")
        if len(data) > MAX_SECRET_SIZE:
            raise CallError(Status.INVALID_ARGUMENT, f"secret {self.id} is over 500 KiB")
        return data


def parse_secret_spec(spec: str) -> SecretSource:
    """Parse ``id=ID,src=FILE`` or ``id=ID,env=VAR`` (``source``, ``type=file|env`` too).

    Without ``src``/``env`` the secret comes from the environment variable named like the id
    when it is set, else from a file named like the id (buildx behaviour).
    """
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise SessionError(f"invalid secret spec {spec!r}: expected key=value pairs")
        fields[key] = value.strip()
    unknown = set(fields) - {"id", "src", "source", "env", "type"}
    if unknown:
        raise SessionError(f"invalid secret spec {spec!r}: unknown key {sorted(unknown)[0]!r}")
    sid = fields.get("id", "")
    if not sid:
        raise SessionError(f"invalid secret spec {spec!r}: id is required")
    src = fields.get("src", fields.get("source"))
    env = fields.get("env")
    kind = fields.get("type")
    if kind not in (None, "file", "env"):
        raise SessionError(f"invalid secret spec {spec!r}: type must be file or env")
    if src is not None and env is not None:
        raise SessionError(f"invalid secret spec {spec!r}: give src or env, not both")
    if kind == "env" and env is None:
        env, src = src or sid, None
    if src is None and env is None:
        if kind == "file" or sid not in os.environ:
            src = sid
        else:
            env = sid
    return SecretSource(sid, file=os.path.abspath(src) if src is not None else None, env=env)


@dataclass
class SecretsProvider:
    """Client-side attachable serving ``Secrets.GetSecret``."""

    secrets: Mapping[str, bytes | SecretSource] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"SecretsProvider(ids={sorted(self.secrets)!r})"

    @classmethod
    def from_specs(cls, specs: Iterable[str]) -> SecretsProvider:
        """A provider for ``--secret`` values; a repeated id is a :class:`SessionError`."""
        secrets: dict[str, bytes | SecretSource] = {}
        for spec in specs:
            source = parse_secret_spec(spec)
            if source.id in secrets:
                raise SessionError(f"secret {source.id!r} is given twice")
            secrets[source.id] = source
        return cls(secrets)

    def handlers(self) -> Mapping[str, Handler]:
        return {GETSECRET: Handler("unary", self._get, GetSecretRequest, GetSecretResponse)}

    async def _get(self, request: GetSecretRequest, metadata: Metadata) -> GetSecretResponse:
        source = self.secrets.get(request.id)
        if source is None:
            raise CallError(Status.NOT_FOUND, "not found")
        if isinstance(source, bytes):
            return GetSecretResponse(data=source)
        try:
            data = await asyncio.to_thread(source.read)
        except OSError as exc:
            raise CallError(Status.NOT_FOUND, f"secret {request.id}: {exc.strerror}") from None
        return GetSecretResponse(data=data)
