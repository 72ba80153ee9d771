"""Registry credentials from the Docker client configuration, looked up like docker does.

The file is ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``. For a host:

1. ``credHelpers[host]`` names a helper, else ``credsStore`` names the default one: run
   ``docker-credential-<name> get`` with the host on stdin; it prints
   ``{"ServerURL", "Username", "Secret"}``; Username ``<token>`` means an identity token.
   "credentials not found" from the helper means anonymous.
2. Otherwise ``auths[host]``: ``auth`` (base64 ``user:password``), or ``username`` and
   ``password``; ``identitytoken`` wins over both. Keys may be URLs
   (``https://reg.example/v1/``): their host part matches too.

Docker Hub is looked up under ``https://index.docker.io/v1/`` (what ``docker login``
writes), and under its other names (``docker.io``, ``index.docker.io``,
``registry-1.docker.io``). Secrets are never put in exceptions or reprs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bkcore.errors import SessionError

__all__ = [
    "DOCKER_HUB_KEY",
    "AuthEntry",
    "CredentialHelperError",
    "DockerConfig",
    "config_dir",
    "host_aliases",
]

#: What ``docker login`` without a server writes (and buildctl looks up for Docker Hub).
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = (DOCKER_HUB_KEY, "index.docker.io", "docker.io", "registry-1.docker.io")
_NOT_FOUND = "credentials not found in native keychain"
HELPER_TIMEOUT = 60.0


class CredentialHelperError(SessionError):
    """A credential helper failed (not installed, exited non-zero, printed garbage)."""


@dataclass(frozen=True, slots=True)
class AuthEntry:
    """Credentials for one host; ``identity_token`` goes to the daemon as the secret."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    def for_session(self) -> tuple[str, str]:
        """``(Username, Secret)`` as the Auth service answers (session.md §6)."""
        if self.identity_token:
            return "", self.identity_token
        return self.username, self.password


def config_dir() -> Path:
    """``$DOCKER_CONFIG``, else ``~/.docker``."""
    value = os.environ.get("DOCKER_CONFIG")
    if value:
        return Path(value)
    return Path.home() / ".docker"


def _hostname(key: str) -> str:
    """``https://reg.example:5000/v1/`` -> ``reg.example:5000`` (docker's ConvertToHostname)."""
    rest = key.split("://", 1)[1] if "://" in key else key
    return rest.split("/", 1)[0]


def host_aliases(host: str) -> tuple[str, ...]:
    """The names ``host`` may be stored under, most specific first."""
    if host in _HUB_NAMES:
        return _HUB_NAMES
    return (host,)


class DockerConfig:
    """One read of a Docker ``config.json`` (a missing file is an empty config)."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self._data = data

    def __repr__(self) -> str:
        return f"DockerConfig({str(self.path)!r})"

    @classmethod
    def load(cls, directory: Path | None = None) -> DockerConfig:
        path = (directory if directory is not None else config_dir()) / "config.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls(path, {})
        except OSError as exc:
            raise SessionError(f"{path}: cannot read the docker config: {exc.strerror}") from None
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            line = getattr(exc, "lineno", 0)
            where = f"{path}:{line}" if line else str(path)
            raise SessionError(f"{where}: docker config is not valid JSON") from None
        if not isinstance(data, dict):
            raise SessionError(f"{path}: docker config is not a JSON object")
        return cls(path, data)

    def _table(self, key: str) -> dict[str, Any]:
        value = self._data.get(key)
        return value if isinstance(value, dict) else {}

    def helper_for(self, host: str) -> str | None:
        """The credential helper name for ``host`` (``credHelpers``, then ``credsStore``)."""
        helpers = self._table("credHelpers")
        for name in host_aliases(host):
            helper = helpers.get(name)
            if isinstance(helper, str) and helper:
                return helper
        store = self._data.get("credsStore")
        return store if isinstance(store, str) and store else None

    def stored(self, host: str) -> AuthEntry | None:
        """The ``auths`` entry for ``host`` (exact key first, then keys whose host matches)."""
        auths = self._table("auths")
        aliases = host_aliases(host)
        entry: Any = None
        for name in aliases:
            if name in auths:
                entry = auths[name]
                break
        else:
            for key, value in auths.items():
                if _hostname(key) in aliases:
                    entry = value
                    break
        if not isinstance(entry, dict):
            return None
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        encoded = entry.get("auth")
        if isinstance(encoded, str) and encoded:
            try:
                decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise SessionError(f"{self.path}: auths entry for {host}: invalid auth") from None
            user, sep, secret = decoded.partition(":")
            if not sep:
                raise SessionError(f"{self.path}: auths entry for {host}: invalid auth") from None
            username, password = user, secret.strip("\x00")
        token = str(entry.get("identitytoken") or "")
        if not (username or password or token):
            return None
        return AuthEntry(username, password, token)

    async def lookup(self, host: str) -> AuthEntry | None:
        """The credentials for ``host``: its helper if one is configured, else ``auths``."""
        helper = self.helper_for(host)
        if helper is None:
            return self.stored(host)
        # docker keys Docker Hub as the v1 URL in helpers too.
        server = DOCKER_HUB_KEY if host in _HUB_NAMES else host
        return await run_helper(helper, server)


async def run_helper(helper: str, server: str) -> AuthEntry | None:
    """``docker-credential-<helper> get`` for ``server``; None when it has nothing."""
    program = f"docker-credential-{helper}"
    path = shutil.which(program)
    if path is None:
        raise CredentialHelperError(f"credential helper {program} not found on PATH")
    proc = await asyncio.create_subprocess_exec(
        path,
        "get",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(server.encode()), HELPER_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise CredentialHelperError(
            f"{program} get: no answer within {HELPER_TIMEOUT:.0f}s"
        ) from None
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        message = (out or err).decode(errors="replace").strip().splitlines()
        first = message[0] if message else f"exit code {proc.returncode}"
        if _NOT_FOUND in first.lower():  # docker-credential-helpers' ErrCredentialsNotFound
            return None
        raise CredentialHelperError(f"{program} get for {server} failed: {first[:200]}")
    try:
        doc = json.loads(out)
        username, secret = doc.get("Username", ""), doc.get("Secret", "")
    except (ValueError, AttributeError):
        raise CredentialHelperError(f"{program} get for {server}: output is not JSON") from None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise CredentialHelperError(f"{program} get for {server}: output has no Username/Secret")
    if not username and not secret:
        return None
    if username == "<token>":
        return AuthEntry(identity_token=secret)
    return AuthEntry(username, secret)
