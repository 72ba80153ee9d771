"""The registry hosts configuration: ``registries.toml`` in the config dir.

::

    [registry."reg.lan:5000"]
    http = true                  # plain HTTP (default: only for loopback hosts)
    insecure = true              # HTTPS without verifying the certificate
    ca = ["/etc/certs/lan.pem"]  # extra CA certificates (PEM) to trust
    mirrors = ["mirror.lan:5000", "127.0.0.1:5001"]   # tried in order for pulls

The file is ``$BKCORE_REGISTRY_CONFIG`` when set, else ``config_dir()/registries.toml``; a
missing file means defaults. BuildKit keeps the same table in ``buildkitd.toml``. Relative
``ca`` paths are relative to the file. Bad TOML or a bad value is one :class:`SourceError`
naming the file (and the line for syntax errors).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bkcore.errors import SourceError

__all__ = [
    "CONFIG_ENV",
    "HostOptions",
    "config_path",
    "load_hosts",
    "parse_hosts",
    "set_process_hosts",
]

#: Environment variable naming the hosts file (overrides the config dir's).
CONFIG_ENV = "BKCORE_REGISTRY_CONFIG"

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$")


@dataclass(frozen=True, slots=True)
class HostOptions:
    """How to reach one registry host (``[registry."host:port"]`` in the hosts file).

    ``http=None`` means: plain HTTP for loopback hosts, HTTPS otherwise. ``insecure`` skips
    TLS verification; ``ca_files`` are extra PEM CA bundles; ``mirrors`` are hosts tried, in
    order, before this one for pulls.
    """

    http: bool | None = None
    insecure: bool = False
    ca_files: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()


#: Hosts set for the whole process (a daemon's ``[registry."host"]`` tables); they take the
#: place of the hosts file. None: read the file.
_process_hosts: dict[str, HostOptions] | None = None


def set_process_hosts(hosts: Mapping[str, HostOptions] | None) -> None:
    """Use ``hosts`` instead of the hosts file in this process (None: the file again)."""
    global _process_hosts
    _process_hosts = dict(hosts) if hosts is not None else None


def config_path() -> Path:
    """``$BKCORE_REGISTRY_CONFIG``, else ``registries.toml`` in the config dir."""
    value = os.environ.get(CONFIG_ENV)
    if value:
        return Path(value)
    from bkcore import config

    return config.registry_config_file()


def _strings(path: Path, host: str, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SourceError(f'{path}: [registry."{host}"] {key} must be a list of strings')
    return tuple(value)


def _bool(path: Path, host: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise SourceError(f'{path}: [registry."{host}"] {key} must be true or false')
    return value


def _check_host(path: Path, where: str, host: str) -> str:
    if not _HOST.match(host):
        raise SourceError(f"{path}: {where}: {host!r} is not a registry host[:port]")
    return host


def parse_hosts(doc: Mapping[str, Any], path: Path) -> dict[str, HostOptions]:
    """The ``registry`` table of a parsed hosts file as ``{host: HostOptions}``."""
    unknown = sorted(set(doc) - {"registry"})
    if unknown:
        raise SourceError(f"{path}: unknown table or key {unknown[0]!r} (expected [registry])")
    table = doc.get("registry", {})
    if not isinstance(table, dict):
        raise SourceError(f"{path}: registry must be a table of hosts")
    out: dict[str, HostOptions] = {}
    for host, entry in table.items():
        _check_host(path, "[registry]", host)
        if not isinstance(entry, dict):
            raise SourceError(f'{path}: [registry."{host}"] must be a table')
        bad = sorted(set(entry) - {"http", "insecure", "ca", "mirrors"})
        if bad:
            raise SourceError(f'{path}: [registry."{host}"] has unknown key {bad[0]!r}')
        http = _bool(path, host, "http", entry["http"]) if "http" in entry else None
        insecure = _bool(path, host, "insecure", entry.get("insecure", False))
        cas = _strings(path, host, "ca", entry.get("ca", []))
        ca_files = tuple(str((path.parent / ca).absolute()) for ca in cas)
        for ca in ca_files:
            if not os.path.isfile(ca):
                raise SourceError(f'{path}: [registry."{host}"] ca file {ca} does not exist')
        mirrors = _strings(path, host, "mirrors", entry.get("mirrors", []))
        for mirror in mirrors:
            _check_host(path, f'[registry."{host}"] mirrors', mirror)
        out[host] = HostOptions(http, insecure, ca_files, mirrors)
    return out


def load_hosts(path: Path | None = None) -> dict[str, HostOptions]:
    """Read the hosts file (:func:`config_path` by default); missing means no entries.

    Without ``path``, hosts set by :func:`set_process_hosts` come first.
    """
    if path is None and _process_hosts is not None:
        return dict(_process_hosts)
    import tomllib

    target = path if path is not None else config_path()
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SourceError(f"{target}: cannot read registry config: {exc.strerror}") from exc
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SourceError(f"{target}: registry config is not UTF-8") from exc
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends "(at line L, column C)"; say it as file:line.
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)$", msg)
        if m is not None:
            raise SourceError(f"{target}:{m.group(1)}: {msg[: m.start()].strip()}") from None
        m = re.search(r"\(at end of document\)$", msg)
        if m is not None:
            last = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            what = msg[: m.start()].strip()
            raise SourceError(f"{target}:{last}: {what} at the end of the file") from None
        raise SourceError(f"{target}: {msg}") from None
    return parse_hosts(doc, target)
