"""Snapshots: file trees with parent chains, written once and then immutable.

Two drivers share one model. A snapshot row holds ``layers``: directories (relative to
``snapshots/``) that stacked bottom to top give its full view, and ``chain``: the snapshot ids
whose own changes stacked give the same view (used to replay a merge without overlay).

* ``overlayfs``: a snapshot's ``fs`` is an overlay upper dir holding only its changes; the view
  is a read-only overlay of its layers; the diff against the parent reads the upper dir.
* ``copy``: a snapshot's ``fs`` is a full copy of its parent plus its changes; the view is that
  directory; the diff compares two trees.

Rows and directories are created row first and removed row first, so a directory without a
row is always garbage. An ``active`` row belongs to the process named by (pid, start time);
:meth:`SnapshotStore.recover` removes those of dead processes. Every method blocks: call it
through ``asyncio.to_thread`` from async code.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bkcore.cache import fsutil, procs
from bkcore.cache.changes import Change, apply_changes, overlay_changes, tree_changes
from bkcore.cache.db import Database
from bkcore.cache.mount import (
    MAX_OPTIONS,
    Mount,
    mount,
    mount_points_under,
    overlay_options,
    overlay_works,
    unmount,
    unmount_all_under,
)
from bkcore.errors import CacheError

OVERLAY = "overlayfs"
COPY = "copy"
# Longer chains are flattened into one layer (the kernel allows 500 lowers, options one page).
MAX_LAYERS = 100


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """One snapshot row."""

    id: str
    num: int
    parent: str | None
    kind: str  # "layer" | "merge" | "diff"
    state: str  # "active" | "committed"
    layers: tuple[str, ...]
    base: tuple[str, ...]
    chain: tuple[str, ...]
    deletions: tuple[str, ...]
    size: int
    created_at: float
    last_used: float
    description: str
    #: How many times the snapshot was used (viewed, or the base of a new snapshot): BuildKit's
    #: UsageCount, bumped together with ``last_used``.
    usage_count: int = 0


def detect_driver(root: Path) -> str:
    """``overlayfs`` when running as root and a test overlay mount under ``root`` works."""
    pid, started = procs.me()
    return OVERLAY if overlay_works(root / f"probe-{pid}-{started}") else COPY


def _dedupe_top(layers: list[str]) -> list[str]:
    """Drop lower repeats of a layer: stacking it again on top has the same effect."""
    seen: set[str] = set()
    out: list[str] = []
    for layer in reversed(layers):
        if layer not in seen:
            seen.add(layer)
            out.append(layer)
    out.reverse()
    return out


class SnapshotStore:
    """Snapshots under ``root/snapshots`` with rows in the ``snapshots`` table."""

    def __init__(self, root: Path, db: Database, driver: str | None = None) -> None:
        self.root = root
        self.db = db
        self.dir = root / "snapshots"
        self.views_dir = root / "views"
        self.empty = root / "empty"
        for d in (self.dir, self.views_dir, self.empty):
            d.mkdir(parents=True, exist_ok=True)
        if driver not in (None, OVERLAY, COPY):
            raise CacheError(f"unknown snapshot driver {driver!r} (want overlayfs or copy)")
        self.driver = self._settle_driver(driver)

    def _settle_driver(self, wanted: str | None) -> str:
        """The driver is fixed when the first snapshot is made: layers of one driver mean
        nothing to the other, so reopening with another driver is refused."""
        rows = self.db.query("SELECT value FROM meta WHERE name='driver'")
        stored = str(rows[0][0]) if rows else None
        has_snapshots = bool(self.db.query("SELECT 1 FROM snapshots LIMIT 1"))
        if stored is not None and has_snapshots:
            if wanted is not None and wanted != stored:
                raise CacheError(
                    f"cache store {self.root} holds {stored} snapshots;"
                    f" cannot open it with {wanted}"
                )
            if stored == OVERLAY and detect_driver(self.root) != OVERLAY:
                raise CacheError(
                    f"cache store {self.root} holds overlayfs snapshots but overlay mounts do not"
                    " work here (not root, or the file system does not support overlay)"
                )
            return stored
        driver = wanted or detect_driver(self.root)
        with self.db.tx() as c:
            c.execute(
                "INSERT INTO meta(name, value) VALUES ('driver', ?)"
                " ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                (driver,),
            )
        return driver

    # -- rows ----------------------------------------------------------------------------

    def get(self, snapshot_id: str) -> SnapshotInfo:
        rows = self.db.query("SELECT * FROM snapshots WHERE id=?", (snapshot_id,))
        if not rows:
            raise CacheError(f"snapshot {snapshot_id} not found")
        return _info(rows[0])

    def exists(self, snapshot_id: str) -> bool:
        return bool(self.db.query("SELECT 1 FROM snapshots WHERE id=?", (snapshot_id,)))

    def all(self) -> list[SnapshotInfo]:
        return [_info(r) for r in self.db.query("SELECT * FROM snapshots ORDER BY num")]

    def _committed(self, snapshot_id: str) -> SnapshotInfo:
        info = self.get(snapshot_id)
        if info.state != "committed":
            raise CacheError(f"snapshot {snapshot_id} is not committed")
        return info

    def _insert(
        self,
        *,
        kind: str,
        state: str,
        parent: str | None,
        layers: list[str],
        base: list[str],
        chain: list[str] | None,
        deps: list[str],
        description: str,
        snapshot_id: str | None = None,
        num: int | None = None,
    ) -> tuple[str, int]:
        snapshot_id = snapshot_id or uuid.uuid4().hex
        num = num if num is not None else self.db.next_number("snapshot_num")
        pid, started = procs.me()
        now = time.time()
        with self.db.tx() as c:
            for dep in deps:
                row = c.execute("SELECT state FROM snapshots WHERE id=?", (dep,)).fetchone()
                if row is None or row[0] != "committed":
                    raise CacheError(f"snapshot {dep} not found or not committed")
            c.execute(
                "INSERT INTO snapshots(id, num, parent, kind, state, layers, base, chain,"
                " created_at, last_used, description, pid, pid_start)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    snapshot_id,
                    num,
                    parent,
                    kind,
                    state,
                    json.dumps(layers),
                    json.dumps(base),
                    json.dumps(chain if chain is not None else [snapshot_id]),
                    now,
                    now,
                    description,
                    pid,
                    started,
                ),
            )
            for dep in dict.fromkeys(deps):
                c.execute(
                    "INSERT INTO snapshot_deps(snapshot, dep) VALUES (?,?)", (snapshot_id, dep)
                )
                c.execute(
                    "UPDATE snapshots SET last_used=?, usage_count=usage_count+1 WHERE id=?",
                    (now, dep),
                )
        return snapshot_id, num

    def _finish(self, snapshot_id: str, num: int, extra: dict[str, object] | None = None) -> None:
        """Flip an active row to committed with its size, in one transaction."""
        size = fsutil.disk_usage(self.dir / str(num))
        sets = {"state": "committed", "size": size, "pid": None, "pid_start": None}
        sets.update(extra or {})
        cols = ", ".join(f"{k}=?" for k in sets)
        with self.db.tx() as c:
            cur = c.execute(
                f"UPDATE snapshots SET {cols} WHERE id=? AND state='active'",
                (*sets.values(), snapshot_id),
            )
            if cur.rowcount != 1:
                raise CacheError(f"snapshot {snapshot_id} is no longer active")

    # -- writing -------------------------------------------------------------------------

    def prepare(self, parent: str | None, description: str = "") -> MutableSnapshot:
        """A new writable snapshot on top of ``parent`` (None: empty)."""
        p = self._committed(parent) if parent is not None else None
        parent_layers = list(p.layers) if p else []
        snapshot_id = uuid.uuid4().hex
        num = self.db.next_number("snapshot_num")
        own = f"{num}/fs"
        flat = False
        if self.driver == OVERLAY:
            flat = len(parent_layers) + 1 > MAX_LAYERS or not self._fits(parent_layers, num)
        base = [f"{num}/flat"] if flat else parent_layers
        layers = [*base, own] if self.driver == OVERLAY else [own]
        if self.driver == COPY:
            base = parent_layers
        chain = [*(p.chain if p else ()), snapshot_id]
        self._insert(
            kind="layer",
            state="active",
            parent=parent,
            layers=layers,
            base=base,
            chain=chain,
            deps=[parent] if parent else [],
            description=description,
            snapshot_id=snapshot_id,
            num=num,
        )
        sdir = self.dir / str(num)
        try:
            sdir.mkdir()
            (sdir / "fs").mkdir()
            if self.driver == COPY:
                if p is not None:
                    fsutil.copy_tree(self.dir / p.layers[-1], sdir / "fs")
            else:
                (sdir / "work").mkdir()
                (sdir / "mnt").mkdir()
                if flat:
                    assert parent is not None
                    (sdir / "flat").mkdir()
                    with self.view(parent) as src:
                        fsutil.copy_tree(src, sdir / "flat")
        except BaseException:
            self._delete_rows_and_dirs([snapshot_id])
            raise
        return MutableSnapshot(self, snapshot_id, num, parent, base)

    def _fits(self, layers: list[str], num: int | None = None) -> bool:
        """True when an overlay of ``layers`` (with snapshot ``num``'s upper and work dirs, or
        read-only with the empty dir) stays within the kernel's one page of options."""
        lowers = [str(self.dir / layer) for layer in layers]
        if num is None:
            opts = overlay_options([str(self.empty), *lowers])
        else:
            sdir = self.dir / str(num)
            opts = overlay_options(lowers, str(sdir / "fs"), str(sdir / "work"))
        return len(",".join(opts)) <= MAX_OPTIONS

    def merge(self, ids: list[str], description: str = "") -> str:
        """A snapshot stacking the given snapshots in order (later ones on top)."""
        infos = [self._committed(i) for i in ids]
        chain = [m for info in infos for m in info.chain]
        upper_chain = [m for info in infos[1:] for m in info.chain]
        if self.driver == OVERLAY and not self._has_deletions(upper_chain):
            # Stacking is exact only for layers whose whiteouts the kernel wrote: a diff
            # snapshot's deletions refer to a tree that is not in the stack, so replay those
            # (in the first input they have nothing below them to delete).
            layers = _dedupe_top([layer for info in infos for layer in info.layers])
            if len(layers) <= MAX_LAYERS and self._fits(layers):
                sid, _ = self._insert(
                    kind="merge",
                    state="committed",
                    parent=None,
                    layers=layers,
                    base=[],
                    chain=chain,
                    deps=list(ids),
                    description=description,
                )
                return sid
        return self._materialize_merge(infos, chain, description)

    def _has_deletions(self, chain: list[str]) -> bool:
        marks = ",".join("?" * len(chain))
        rows = self.db.query(
            f"SELECT 1 FROM snapshots WHERE id IN ({marks}) AND kind='diff' AND deletions!='[]'",
            chain,
        )
        return bool(rows)

    def _materialize_merge(self, infos: list[SnapshotInfo], chain: list[str], desc: str) -> str:
        """Merge by copying the first input and replaying each later input's layer changes."""
        sid, num = self._insert(
            kind="merge",
            state="active",
            parent=None,
            layers=[],
            base=[],
            chain=chain,
            deps=[i.id for i in infos],
            description=desc,
        )
        target = self.dir / str(num) / "fs"
        try:
            target.mkdir(parents=True)
            if infos:
                with self.view(infos[0].id) as first:
                    fsutil.copy_tree(first, target)
            for info in infos[1:]:
                for member in info.chain:
                    with self.diff(member) as changes:
                        apply_changes(changes, target)
            self._finish(sid, num, {"layers": json.dumps([f"{num}/fs"])})
        except BaseException:
            self._delete_rows_and_dirs([sid])
            raise
        return sid

    def diff_snapshot(self, lower: str | None, upper: str, description: str = "") -> str:
        """A snapshot holding what changed from ``lower`` (None: scratch) to ``upper``.

        Viewed alone it shows the added and modified entries; its deletions (kept in the row)
        apply when it is merged on top of another snapshot. Callers hold leases on both
        inputs while this runs.
        """
        up_info = self._committed(upper)
        if lower is not None:
            self._committed(lower)
        # ``upper`` is a layer on ``lower``: its own changes are the diff (as BuildKit diffs
        # the layer itself), which also sees a rewrite that keeps size and mtime.
        own_layer = up_info.kind == "layer" and up_info.parent == lower
        sid, num = self._insert(
            kind="diff",
            state="active",
            parent=None,
            layers=[],
            base=[],
            chain=None,
            deps=[],
            description=description,
        )
        target = self.dir / str(num) / "fs"
        try:
            target.mkdir(parents=True)
            with ExitStack() as stack:
                if own_layer:
                    changes = stack.enter_context(self.diff(upper))
                else:
                    low = stack.enter_context(self.view(lower)) if lower is not None else None
                    changes = tree_changes(low, stack.enter_context(self.view(upper)))
                apply_changes([c for c in changes if c.kind != "delete"], target)
            deletions = [c.path for c in changes if c.kind == "delete"]
            self._finish(
                sid,
                num,
                {"layers": json.dumps([f"{num}/fs"]), "deletions": json.dumps(deletions)},
            )
        except BaseException:
            self._delete_rows_and_dirs([sid])
            raise
        return sid

    # -- reading -------------------------------------------------------------------------

    def count_use(self, snapshot_id: str) -> None:
        """One use of the committed snapshot that neither views nor builds on it (an image
        export reading its layers): ``last_used`` and ``usage_count`` as :meth:`view` bumps."""
        self._committed(snapshot_id)
        with self.db.tx() as c:
            c.execute(
                "UPDATE snapshots SET last_used=?, usage_count=usage_count+1 WHERE id=?",
                (time.time(), snapshot_id),
            )

    @contextmanager
    def view(self, snapshot_id: str) -> Iterator[Path]:
        """A read-only directory showing the committed snapshot while the block runs."""
        info = self._committed(snapshot_id)
        with self.db.tx() as c:
            c.execute(
                "UPDATE snapshots SET last_used=?, usage_count=usage_count+1 WHERE id=?",
                (time.time(), snapshot_id),
            )
        with self._view_layers(list(info.layers)) as path:
            yield path

    @contextmanager
    def _view_layers(self, layers: list[str]) -> Iterator[Path]:
        if not layers:
            yield self.empty
            return
        if self.driver == COPY:
            yield self.dir / layers[-1]
            return
        pid, started = procs.me()
        target = self.views_dir / f"{pid}-{started}-{secrets.token_hex(6)}"
        target.mkdir()
        try:
            mount(self._overlay_view(layers), target, readonly=True)
            try:
                yield target
            finally:
                unmount(target)
        finally:
            target.rmdir()

    def _overlay_view(self, layers: list[str]) -> Mount:
        # The empty dir at the bottom: overlay wants two lowers without an upper, and it hides
        # whiteouts in the lowest real layer.
        lowers = [str(self.empty), *(str(self.dir / layer) for layer in layers)]
        return Mount("overlay", "overlay", overlay_options(lowers))

    def mounts(self, snapshot_id: str) -> list[Mount]:
        """How a container runtime mounts the committed snapshot read-only by itself."""
        info = self._committed(snapshot_id)
        if not info.layers:
            return [Mount("bind", str(self.empty), ("rbind", "ro"))]
        if self.driver == COPY:
            return [Mount("bind", str(self.dir / info.layers[-1]), ("rbind", "ro"))]
        return [self._overlay_view(list(info.layers))]

    @contextmanager
    def diff(self, snapshot_id: str) -> Iterator[list[Change]]:
        """Changes of the committed snapshot against its parent, sorted by path.

        Sources stay readable while the block runs. A merge is compared against scratch; a
        diff snapshot lists what it carries, deletions included.
        """
        info = self._committed(snapshot_id)
        own = self.dir / str(info.num) / "fs"
        with ExitStack() as stack:
            if info.kind == "diff":
                changes = _layer_dir_changes(own, info.deletions)
            elif info.kind == "merge":
                changes = tree_changes(None, stack.enter_context(self.view(snapshot_id)))
            elif self.driver == OVERLAY:
                low_view = stack.enter_context(self._view_layers(list(info.base)))
                changes = overlay_changes(own, low_view if info.base else None)
            else:
                lower = self.dir / info.base[-1] if info.base else None
                changes = tree_changes(lower, own)
            yield changes

    # -- removal and recovery ------------------------------------------------------------

    def delete(self, snapshot_id: str) -> None:
        """Remove a snapshot that nothing depends on (no lease check here)."""
        self.get(snapshot_id)
        rows = self.db.query("SELECT 1 FROM snapshot_deps WHERE dep=?", (snapshot_id,))
        if rows:
            raise CacheError(f"snapshot {snapshot_id} is still used by another snapshot")
        self._delete_rows_and_dirs([snapshot_id])

    def _delete_rows_and_dirs(self, ids: list[str]) -> None:
        nums: list[int] = []
        with self.db.tx() as c:
            for sid in ids:
                row = c.execute("SELECT num FROM snapshots WHERE id=?", (sid,)).fetchone()
                if row is None:
                    continue
                nums.append(int(row[0]))
                c.execute("DELETE FROM snapshot_deps WHERE snapshot=?", (sid,))
                c.execute("DELETE FROM snapshots WHERE id=?", (sid,))
        for num in nums:
            self._remove_dir(self.dir / str(num))

    def _remove_dir(self, path: Path) -> None:
        unmount_all_under(path)
        fsutil.remove(path)

    def recover(self) -> list[str]:
        """Remove active snapshots of dead processes, stray dirs and stale views.

        Returns the ids of removed snapshot rows. Safe while other live processes use the
        store: their active rows, views and directories are left alone.
        """
        for entry in list(os.scandir(self.views_dir)):
            parts = entry.name.split("-")
            if len(parts) == 3 and parts[0].isdigit() and procs.alive(int(parts[0]), parts[1]):
                continue
            unmount_all_under(Path(entry.path))
            fsutil.remove(entry.path)
        for entry in list(os.scandir(self.root)):
            if entry.name.startswith("probe-"):
                parts = entry.name.split("-")
                if len(parts) == 3 and parts[1].isdigit() and procs.alive(int(parts[1]), parts[2]):
                    continue
                unmount_all_under(Path(entry.path))
                fsutil.remove(entry.path)
        # Directories first, rows second: a dir made after the listing has its row already.
        on_disk = [e.name for e in os.scandir(self.dir) if e.name.isdigit()]
        dead = [
            r["id"]
            for r in self.db.query("SELECT id, pid, pid_start FROM snapshots WHERE state='active'")
            if r["pid"] is None or not procs.alive(int(r["pid"]), str(r["pid_start"]))
        ]
        removed: list[str] = []
        # An active row of a dead process may have children only if they are also dead
        # (children need a committed parent), so removing them in any order is safe.
        if dead:
            self._delete_rows_and_dirs(dead)
            removed.extend(dead)
        known = {str(r[0]) for r in self.db.query("SELECT num FROM snapshots")}
        for name in on_disk:
            if name not in known:
                self._remove_dir(self.dir / name)
        return removed

    def leftover_mounts(self) -> list[Path]:
        """Mount points the store holds right now (for checks and ``debug``)."""
        return mount_points_under(self.root)


class MutableSnapshot:
    """A snapshot being written. ``commit`` makes it immutable; ``discard`` removes it."""

    def __init__(
        self, store: SnapshotStore, snapshot_id: str, num: int, parent: str | None, base: list[str]
    ) -> None:
        self.store = store
        self.id = snapshot_id
        self.num = num
        self.parent = parent
        self._base = base
        self._dir = store.dir / str(num)
        self._mounted = False
        self._done = False

    @property
    def _overlay(self) -> bool:
        return self.store.driver == OVERLAY and bool(self._base)

    def mounts(self) -> list[Mount]:
        """How a container runtime mounts this snapshot read-write by itself."""
        if not self._overlay:
            return [Mount("bind", str(self._dir / "fs"), ("rbind", "rw"))]
        lowers = [str(self.store.dir / layer) for layer in self._base]
        opts = overlay_options(lowers, str(self._dir / "fs"), str(self._dir / "work"))
        return [Mount("overlay", "overlay", opts)]

    def mount(self) -> Path:
        """A directory showing the full tree, readable and writable, until ``unmount``."""
        self._check()
        if not self._overlay:
            return self._dir / "fs"
        if not self._mounted:
            mount(self.mounts()[0], self._dir / "mnt")
            self._mounted = True
        return self._dir / "mnt"

    def unmount(self) -> None:
        if self._mounted:
            unmount(self._dir / "mnt")
            self._mounted = False

    def commit(self) -> str:
        """Make the snapshot immutable and return its id (atomic: one row update)."""
        self._check()
        self.unmount()
        if self.store.driver == OVERLAY:
            fsutil.remove(self._dir / "work")
            fsutil.remove(self._dir / "mnt")
        self.store._finish(self.id, self.num)
        self._done = True
        return self.id

    def discard(self) -> None:
        """Throw the snapshot away (unmounting it first)."""
        if self._done:
            return
        self.unmount()
        self.store._delete_rows_and_dirs([self.id])
        self._done = True

    def _check(self) -> None:
        if self._done:
            raise CacheError(f"snapshot {self.id} was already committed or discarded")

    def __enter__(self) -> MutableSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        """Discard unless committed (so an error never leaves an active snapshot behind)."""
        self.discard()


def _layer_dir_changes(fs: Path, deletions: tuple[str, ...]) -> list[Change]:
    """What a diff snapshot carries: its entries as adds, its recorded deletions."""
    changes = tree_changes(None, fs) + [Change("delete", p) for p in deletions]
    changes.sort(key=lambda c: c.path.split("/"))
    return changes


def _info(row: sqlite3.Row) -> SnapshotInfo:
    return SnapshotInfo(
        id=row["id"],
        num=int(row["num"]),
        parent=row["parent"],
        kind=row["kind"],
        state=row["state"],
        layers=tuple(json.loads(row["layers"])),
        base=tuple(json.loads(row["base"])),
        chain=tuple(json.loads(row["chain"])),
        deletions=tuple(json.loads(row["deletions"])),
        size=int(row["size"]),
        created_at=float(row["created_at"]),
        last_used=float(row["last_used"]),
        description=row["description"],
        usage_count=int(row["usage_count"]),
    )
