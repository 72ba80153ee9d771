"""``bkcore daemon`` and ``bkcore debug info``, plus the remote side of ``du``, ``prune`` and
``debug workers`` (``--addr`` / ``$BKCORE_HOST``).

``bkcore daemon [--addr unix://PATH|tcp://HOST:PORT ...] [--root DIR] [--config FILE]
[--debug] [--group GROUP] [--tlscert F --tlskey F [--tlscacert F]]
[--allow-insecure-entitlement NAME] [--oci-worker-gc true|false]
[--oci-worker-gc-keepstorage MB]`` serves until SIGTERM (see :mod:`bkcore.api.daemon` and
docs/daemon.md); flags win over the config file.
The remote helpers ask a daemon's Control service and give back the same values the embedded
commands compute, so the output and exit codes are the same.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkcore.api.pb import control as cpb
    from bkcore.cli.du_cmd import Record
    from bkcore.cli.prune_cmd import PruneReport
    from bkcore.worker import WorkerInfo

__all__ = [
    "add_arguments",
    "group_id",
    "info_command",
    "remote_address",
    "remote_du",
    "remote_prune",
    "remote_workers",
    "run",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The daemon listens on every --addr (buildkitd's repeatable flag), where the global
    # --addr of the client commands takes one: this parser's own --addr replaces it.
    listen = parser.add_argument_group("listening", conflict_handler="resolve")
    listen.add_argument(
        "--addr",
        dest="listen",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="listen on unix://PATH or tcp://HOST:PORT (repeatable; tcp needs --tlscert/--tlskey)",
    )
    parser.add_argument(
        "--config", metavar="FILE", default=None, help="daemon TOML config (default: bkcored.toml)"
    )
    parser.add_argument(
        "--group",
        metavar="GROUP",
        default="",
        help="group (name or gid) owning the unix sockets; its members may connect",
    )
    parser.add_argument(
        "--oci-worker-gc",
        metavar="BOOL",
        nargs="?",
        const="true",
        choices=("true", "false"),
        default=None,
        help="collect garbage by the GC policies (default true)",
    )
    parser.add_argument(
        "--oci-worker-gc-keepstorage",
        metavar="MB",
        type=int,
        default=None,
        help="cap of the default GC policies in MB (default: 10%% of the disk)",
    )
    parser.add_argument("--tlscert", metavar="FILE", default="", help="server certificate")
    parser.add_argument("--tlskey", metavar="FILE", default="", help="server key")
    parser.add_argument(
        "--tlscacert", metavar="FILE", default="", help="CA of client certificates (required)"
    )
    parser.add_argument(
        "--allow-insecure-entitlement",
        action="append",
        default=[],
        choices=("network.host", "security.insecure"),
        metavar="NAME",
        help="let builds ask for NAME (network.host, security.insecure); repeatable",
    )


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bkcore.api.daemon import DaemonConfigError, load_config
    from bkcore.api.daemon import run as run_daemon

    cfg = load_config(Path(args.config) if args.config else None, root=args.root)
    listen = list(getattr(args, "listen", None) or [])
    if listen:
        cfg = replace(cfg, addresses=tuple(listen))
    elif args.addr:  # given before the command word: the global option
        cfg = replace(cfg, addresses=(args.addr,))
    if args.group:
        cfg = replace(cfg, socket_gid=group_id(args.group))
    if args.oci_worker_gc is not None:
        cfg = replace(cfg, gc=args.oci_worker_gc == "true")
    if args.oci_worker_gc_keepstorage is not None:
        if args.oci_worker_gc_keepstorage < 0:
            raise DaemonConfigError("--oci-worker-gc-keepstorage must not be negative")
        cfg = replace(cfg, gc_keep_storage=args.oci_worker_gc_keepstorage * 1_000_000)
    if getattr(args, "debug", False):
        cfg = replace(cfg, debug=True)
    if args.tlscert:
        cfg = replace(cfg, tls_cert=args.tlscert)
    if args.tlskey:
        cfg = replace(cfg, tls_key=args.tlskey)
    if args.tlscacert:
        cfg = replace(cfg, tls_ca=args.tlscacert)
    if args.allow_insecure_entitlement:
        cfg = replace(cfg, entitlements=cfg.entitlements | set(args.allow_insecure_entitlement))
    return run_daemon(cfg, args.plugin_manager)


def group_id(group: str) -> int:
    """The gid of ``group`` (a name or a number)."""
    import grp

    from bkcore.api.daemon import DaemonConfigError

    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise DaemonConfigError(f"--group: no group named {group!r}") from None


def remote_address(args: argparse.Namespace) -> str | None:
    """The daemon a client command should ask: ``--addr``, else ``$BKCORE_HOST``, else None."""
    from bkcore.api.client import HOST_ENV

    return getattr(args, "addr", None) or os.environ.get(HOST_ENV) or None


def _ts(value: Any) -> float | None:
    if value is None or (not value.seconds and not value.nanos):
        return None
    return float(value.seconds) + float(value.nanos) / 1e9


def to_record(u: cpb.UsageRecord) -> Record:
    """A ``bkcore du`` record from the wire (reclaimable: not in use and not shared)."""
    from bkcore.cli.du_cmd import Record

    return Record(
        id=u.id,
        type=u.record_type,
        size=u.size,
        in_use=u.in_use,
        reclaimable=not u.in_use and not u.shared,
        mutable=u.mutable,
        last_used=_ts(u.last_used_at) or 0.0,
        created_at=_ts(u.created_at),
        description=u.description,
        parent=(u.parents[0] if u.parents else u.parent) or None,
        usage_count=u.usage_count,
    )


def remote_du(address: str) -> list[Record]:
    from bkcore.api.client import Client

    async def go() -> list[cpb.UsageRecord]:
        async with Client(address) as client:
            return await client.disk_usage()

    records = [to_record(u) for u in asyncio.run(go())]
    records.sort(key=lambda r: (-r.size, r.id))
    return records


def remote_prune(address: str, *, keep_duration: float, keep_bytes: int) -> PruneReport:
    from bkcore.api.client import Client
    from bkcore.cli.prune_cmd import PruneReport

    async def go() -> list[cpb.UsageRecord]:
        async with Client(address) as client:
            return await client.prune(keep_duration=keep_duration, keep_bytes=keep_bytes)

    removed = [to_record(u) for u in asyncio.run(go())]
    return PruneReport(removed, sum(r.size for r in removed))


def remote_workers(address: str) -> list[tuple[str, WorkerInfo]]:
    from bkcore.api.client import Client
    from bkcore.api.server import WORKER_NAME_LABEL
    from bkcore.worker import WorkerInfo

    async def go() -> list[Any]:
        async with Client(address) as client:
            return await client.list_workers()

    out: list[tuple[str, WorkerInfo]] = []
    for record in asyncio.run(go()):
        labels = dict(record.labels)
        name = labels.pop(WORKER_NAME_LABEL, "") or record.id
        platforms = tuple(
            "/".join(x for x in (p.os, p.architecture, p.variant) if x) for p in record.platforms
        )
        out.append((name, WorkerInfo(id=record.id, platforms=platforms, labels=labels)))
    return out


def _version_line(package: str, version: str, revision: str) -> str:
    return "BuildKit: " + " ".join(x for x in (package, version, revision) if x) + "\n"


class InfoCommand:
    """``bkcore debug info``: ``BuildKit: <package> <version> [<revision>]``."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--format", choices=("text", "json"), default="text", help="output format"
        )

    @staticmethod
    def run(args: argparse.Namespace, out: Any = None) -> int:
        import json

        stream = out if out is not None else sys.stdout
        address = remote_address(args)
        if address:
            from bkcore.api.client import Client

            async def go() -> Any:
                async with Client(address) as client:
                    return await client.info()

            v = asyncio.run(go())
            fields: Sequence[str] = (v.package, v.version, v.revision)
        else:
            from bkcore.api.server import ControlServicer

            v = ControlServicer.version()
            fields = (v.package, v.version, v.revision)
        if args.format == "json":
            keys = ("package", "version", "revision")
            json.dump({"buildkitVersion": dict(zip(keys, fields, strict=True))}, stream, indent=2)
            stream.write("\n")
        else:
            stream.write(_version_line(*fields))
        return 0


info_command = InfoCommand()
