"""Garbage collection of a state root by policies, as BuildKit's daemon does it.

A :class:`GCPolicy` is one ``[[worker.oci.gcpolicy]]`` of the daemon config (BuildKit's
``PruneInfo``): the records matching ``filters`` (containerd filters over ``id``, ``type``,
``description``, ``inuse``, ``mutable``, ``parent``, ``reclaimable``; an empty list matches
all) that were not used within ``keep_duration`` seconds may go, oldest first, until the store
is within ``keep_bytes`` (0: no size bound; a store already within it loses nothing).
:func:`apply_policies` applies a list in order on the store of a root, opened for the pass
(as a second process would), so whatever a running build holds -- its snapshots, blobs, cache
mounts and local copies, in use under its leases and locks -- is never touched.

:func:`default_policies` is BuildKit's default list (``gc = true`` with no policies): easily
reproduced data (local sources, cache mounts, git checkouts) past 512 MB and unused for 48 h,
anything unused for 60 days above the cap, then everything above the cap; the cap is
``gckeepstorage`` or 10% of the disk holding the root (rounded up to a whole GB).

:class:`GarbageCollector` runs the passes of a daemon: one at start-up, then after builds end
(:meth:`~GarbageCollector.request`), at most one pass per ``throttle`` seconds, plus one every
``interval`` seconds when set. A failing pass is reported and the next one still runs.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bkcore.cli.du_cmd import Record

__all__ = [
    "DEFAULT_CAP",
    "GCPolicy",
    "GarbageCollector",
    "apply_policies",
    "check_filters",
    "default_cap",
    "default_policies",
    "disk_size",
    "match_filters",
    "record_fields",
]

#: The cap when the disk's size cannot be read (BuildKit's ``defaultCap``).
DEFAULT_CAP = 2_000_000_000
_GB = 1 << 30


@dataclass(frozen=True, slots=True)
class GCPolicy:
    """One GC policy (BuildKit's ``GCPolicy`` / ``PruneInfo``); durations in seconds.

    ``all`` admits BuildKit's internal and frontend records too; bkcore keeps none of those
    types, so it widens nothing here."""

    all: bool = False
    keep_duration: float = 0.0
    keep_bytes: int = 0
    filters: tuple[str, ...] = ()


def disk_size(root: Path) -> int:
    """Bytes of the filesystem holding ``root`` (or its nearest existing parent); 0 if it
    cannot be read."""
    path = root
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_frsize * st.f_blocks


def default_cap(root: Path) -> int:
    """10% of the size of the filesystem holding ``root``, rounded up to whole GB (as
    BuildKit: ``(size / 10 / GiB + 1) * 1e9``); :data:`DEFAULT_CAP` if it cannot be read."""
    size = disk_size(root)
    if not size:
        return DEFAULT_CAP
    return (size // 10 // _GB + 1) * 1_000_000_000


def default_policies(root: Path, keep_bytes: int = 0) -> tuple[GCPolicy, ...]:
    """BuildKit's default policies with ``keep_bytes`` (0: :func:`default_cap`) as the cap."""
    keep = keep_bytes or default_cap(root)
    return (
        GCPolicy(
            filters=("type==source.local,type==exec.cachemount,type==source.git.checkout",),
            keep_duration=48 * 3600.0,
            keep_bytes=512_000_000,
        ),
        GCPolicy(keep_duration=60 * 24 * 3600.0, keep_bytes=keep),
        GCPolicy(keep_bytes=keep),
        GCPolicy(all=True, keep_bytes=keep),
    )


# -- filters ----------------------------------------------------------------------------------


def _split_filter(text: str) -> tuple[str, str, str]:
    from bkcore.errors import DefinitionError

    for op in ("==", "!=", "~="):
        key, sep, value = text.partition(op)
        if sep:
            return key.strip(), op, value.strip().strip('"')
    key = text.strip()
    if not key:
        raise DefinitionError(f"invalid filter {text!r}")
    return key, "?", ""


def _holds(part: str, fields: Mapping[str, str]) -> bool:
    from bkcore.errors import DefinitionError

    key, op, value = _split_filter(part)
    got = fields.get(key)
    if op == "?":
        return bool(got)
    if op == "==":
        return got == value
    if op == "!=":
        return got != value
    try:
        return got is not None and re.search(value, got) is not None
    except re.error as exc:
        raise DefinitionError(f"invalid filter {part!r}: {exc}") from exc


def match_filters(filters: Sequence[str], fields: Mapping[str, str]) -> bool:
    """containerd-style filters: an item ``a,b`` holds when all its parts do; items are OR'd.

    Operators ``==``, ``!=``, ``~=`` (regular-expression search) and a bare key (present and
    non-empty). An empty list matches everything; a malformed item or regular expression
    raises :class:`~bkcore.errors.DefinitionError`.
    """
    if not filters:
        return True
    return any(all(_holds(p, fields) for p in item.split(",")) for item in filters)


def check_filters(filters: Sequence[str]) -> None:
    """Raise :class:`~bkcore.errors.DefinitionError` for a malformed filter (before any
    work is done)."""
    from bkcore.errors import DefinitionError

    for item in filters:
        for part in item.split(","):
            _key, op, value = _split_filter(part)
            if op == "~=":
                try:
                    re.compile(value)
                except re.error as exc:
                    raise DefinitionError(f"invalid filter {part!r}: {exc}") from exc


def record_fields(record: Record) -> dict[str, str]:
    """The fields a filter sees of a ``du`` record."""
    return {
        "id": record.id,
        "type": record.type,
        "description": record.description,
        "inuse": str(record.in_use).lower(),
        "mutable": str(record.mutable).lower(),
        "parent": record.parent or "",
        "reclaimable": str(record.reclaimable).lower(),
    }


# -- passes -----------------------------------------------------------------------------------


def apply_policies(
    root: Path, policies: Sequence[GCPolicy], *, now: float | None = None
) -> list[Record]:
    """Apply ``policies`` in order to the store under ``root`` (blocking); the records
    removed. A root without a store is left alone."""
    from bkcore.cli.du_cmd import collect, open_store
    from bkcore.cli.prune_cmd import prune

    if not policies:
        return []
    store = open_store(root)
    if store is None:
        return []
    removed: list[Record] = []
    try:
        for policy in policies:
            records = collect(store)
            if policy.keep_bytes and sum(r.size for r in records) <= policy.keep_bytes:
                continue  # within the bound: this policy removes nothing
            others = {r.id for r in records if not match_filters(policy.filters, record_fields(r))}
            report = prune(
                store,
                keep_duration=policy.keep_duration,
                keep_bytes=policy.keep_bytes,
                now=now,
                protect=others,
            )
            removed.extend(report.removed)
    finally:
        store.close()
    return removed


class GarbageCollector:
    """The GC passes of a daemon over ``root``; ``await run()`` until cancelled.

    ``delay``: how long after start-up or a :meth:`request` a pass begins (builds that end
    together share it); ``throttle``: the least time between the starts of two passes;
    ``interval``: a pass at least this often even without builds (``None``: only start-up
    and after builds). ``on_pass(removed)`` and ``on_error(message)`` report each pass.
    """

    def __init__(
        self,
        root: Path,
        policies: Sequence[GCPolicy],
        *,
        delay: float = 1.0,
        throttle: float = 60.0,
        interval: float | None = None,
        on_pass: Callable[[list[Record]], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.root = root
        self.policies = tuple(policies)
        self.delay = delay
        self.throttle = throttle
        self.interval = interval
        self.passes = 0
        self._on_pass = on_pass
        self._on_error = on_error
        self._wanted = asyncio.Event()

    def request(self) -> None:
        """Ask for a pass soon (a build ended); cheap, callable from any callback."""
        self._wanted.set()

    async def collect_once(self) -> list[Record]:
        """One pass now, in a thread; errors are reported, not raised."""
        try:
            removed = await asyncio.to_thread(apply_policies, self.root, self.policies)
        except Exception as exc:  # a failed pass must not stop the daemon
            if self._on_error is not None:
                self._on_error(f"gc: {exc}")
            return []
        finally:
            self.passes += 1
        if self._on_pass is not None:
            self._on_pass(removed)
        return removed

    async def run(self) -> None:
        """The start-up pass (after ``delay``), then passes as requested; until cancelled.
        The start-up pass does not hold back the first pass after a build."""
        if not self.policies:
            return
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.delay)
        await self.collect_once()
        last = -float("inf")
        while True:
            if self.interval is None:
                await self._wanted.wait()
            else:
                try:
                    await asyncio.wait_for(self._wanted.wait(), self.interval)
                except TimeoutError:
                    pass
            await asyncio.sleep(max(self.delay, last + self.throttle - loop.time()))
            self._wanted.clear()
            last = loop.time()
            await self.collect_once()
