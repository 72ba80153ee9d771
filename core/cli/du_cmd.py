"""``bkcore du``: what the cache store holds and what a prune could reclaim.

Like ``buildctl du``: a table with ID (``*`` marks a snapshot being written), RECLAIMABLE,
SIZE and LAST ACCESSED, biggest first, then ``Reclaimable:`` and ``Total:``; ``--verbose``
prints one block per record (parent, times, type, description); ``--format json`` prints the
records as JSON. A record is reclaimable when nothing uses it and no used snapshot sits on
top of it. Reading a store that does not exist yet prints an empty table (nothing is created).
The formatting helpers here are shared with ``bkcore prune``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from bkcore import config

if TYPE_CHECKING:
    from bkcore.cache.store import CacheStore

__all__ = [
    "Record",
    "add_arguments",
    "collect",
    "human_duration",
    "human_size",
    "open_store",
    "render_blocks",
    "render_table",
    "run",
]


@dataclass(frozen=True, slots=True)
class Record:
    """One line of ``du`` (a snapshot, blob, cache mount or local source copy)."""

    id: str
    type: str  # "regular" | "blob" | "exec.cachemount" | "source.local"
    size: int
    in_use: bool
    reclaimable: bool
    mutable: bool
    last_used: float
    created_at: float | None
    description: str
    parent: str | None
    usage_count: int = 0  #: BuildKit's UsageCount (``buildctl du -v``: "Usage count")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="one block per record with every field"
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )


def open_store(root: Path | None = None) -> CacheStore | None:
    """The store at ``root`` (default: the state dir), or None when none was made there."""
    from bkcore.cache.store import CacheStore

    root = root if root is not None else config.state_dir()
    if not (root / "metadata.db").exists():
        return None
    return CacheStore.open(root)


def collect(store: CacheStore) -> list[Record]:
    """Every record of ``store``, biggest first (ties by id)."""
    snaps = {s.id: s for s in store.snapshots.all()}
    deps: dict[str, list[str]] = {}
    for row in store.db.query("SELECT snapshot, dep FROM snapshot_deps"):
        deps.setdefault(row["snapshot"], []).append(row["dep"])
    blob_created = {
        r["digest"]: float(r["created_at"])
        for r in store.db.query("SELECT digest, created_at FROM blobs")
    }
    mount_created = {f"cachemount-{m.num}": m.created_at for m in store.cache_mounts.all()}
    usage = store.du()
    # Snapshots below a used one cannot go either: walk down from every used snapshot.
    pinned: set[str] = set()
    stack = [u.id for u in usage if u.in_use and u.id in snaps]
    while stack:
        sid = stack.pop()
        for dep in deps.get(sid, ()):
            if dep not in pinned:
                pinned.add(dep)
                stack.append(dep)
    out: list[Record] = []
    for u in usage:
        info = snaps.get(u.id) if u.kind == "regular" else None
        if info is not None:
            created: float | None = info.created_at
        elif u.kind == "blob":
            created = blob_created.get(u.id)
        else:
            created = mount_created.get(u.id)
        out.append(
            Record(
                id=u.id,
                type=u.kind,
                size=u.size,
                in_use=u.in_use,
                reclaimable=not u.in_use and u.id not in pinned,
                mutable=info is not None and info.state == "active",
                last_used=u.last_used,
                created_at=created,
                description=u.description,
                parent=u.parent,
                usage_count=u.usage_count,
            )
        )
    out.sort(key=lambda r: (-r.size, r.id))
    return out


def human_size(size: float) -> str:
    """Decimal units like Docker: ``512B``, ``4.10kB``, ``113.09MB``."""
    if size < 1000:
        return f"{int(size)}B"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        size /= 1000
        if size < 1000 or unit == "PB":
            break
    return f"{size:.2f}{unit}"


def human_duration(seconds: float) -> str:
    """A rough age: ``less than a second``, ``5 seconds``, ``3 minutes``, ``2 days``."""
    if seconds < 1:
        return "less than a second"
    for limit, div, name in (
        (60, 1, "second"),
        (3600, 60, "minute"),
        (86400, 3600, "hour"),
        (86400 * 14, 86400, "day"),
        (86400 * 60, 86400 * 7, "week"),
        (86400 * 730, 86400 * 30, "month"),
    ):
        if seconds < limit:
            n = int(seconds // div)
            return f"{n} {name}" + ("" if n == 1 else "s")
    n = int(seconds // (86400 * 365))
    return f"{n} years"


def _ago(ts: float | None, now: float) -> str:
    return "" if ts is None or ts <= 0 else human_duration(max(0.0, now - ts)) + " ago"


def _align(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]
        lines.append("   ".join(cells).rstrip() + "\n")
    return "".join(lines)


def render_table(records: Iterable[Record], now: float | None = None) -> str:
    """The ``ID RECLAIMABLE SIZE LAST ACCESSED`` table."""
    now = time.time() if now is None else now
    rows: list[list[str]] = [["ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED"]]
    for r in records:
        rows.append(
            [
                r.id + ("*" if r.mutable else ""),
                "true" if r.reclaimable else "false",
                human_size(r.size),
                _ago(r.last_used, now),
            ]
        )
    return _align(rows)


def render_blocks(records: Iterable[Record], now: float | None = None) -> str:
    """One ``Field:  value`` block per record, blank line after each."""
    now = time.time() if now is None else now
    out: list[str] = []
    for r in records:
        fields: list[tuple[str, str]] = [("ID", r.id)]
        if r.parent:
            fields.append(("Parent", r.parent))
        if r.created_at:
            created = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(r.created_at))
            fields.append(("Created at", created))
        fields += [
            ("Mutable", str(r.mutable).lower()),
            ("Reclaimable", str(r.reclaimable).lower()),
            ("In use", str(r.in_use).lower()),
            ("Size", human_size(r.size)),
        ]
        if r.description:
            fields.append(("Description", r.description))
        fields.append(("Usage count", str(r.usage_count)))
        if r.last_used:
            fields.append(("Last used", _ago(r.last_used, now)))
        fields.append(("Type", r.type))
        width = max(len(k) for k, _ in fields) + 2
        out.extend(f"{(k + ':').ljust(width)}{v}\n" for k, v in fields)
        out.append("\n")
    return "".join(out)


def render_totals(pairs: Sequence[tuple[str, int]]) -> str:
    width = max(len(k) for k, _ in pairs) + 2
    return "".join(f"{(k + ':').ljust(width)}{human_size(v)}\n" for k, v in pairs)


def render(records: Sequence[Record], *, verbose: bool, now: float | None = None) -> str:
    """The whole ``du`` text: records (table or blocks) then the totals."""
    body = render_blocks(records, now) if verbose else render_table(records, now)
    if not verbose and records:
        body += "\n"
    totals = [
        ("Reclaimable", sum(r.size for r in records if r.reclaimable)),
        ("Total", sum(r.size for r in records)),
    ]
    return body + render_totals(totals)


def to_json(records: Sequence[Record]) -> list[dict[str, object]]:
    return [asdict(r) for r in records]


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    from bkcore.cli.daemon_cmd import remote_address, remote_du

    stream = out if out is not None else sys.stdout
    address = remote_address(args)
    if address:  # --addr / $BKCORE_HOST: the daemon's store
        records = remote_du(address)
    else:
        store = open_store()
        try:
            records = collect(store) if store is not None else []
        finally:
            if store is not None:
                store.close()
    if args.format == "json":
        json.dump(to_json(records), stream, indent=2)
        stream.write("\n")
    else:
        stream.write(render(records, verbose=args.verbose))
    return 0
