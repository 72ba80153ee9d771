"""``bkcore debug workers``: the registered workers with id, platforms and labels.

Prints like ``buildctl debug workers`` (a table, or ``-v`` one block per worker), or JSON with
``--format json``. Workers are looked up in the ``workers`` registry; a target with a
``for_root(state_root, snapshotter=...)`` constructor (the runc worker) is built on the
bkcore state root, so its id is the one builds use.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from bkcore import config
from bkcore.errors import BkError, PluginError
from bkcore.pluginmanager import BkPluginManager, get_plugin_manager
from bkcore.worker import WorkerInfo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show every label of each worker"
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )


def stored_driver(root: Path) -> str | None:
    """The snapshot driver recorded in the store at ``root``, read-only (None if no store)."""
    db = root / "metadata.db"
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT value FROM meta WHERE name='driver'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def collect(manager: BkPluginManager, root: Path) -> list[tuple[str, WorkerInfo]]:
    """(registry key, info) of every registered worker that can be built on ``root``."""
    registry = manager.registry("workers")
    snapshotter = stored_driver(root) or "overlayfs"
    out: list[tuple[str, WorkerInfo]] = []
    for key in registry.keys():
        target: Any = registry.load(key)
        factory = getattr(target, "for_root", None)
        if factory is None:
            raise PluginError(f"worker {key!r} has no for_root(state_root) constructor")
        worker = factory(root, snapshotter=snapshotter)
        out.append((key, worker.info()))
    return out


def to_json(workers: list[tuple[str, WorkerInfo]]) -> dict[str, Any]:
    return {
        "workers": [
            {
                "name": key,
                "id": info.id,
                "platforms": list(info.platforms),
                "labels": dict(sorted(info.labels.items())),
            }
            for key, info in workers
        ]
    }


def to_text(workers: list[tuple[str, WorkerInfo]], verbose: bool) -> str:
    if not verbose:
        rows = [("ID", "PLATFORMS")]
        rows += [(info.id, ",".join(info.platforms)) for _, info in workers]
        width = max(len(r[0]) for r in rows) + 4
        return "".join(f"{a:<{width}}{b}\n" for a, b in rows)
    blocks = []
    for key, info in workers:
        lines = [
            f"Name:\t\t{key}",
            f"ID:\t\t{info.id}",
            f"Platforms:\t{','.join(info.platforms)}",
            "Labels:",
        ]
        lines += [f"\t{k}:\t{v}" for k, v in sorted(info.labels.items())]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def run(args: argparse.Namespace) -> int:
    manager: BkPluginManager = getattr(args, "plugin_manager", None) or get_plugin_manager(
        getattr(args, "plugins", ())
    )
    root = Path(args.root).absolute() if getattr(args, "root", None) else config.state_dir()
    from bkcore.cli.daemon_cmd import remote_address, remote_workers

    address = remote_address(args)
    if address:  # --addr / $BKCORE_HOST: the daemon's workers
        workers = remote_workers(address)
    else:
        try:
            workers = collect(manager, root)
        except OSError as exc:
            raise BkError(f"cannot read worker state under {root}: {exc.strerror}") from exc
    if args.format == "json":
        json.dump(to_json(workers), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(to_text(workers, args.verbose))
    return 0
