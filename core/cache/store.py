"""The cache store: one root directory holding blobs, snapshots, cache mounts and SQLite.

``CacheStore.open(root)`` runs crash recovery under a store-wide ``flock`` (released right
after, so several processes can then share the store), ``du`` lists what takes space and
``prune`` removes whatever no lease, active write or dependent snapshot holds. The local
source's synced copies (:mod:`bkcore.cache.localcopies`) are listed and pruned here too.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from bkcore.cache.cachemounts import CacheMounts
from bkcore.cache.content import ContentStore
from bkcore.cache.db import Database
from bkcore.cache.keystore import SqliteKeyStorage
from bkcore.cache.localcopies import LocalCopies
from bkcore.cache.refs import Leases
from bkcore.cache.snapshots import SnapshotStore
from bkcore.errors import CacheError

KIND_SNAPSHOT = "regular"
KIND_BLOB = "blob"
KIND_CACHE_MOUNT = "exec.cachemount"
KIND_LOCAL = "source.local"
#: Record ids of local copies are this prefix plus the copy's directory name.
LOCAL_ID_PREFIX = "local-"


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One line of ``bkcore du``."""

    id: str
    kind: str  # "regular" (snapshot), "blob", "exec.cachemount", "source.local"
    size: int
    in_use: bool
    last_used: float
    description: str
    parent: str | None = None
    usage_count: int = 0  #: times used (snapshots, cache mounts; BuildKit's UsageCount)


class CacheStore:
    """Everything under one state root; open with :meth:`open`, finish with :meth:`close`."""

    def __init__(self, root: Path, db: Database, driver: str | None) -> None:
        self.root = root
        self.db = db
        self.content = ContentStore(root, db)
        self.snapshots = SnapshotStore(root, db, driver)
        self.keys = SqliteKeyStorage(db)
        self.cache_mounts = CacheMounts(root, db)
        self.leases = Leases(db)
        self.local_copies = LocalCopies(root)

    @classmethod
    def open(cls, root: Path, driver: str | None = None) -> CacheStore:
        """Open (creating if needed) the store at ``root`` and repair what a crash left.

        ``driver`` is ``"overlayfs"``, ``"copy"`` or None to pick overlayfs when it works.
        Blocking: call through ``asyncio.to_thread`` from async code.
        """
        try:
            root.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CacheError(f"cannot create cache store at {root}: {exc}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            db = Database(root / "metadata.db")
            try:
                store = cls(root, db, driver)
                store.recover()
            except BaseException:
                db.close()
                raise
            return store
        finally:
            os.close(lock_fd)

    @property
    def driver(self) -> str:
        """The snapshot driver in use (``overlayfs`` or ``copy``)."""
        return self.snapshots.driver

    def recover(self) -> None:
        """Remove what dead processes left: leases, active snapshots, temp blobs, mounts."""
        self.leases.expire_dead()
        self.snapshots.recover()
        self.content.recover()
        self.cache_mounts.recover()
        self.local_copies.recover()

    def du(self) -> list[UsageRecord]:
        """Every snapshot, blob, cache mount and local copy with its size and whether it is
        in use (a local copy is while a sync holds its lock)."""
        held_snaps = self.leases.held("snapshot")
        held_blobs = self.leases.held("blob")
        out: list[UsageRecord] = []
        for s in self.snapshots.all():
            out.append(
                UsageRecord(
                    id=s.id,
                    kind=KIND_SNAPSHOT,
                    size=s.size,
                    in_use=s.state == "active" or s.id in held_snaps,
                    last_used=s.last_used,
                    description=s.description,
                    parent=s.parent,
                    usage_count=s.usage_count,
                )
            )
        for r in self.db.query("SELECT * FROM blobs ORDER BY digest"):
            out.append(
                UsageRecord(
                    id=r["digest"],
                    kind=KIND_BLOB,
                    size=int(r["size"]),
                    in_use=r["digest"] in held_blobs,
                    last_used=float(r["last_used"]),
                    description="content blob",
                )
            )
        from bkcore.cache.fsutil import disk_usage

        for m in self.cache_mounts.all():
            out.append(
                UsageRecord(
                    id=f"cachemount-{m.num}",
                    kind=KIND_CACHE_MOUNT,
                    size=disk_usage(m.path.parent),
                    in_use=self.cache_mounts.in_use(m.num),
                    last_used=m.last_used,
                    description=f"cache mount {m.id}",
                    usage_count=m.usage_count,
                )
            )
        for c in self.local_copies.all():
            out.append(
                UsageRecord(
                    id=LOCAL_ID_PREFIX + c.name,
                    kind=KIND_LOCAL,
                    size=c.size,
                    in_use=c.in_use,
                    last_used=c.last_used,
                    description=c.description,
                    usage_count=c.usage_count,
                )
            )
        return out

    def prune(self, all_unused: bool = True) -> int:
        """Remove every unused record; returns the bytes freed.

        Kept: snapshots held by a live lease, being written, or below a kept snapshot; leased
        blobs; cache mounts and local copies in use (a local copy is taken with its lock, not
        waiting, so a running sync is never disturbed). Removed snapshots vanish from the key
        index too, and so do the local source's content-map entries naming them. With
        ``all_unused=False`` snapshots that hold a cache result, all cache mounts and all
        local copies are kept.
        """
        self.leases.expire_dead()
        freed = 0
        keep_results = set() if all_unused else self.keys.result_ids()
        while True:
            leaves = [
                r["id"]
                for r in self.db.query(
                    "SELECT id FROM snapshots s WHERE state='committed'"
                    " AND NOT EXISTS (SELECT 1 FROM snapshot_deps d WHERE d.dep=s.id)"
                    " AND NOT EXISTS (SELECT 1 FROM lease_resources l"
                    "   WHERE l.kind='snapshot' AND l.ref=s.id)"
                )
                if r["id"] not in keep_results
            ]
            if not leaves:
                break
            removed: list[tuple[str, int, int]] = []
            with self.db.tx() as c:
                for sid in leaves:
                    # Re-check inside the transaction: another process may have leased it.
                    row = c.execute(
                        "SELECT num, size FROM snapshots s WHERE id=? AND state='committed'"
                        " AND NOT EXISTS (SELECT 1 FROM snapshot_deps d WHERE d.dep=s.id)"
                        " AND NOT EXISTS (SELECT 1 FROM lease_resources l"
                        "   WHERE l.kind='snapshot' AND l.ref=s.id)",
                        (sid,),
                    ).fetchone()
                    if row is None:
                        continue
                    c.execute("DELETE FROM snapshot_deps WHERE snapshot=?", (sid,))
                    c.execute("DELETE FROM snapshots WHERE id=?", (sid,))
                    self.keys.release_result(sid)
                    removed.append((sid, int(row[0]), int(row[1])))
            if not removed:
                break
            for _sid, num, size in removed:
                self.snapshots._remove_dir(self.snapshots.dir / str(num))
                freed += size
        held_blobs = self.leases.held("blob")
        for r in self.db.query("SELECT digest, size FROM blobs"):
            if r["digest"] in held_blobs:
                continue
            with self.db.tx() as c:
                leased = c.execute(
                    "SELECT 1 FROM lease_resources WHERE kind='blob' AND ref=?", (r["digest"],)
                ).fetchone()
                if leased:
                    continue
                c.execute("DELETE FROM blobs WHERE digest=?", (r["digest"],))
            self.content.path(r["digest"]).unlink(missing_ok=True)
            freed += int(r["size"])
        if all_unused:
            for m in self.cache_mounts.all():
                freed += self.cache_mounts.remove(m.num)
            for name in self.local_copies.names():
                freed += self.local_copies.remove(name)
        self.local_copies.drop_stale_content(self.snapshots.exists)
        return freed

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> CacheStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
