"""``bkcore prune``: remove what the cache store holds and no build uses; print what went.

Like ``buildctl prune``: the removed records as a table (``--verbose``: blocks), then
``Total:`` with the bytes freed. ``--keep-duration 24h`` keeps records used within that time;
``--keep-storage MB`` keeps the most recently used records while the store stays within that
size (oldest go first). Kept records are protected for the duration of the prune the same way
a running build protects its own (a lease on snapshots and blobs, a shared lock on cache
mounts and local source copies), so the store's own prune never sees them as unused. Records
in use by running builds (also in other processes) are never touched.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import IO, TYPE_CHECKING

from bkcore.cli.du_cmd import Record, collect, open_store, render_blocks, render_table, to_json
from bkcore.cli.du_cmd import human_size as human_size
from bkcore.errors import BkError

if TYPE_CHECKING:
    from bkcore.cache.store import CacheStore

__all__ = ["PruneReport", "add_arguments", "parse_duration", "plan_keep", "prune", "run"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")


class UsageError(BkError):
    """A flag value that cannot be used."""


def parse_duration(text: str) -> float:
    """Seconds of a Go-style duration (``90s``, ``1h30m``, ``24h``; ``d`` for days too)."""
    s = text.strip()
    if s in ("0", ""):
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise UsageError(f"invalid duration {text!r} (examples: 90s, 1h30m, 7d)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-duration",
        metavar="DURATION",
        default="0",
        help="keep records used within DURATION (e.g. 24h, 30m, 7d)",
    )
    parser.add_argument(
        "--keep-storage",
        metavar="MB",
        type=float,
        default=0.0,
        help="keep the most recently used records up to this many megabytes (10^6 bytes)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one block per removed record")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )


def plan_keep(
    records: Sequence[Record], *, keep_duration: float, keep_bytes: int, now: float
) -> set[str]:
    """Ids of reclaimable records to keep: recently used ones, then the newest within size."""
    candidates = [r for r in records if r.reclaimable]
    keep = {r.id for r in candidates if keep_duration > 0 and r.last_used >= now - keep_duration}
    if keep_bytes > 0:
        total = sum(r.size for r in records)
        # Oldest first go until the store fits; everything after that stays.
        for r in sorted(candidates, key=lambda r: (r.last_used, r.id)):
            if total <= keep_bytes:
                keep.add(r.id)
            elif r.id not in keep:
                total -= r.size
    return keep


@contextmanager
def _protect(store: CacheStore, records: Sequence[Record], keep: set[str]) -> Iterator[None]:
    """Hold ``keep`` like a running build would, while the block runs."""
    from bkcore.cache import procs

    pid, started = procs.me()
    with ExitStack() as stack:
        lease = stack.enter_context(store.leases.lease(f"prune-keep-{pid}-{started}"))
        for r in records:
            if r.id not in keep:
                continue
            if r.type == "regular" and store.snapshots.exists(r.id):
                lease.add("snapshot", r.id)
            elif r.type == "blob":
                lease.add("blob", r.id)
            elif r.type in ("exec.cachemount", "source.local"):
                if r.type == "exec.cachemount":
                    lock = store.cache_mounts.dir / r.id.removeprefix("cachemount-") / "lock"
                else:
                    lock = store.local_copies.lock_path(r.id.removeprefix("local-"))
                try:
                    fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue  # already gone
                stack.callback(os.close, fd)
                fcntl.flock(fd, fcntl.LOCK_SH)
        yield


class PruneReport:
    """What one prune removed and how many bytes it freed."""

    def __init__(self, removed: list[Record], freed: int) -> None:
        self.removed = removed
        self.freed = freed


def prune(
    store: CacheStore,
    *,
    keep_duration: float = 0.0,
    keep_bytes: int = 0,
    now: float | None = None,
    protect: Iterable[str] = (),
) -> PruneReport:
    """Prune ``store`` (blocking), keeping what the policy says and the record ids in
    ``protect`` (records a filter left out); report what went."""
    now = time.time() if now is None else now
    before = collect(store)
    keep = plan_keep(before, keep_duration=keep_duration, keep_bytes=keep_bytes, now=now)
    keep |= set(protect)
    with _protect(store, before, keep):
        freed = store.prune(all_unused=True)
    after = {r.id for r in collect(store)}
    removed = [r for r in before if r.id not in after]
    return PruneReport(removed, freed)


def render(report: PruneReport, *, verbose: bool, now: float | None = None) -> str:
    if verbose:
        body = render_blocks(report.removed, now)
    elif report.removed:
        body = render_table(report.removed, now) + "\n"
    else:
        body = ""
    return body + f"Total:  {human_size(report.freed)}\n"


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    stream = out if out is not None else sys.stdout
    keep_duration = parse_duration(args.keep_duration)
    if args.keep_storage < 0:
        raise UsageError("--keep-storage must not be negative")
    keep_bytes = int(args.keep_storage * 1e6)
    from bkcore.cli.daemon_cmd import remote_address, remote_prune

    address = remote_address(args)
    store = None if address else open_store()
    if address:  # --addr / $BKCORE_HOST: prune the daemon's store
        report = remote_prune(address, keep_duration=keep_duration, keep_bytes=keep_bytes)
    elif store is None:
        report = PruneReport([], 0)
    else:
        try:
            report = prune(store, keep_duration=keep_duration, keep_bytes=keep_bytes)
        finally:
            store.close()
    if args.format == "json":
        json.dump({"removed": to_json(report.removed), "freed": report.freed}, stream, indent=2)
        stream.write("\n")
    else:
        stream.write(render(report, verbose=args.verbose))
    return 0
