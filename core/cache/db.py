"""The SQLite database of the cache store: one connection, WAL mode, one transaction helper.

All access goes through one connection guarded by a re-entrant lock, so the object is safe to
share between threads; WAL plus a busy timeout lets several processes use one file at once.
Every write happens inside :meth:`Database.tx` (``BEGIN IMMEDIATE``), so a crash leaves either
the whole change or none of it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bkcore.errors import CacheError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    num INTEGER UNIQUE NOT NULL,
    parent TEXT REFERENCES snapshots(id),
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    layers TEXT NOT NULL,
    base TEXT NOT NULL DEFAULT '[]',
    chain TEXT NOT NULL DEFAULT '[]',
    deletions TEXT NOT NULL DEFAULT '[]',
    size INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_used REAL NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    usage_count INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    pid_start TEXT
);
CREATE TABLE IF NOT EXISTS snapshot_deps (
    snapshot TEXT NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,
    dep TEXT NOT NULL REFERENCES snapshots(id),
    PRIMARY KEY (snapshot, dep)
);
CREATE INDEX IF NOT EXISTS snapshot_deps_dep ON snapshot_deps(dep);
CREATE TABLE IF NOT EXISTS blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lease_resources (
    lease TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    PRIMARY KEY (lease, kind, ref)
);
CREATE INDEX IF NOT EXISTS lease_resources_ref ON lease_resources(kind, ref);
CREATE TABLE IF NOT EXISTS links (
    src TEXT NOT NULL,
    input INTEGER NOT NULL,
    output INTEGER NOT NULL,
    digest TEXT NOT NULL,
    selector TEXT NOT NULL,
    dst TEXT NOT NULL,
    PRIMARY KEY (src, input, output, digest, selector, dst)
);
CREATE INDEX IF NOT EXISTS links_dst ON links(dst);
CREATE TABLE IF NOT EXISTS results (
    key TEXT NOT NULL,
    result_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (key, result_id)
);
CREATE INDEX IF NOT EXISTS results_result ON results(result_id);
CREATE TABLE IF NOT EXISTS cache_mounts (
    num INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used REAL NOT NULL,
    usage_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cache_mounts_id ON cache_mounts(id);
"""

#: Columns added after databases were first written: (table, column, declaration), added to
#: an older database when it is opened.
_ADDED_COLUMNS = (
    ("snapshots", "usage_count", "INTEGER NOT NULL DEFAULT 0"),
    ("cache_mounts", "usage_count", "INTEGER NOT NULL DEFAULT 0"),
)


class Database:
    """One SQLite file opened in WAL mode with foreign keys on; thread-safe."""

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            raise CacheError(f"cannot open cache database {path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn
        with self.tx() as c:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            c.execute(
                "INSERT OR IGNORE INTO meta(name, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
            for table, column, decl in _ADDED_COLUMNS:
                have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
                if column not in have:  # a database made before the column existed
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise CacheError(f"cache database {self.path} is closed")
        return self._conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); nested calls join the outer one."""
        with self._lock:
            conn = self._connection()
            if self._depth:
                self._depth += 1
                try:
                    yield conn
                finally:
                    self._depth -= 1
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise CacheError(f"cache database {self.path} is busy: {exc}") from exc
            self._depth = 1
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")
            finally:
                self._depth = 0

    def next_number(self, counter: str) -> int:
        """A number never handed out before for ``counter`` (kept in ``meta``)."""
        with self.tx() as c:
            c.execute(
                "INSERT INTO meta(name, value) VALUES (?, '1')"
                " ON CONFLICT(name) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                (counter,),
            )
            row = c.execute("SELECT value FROM meta WHERE name=?", (counter,)).fetchone()
            return int(row[0])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Run one read statement and return every row."""
        with self._lock:
            return self._connection().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection; later calls raise :class:`CacheError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
