"""The ``bkcore daemon`` config: :class:`DaemonConfig` read from a TOML file.

BuildKit's ``buildkitd.toml`` names (``[grpc]``, ``[worker.oci]`` with ``gc``,
``gckeepstorage``, ``max-parallelism``, ``[[worker.oci.gcpolicy]]``, ``[registry."host"]``,
``[history]``) plus bkcore's ``registries`` (hosts file) and ``[worker] name``; docs/daemon.md
describes every key. An unknown key or a bad value is one error line ``FILE:LINE: ...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bkcore import config
from bkcore.api.address import DaemonConfigError, parse_address
from bkcore.cache.gc import check_filters
from bkcore.errors import BkError

if TYPE_CHECKING:
    from bkcore.cache.gc import GCPolicy

__all__ = ["DaemonConfig", "gc_policies", "load_config"]


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``bkcore daemon`` runs with (file values overridden by flags)."""

    root: Path
    addresses: tuple[str, ...] = ()
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    worker: str = "runc"
    max_parallelism: int | None = None
    gc_policy: tuple[GCPolicy, ...] = ()
    registries: str = ""
    #: ``[registry."host"]`` tables of the config file (buildkitd.toml's spelling, same keys as
    #: the hosts file); None when the file has none.
    registry_hosts: Mapping[str, Any] | None = None
    entitlements: frozenset[str] = frozenset()
    #: ``gc = false`` turns garbage collection off; ``gckeepstorage`` (bytes, 0: 10% of the
    #: disk) caps BuildKit's default policies, used when no ``gcpolicy`` is configured.
    gc: bool = True
    gc_keep_storage: int = 0
    #: bkcore's ``[worker] gc-interval``: a pass at least this often, builds or not.
    gc_interval: float | None = None
    debug: bool = False
    #: ``[history]``: completed builds kept (buildkitd's defaults: 50, 48 h).
    history_max_entries: int = 50
    history_max_age: float = 48 * 3600.0
    #: Owner of the unix sockets (``[grpc] uid``/``gid``, ``--group``); None: unchanged.
    socket_uid: int | None = None
    socket_gid: int | None = None


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEYPART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEYLINE = re.compile(rf"^\s*({_KEYPART}(?:\s*\.\s*{_KEYPART})*)\s*=")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def _split_key(text: str) -> list[str]:
    parts = re.findall(_KEYPART, text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Line numbers (1-based) of the tables and keys of a TOML text, by path (an array of
    tables element is ``(..., name, index)``): first occurrence wins."""
    lines: dict[tuple[str | int, ...], int] = {}
    arrays: dict[tuple[str | int, ...], int] = {}
    current: tuple[str | int, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            path: tuple[str | int, ...] = tuple(_split_key(header.group(2)))
            if header.group(1) == "[[":
                index = arrays.get(path, 0)
                arrays[path] = index + 1
                lines.setdefault(path, number)
                path = (*path, index)
            current = path
            lines.setdefault(path, number)
            continue
        key = _KEYLINE.match(line)
        if key:
            full = (*current, *_split_key(key.group(1)))
            for i in range(len(current) + 1, len(full) + 1):
                lines.setdefault(full[:i], number)
    return lines


def _table_name(path: Sequence[str | int]) -> str:
    names = [str(p) for p in path if not isinstance(p, int)]
    index = [p for p in path if isinstance(p, int)]
    text = ".".join(names)
    if index:
        return f"[[{text}]] #{index[-1] + 1}"
    return f"[{text}]" if text else "the top level"


class _Reader:
    """Checks values of one config file; every error is one line ``FILE:LINE: message``."""

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self.lines = _key_lines(text)

    def error(self, path: Sequence[str | int], message: str) -> DaemonConfigError:
        key = tuple(path)
        while key and key not in self.lines:
            key = key[:-1]
        line = self.lines.get(key) if key else None
        where = f"{self.file}:{line}" if line else str(self.file)
        return DaemonConfigError(f"{where}: {message}")

    def keys(
        self, table: dict[str, Any], path: Sequence[str | int], allowed: Sequence[str]
    ) -> None:
        for key in table:
            if key not in allowed:
                known = ", ".join(allowed)
                raise self.error(
                    (*path, key),
                    f"unknown key {key!r} in {_table_name(path)} (known: {known})",
                )

    def table(self, parent: dict[str, Any], path: Sequence[str | int]) -> dict[str, Any]:
        value = parent.get(str(path[-1]), {})
        if not isinstance(value, dict):
            raise self.error(path, f"{_table_name(path)} must be a table")
        return value

    def typed(
        self,
        table: dict[str, Any],
        path: Sequence[str | int],
        key: str,
        kind: type | tuple[type, ...],
    ) -> Any:
        value = table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(
                (*path, key),
                f"{key!r} has the wrong type ({type(value).__name__}) in {_table_name(path)}",
            )
        return value

    def duration(self, table: dict[str, Any], path: Sequence[str | int], key: str) -> float:
        value = table[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0:
                raise self.error((*path, key), f"{key!r} must not be negative")
            return float(value)
        if isinstance(value, str):
            from bkcore.cli.prune_cmd import parse_duration

            try:
                return parse_duration(value)
            except BkError as exc:
                raise self.error((*path, key), f"{key}: {exc}") from exc
        raise self.error((*path, key), f'{key!r}: want a duration like "48h" or seconds')

    def size(self, table: dict[str, Any], path: Sequence[str | int], key: str, root: Path) -> int:
        """Bytes: an integer, a string with a unit (``"512MB"``, ``"10GiB"``) or a share of
        the disk holding the root (``"10%"``)."""
        value = table[key]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.endswith("%") and text[:-1].strip().isdigit():
                from bkcore.cache.gc import disk_size

                return disk_size(root) * int(text[:-1]) // 100
            m = _SIZE.match(text)
            if m:
                return int(float(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])
        raise self.error(
            (*path, key), f'{key!r}: want bytes, a size like "512MB" or a share like "10%"'
        )


_TOP_KEYS = (
    "root",
    "debug",
    "registries",
    "registry",
    "insecure-entitlements",
    "grpc",
    "worker",
    "history",
)
_GRPC_KEYS = ("address", "uid", "gid", "tls")
_WORKER_KEYS = ("name", "max-parallelism", "gc", "gckeepstorage", "gc-interval", "gcpolicy", "oci")
_OCI_KEYS = ("enabled", "max-parallelism", "gc", "gckeepstorage", "gcpolicy")
_POLICY_KEYS = ("all", "keepDuration", "keepBytes", "filters")


def load_config(path: Path | None, *, root: str | None = None) -> DaemonConfig:
    """The config from ``path`` (default file only if it exists) on top of the defaults.

    BuildKit's ``buildkitd.toml`` spelling (``[worker.oci]``, ``[[worker.oci.gcpolicy]]``) and
    bkcore's shorter ``[worker]`` are both read (a key set in both is an error). An unknown
    key, a value of the wrong type or a bad value is one error line ``FILE:LINE: ...``.
    """
    import tomllib

    from bkcore.cache.gc import GCPolicy

    explicit = path is not None
    file = path if path is not None else config.daemon_config_file()
    data: dict[str, Any] = {}
    text = ""
    if explicit or file.exists():
        try:
            text = file.read_text()
            data = tomllib.loads(text)
        except OSError as exc:
            raise DaemonConfigError(f"cannot read daemon config {file}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            at = re.search(r" \(at line (\d+), column \d+\)$", str(exc))
            if at is None:
                raise DaemonConfigError(f"{file}: invalid TOML: {exc}") from exc
            detail = str(exc)[: at.start()]
            raise DaemonConfigError(f"{file}:{at.group(1)}: invalid TOML: {detail}") from exc
    r = _Reader(file, text)
    r.keys(data, (), _TOP_KEYS)
    out = DaemonConfig(root=Path(root).absolute() if root else config.state_dir())
    if "root" in data and not root:
        out = replace(out, root=Path(r.typed(data, (), "root", str)).absolute())
    if "debug" in data:
        out = replace(out, debug=r.typed(data, (), "debug", bool))
    if "registries" in data:
        out = replace(out, registries=r.typed(data, (), "registries", str))
    if "registry" in data:
        from bkcore.errors import SourceError
        from bkcore.registry_client.hosts import parse_hosts

        table = r.table(data, ("registry",))
        if "registries" in data:
            msg = "set either registries (a hosts file) or [registry] tables, not both"
            raise r.error(("registry", next(iter(table), "")), msg)
        hosts: dict[str, Any] = {}
        for host, entry in table.items():
            try:
                hosts.update(parse_hosts({"registry": {host: entry}}, file))
            except SourceError as exc:
                message = str(exc).removeprefix(f"{file}: ")
                raise r.error(("registry", host), message) from None
        out = replace(out, registry_hosts=hosts)
    if "insecure-entitlements" in data:
        ents = r.typed(data, (), "insecure-entitlements", list)
        for e in ents:
            if e not in ("network.host", "security.insecure"):
                raise r.error(("insecure-entitlements",), f"unknown entitlement {e!r}")
        out = replace(out, entitlements=frozenset(ents))
    grpc = r.table(data, ("grpc",))
    r.keys(grpc, ("grpc",), _GRPC_KEYS)
    if "address" in grpc:
        addrs = r.typed(grpc, ("grpc",), "address", list)
        for a in addrs:
            try:
                parse_address(str(a))
            except DaemonConfigError as exc:
                raise r.error(("grpc", "address"), str(exc)) from None
        out = replace(out, addresses=tuple(str(a) for a in addrs))
    for key in ("uid", "gid"):
        if key in grpc:
            value = r.typed(grpc, ("grpc",), key, int)
            out = replace(out, **{f"socket_{key}": value})
    tls = r.table(grpc, ("grpc", "tls"))
    r.keys(tls, ("grpc", "tls"), ("cert", "key", "ca"))
    out = replace(
        out,
        tls_cert=str(tls.get("cert", "")),
        tls_key=str(tls.get("key", "")),
        tls_ca=str(tls.get("ca", "")),
    )
    history = r.table(data, ("history",))
    r.keys(history, ("history",), ("maxAge", "maxEntries"))
    if "maxAge" in history:
        out = replace(out, history_max_age=r.duration(history, ("history",), "maxAge"))
    if "maxEntries" in history:
        n = r.typed(history, ("history",), "maxEntries", int)
        if n < 0:
            raise r.error(("history", "maxEntries"), "'maxEntries' must not be negative")
        out = replace(out, history_max_entries=n)
    worker = r.table(data, ("worker",))
    r.keys(worker, ("worker",), _WORKER_KEYS)
    oci = r.table(worker, ("worker", "oci"))
    r.keys(oci, ("worker", "oci"), _OCI_KEYS)
    if "name" in worker:
        out = replace(out, worker=r.typed(worker, ("worker",), "name", str))
    if "gc-interval" in worker:
        every = r.duration(worker, ("worker",), "gc-interval")
        out = replace(out, gc_interval=every or None)
    if "enabled" in oci and not r.typed(oci, ("worker", "oci"), "enabled", bool):
        raise r.error(("worker", "oci", "enabled"), "the oci (runc) worker is bkcore's only worker")
    sections: list[tuple[tuple[str | int, ...], dict[str, Any]]] = [(("worker",), worker)]
    sections.append((("worker", "oci"), oci))
    for key in ("max-parallelism", "gc", "gckeepstorage", "gcpolicy"):
        both = [p for p, t in sections if key in t]
        if len(both) > 1:
            raise r.error(
                (*both[1], key), f"{key!r} is set in both [worker] and [worker.oci]; keep one"
            )
    for wpath, table in sections:
        if "max-parallelism" in table:
            n = r.typed(table, wpath, "max-parallelism", int)
            if n < 1:
                raise r.error((*wpath, "max-parallelism"), "'max-parallelism' must be at least 1")
            out = replace(out, max_parallelism=n)
        if "gc" in table:
            out = replace(out, gc=r.typed(table, wpath, "gc", bool))
        if "gckeepstorage" in table:
            out = replace(out, gc_keep_storage=r.size(table, wpath, "gckeepstorage", out.root))
        policies = []
        for i, p in enumerate(
            r.typed(table, wpath, "gcpolicy", list) if "gcpolicy" in table else []
        ):
            ppath = (*wpath, "gcpolicy", i)
            if not isinstance(p, dict):
                raise r.error(ppath, f"{_table_name(ppath)} must be a table")
            r.keys(p, ppath, _POLICY_KEYS)
            policies.append(
                GCPolicy(
                    all=r.typed(p, ppath, "all", bool) if "all" in p else False,
                    keep_duration=r.duration(p, ppath, "keepDuration")
                    if "keepDuration" in p
                    else 0.0,
                    keep_bytes=r.size(p, ppath, "keepBytes", out.root) if "keepBytes" in p else 0,
                    filters=tuple(str(f) for f in r.typed(p, ppath, "filters", list))
                    if "filters" in p
                    else (),
                )
            )
            try:
                check_filters(policies[-1].filters)
            except BkError as exc:
                raise r.error((*ppath, "filters"), str(exc)) from None
        if policies:
            out = replace(out, gc_policy=tuple(policies))
    return out


def gc_policies(cfg: DaemonConfig) -> tuple[GCPolicy, ...]:
    """The policies the daemon collects by: none with ``gc = false``; the configured ones;
    else BuildKit's defaults capped at ``gckeepstorage`` (or 10% of the disk)."""
    from bkcore.cache.gc import default_policies

    if not cfg.gc:
        return ()
    return cfg.gc_policy or default_policies(cfg.root, cfg.gc_keep_storage)
