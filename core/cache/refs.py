"""Leases: named holds on snapshots and blobs so nothing a running build uses is deleted.

A lease row records the pid and start time of its process; leases of processes that died are
expired when the store opens (and before every prune).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from bkcore.cache import procs
from bkcore.cache.db import Database
from bkcore.errors import CacheError

RefKind = Literal["snapshot", "blob"]


class Lease:
    """A live lease; add the snapshots and blobs it protects."""

    def __init__(self, leases: Leases, lease_id: str) -> None:
        self.leases = leases
        self.id = lease_id

    def add(self, kind: RefKind, ref: str) -> None:
        with self.leases.db.tx() as c:
            if c.execute("SELECT 1 FROM leases WHERE id=?", (self.id,)).fetchone() is None:
                raise CacheError(f"lease {self.id} is no longer held")
            table, col = ("snapshots", "id") if kind == "snapshot" else ("blobs", "digest")
            if c.execute(f"SELECT 1 FROM {table} WHERE {col}=?", (ref,)).fetchone() is None:
                raise CacheError(f"{kind} {ref} does not exist (pruned?)")
            c.execute(
                "INSERT OR IGNORE INTO lease_resources(lease, kind, ref) VALUES (?,?,?)",
                (self.id, kind, ref),
            )

    def remove(self, kind: RefKind, ref: str) -> None:
        with self.leases.db.tx() as c:
            c.execute(
                "DELETE FROM lease_resources WHERE lease=? AND kind=? AND ref=?",
                (self.id, kind, ref),
            )

    def resources(self) -> list[tuple[str, str]]:
        rows = self.leases.db.query(
            "SELECT kind, ref FROM lease_resources WHERE lease=? ORDER BY kind, ref", (self.id,)
        )
        return [(r["kind"], r["ref"]) for r in rows]


class Leases:
    """The lease table of one store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str) -> Lease:
        """Take the lease ``name``; CacheError when a live process holds it already."""
        pid, started = procs.me()
        with self.db.tx() as c:
            row = c.execute("SELECT pid, pid_start FROM leases WHERE id=?", (name,)).fetchone()
            if row is not None:
                if procs.alive(int(row[0]), str(row[1])):
                    raise CacheError(f"lease {name!r} is held by process {row[0]}")
                c.execute("DELETE FROM leases WHERE id=?", (name,))
            c.execute(
                "INSERT INTO leases(id, pid, pid_start, created_at) VALUES (?,?,?,?)",
                (name, pid, started, time.time()),
            )
        return Lease(self, name)

    def release(self, lease: Lease) -> None:
        with self.db.tx() as c:
            c.execute("DELETE FROM leases WHERE id=?", (lease.id,))

    @contextmanager
    def lease(self, name: str) -> Iterator[Lease]:
        """Hold the lease ``name`` while the block runs."""
        held = self.create(name)
        try:
            yield held
        finally:
            self.release(held)

    def expire_dead(self) -> list[str]:
        """Drop leases whose process is gone; returns their names."""
        dead = [
            r["id"]
            for r in self.db.query("SELECT id, pid, pid_start FROM leases")
            if not procs.alive(int(r["pid"]), str(r["pid_start"]))
        ]
        if dead:
            with self.db.tx() as c:
                c.executemany("DELETE FROM leases WHERE id=?", [(d,) for d in dead])
        return dead

    def held(self, kind: RefKind) -> set[str]:
        """Refs of ``kind`` that some lease holds."""
        rows = self.db.query("SELECT DISTINCT ref FROM lease_resources WHERE kind=?", (kind,))
        return {r[0] for r in rows}
