"""Daemon addresses (``unix://PATH``, ``tcp://HOST:PORT``): parsed by the daemon and its
clients alike, so this module stays cheap to import (a client needs nothing else of the
daemon's code)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bkcore.errors import BkError

__all__ = ["DaemonConfigError", "Listener", "parse_address"]


class DaemonConfigError(BkError):
    """The daemon's configuration (file, flags or an address) cannot be used."""


@dataclass(frozen=True, slots=True)
class Listener:
    """One parsed address."""

    scheme: str  # "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(address: str) -> Listener:
    """``unix:///path`` or ``tcp://host:port`` (DaemonConfigError for anything else)."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise DaemonConfigError(
            f"invalid address {address!r} (want unix://PATH or tcp://HOST:PORT)"
        )
    if scheme == "unix":
        if not rest:
            raise DaemonConfigError(f"invalid address {address!r}: no socket path")
        return Listener("unix", path=os.path.abspath(rest))
    if scheme == "tcp":
        host, colon, port = rest.rpartition(":")
        if not colon or not port.isdigit() or int(port) > 65535:
            raise DaemonConfigError(f"invalid address {address!r}: want tcp://HOST:PORT")
        return Listener("tcp", host=host.strip("[]") or "0.0.0.0", port=int(port))
    raise DaemonConfigError(f"unsupported address scheme {scheme!r} in {address!r}")
