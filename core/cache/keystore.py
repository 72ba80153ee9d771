"""Persistent :class:`bkcore.solver.keystorage.KeyStorage` on the store's SQLite database.

Links and results live in the ``links`` and ``results`` tables, so a later process finds every
key and result an earlier one saved (a second build of the same graph runs nothing).
"""

from __future__ import annotations

from bkcore.cache.db import Database
from bkcore.solver.keystorage import LinkLabel, ResultRecord


class SqliteKeyStorage:
    """Keys, links and results in SQLite; thread- and process-safe through :class:`Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def exists(self, key: str) -> bool:
        row = self.db.query(
            "SELECT EXISTS(SELECT 1 FROM results WHERE key=?)"
            " OR EXISTS(SELECT 1 FROM links WHERE src=?)"
            " OR EXISTS(SELECT 1 FROM links WHERE dst=?)",
            (key, key, key),
        )
        return bool(row[0][0])

    def add_link(self, src: str, label: LinkLabel, dst: str) -> None:
        with self.db.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO links(src, input, output, digest, selector, dst)"
                " VALUES (?,?,?,?,?,?)",
                (src, label.input, label.output, label.digest, label.selector, dst),
            )

    def walk_links(self, src: str, label: LinkLabel) -> list[str]:
        rows = self.db.query(
            "SELECT dst FROM links WHERE src=? AND input=? AND output=? AND digest=?"
            " AND selector=? ORDER BY dst",
            (src, label.input, label.output, label.digest, label.selector),
        )
        return [r["dst"] for r in rows]

    def add_result(self, key: str, result_id: str, created_at: float) -> None:
        with self.db.tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO results(key, result_id, created_at) VALUES (?,?,?)",
                (key, result_id, created_at),
            )

    def results(self, key: str) -> list[ResultRecord]:
        rows = self.db.query(
            "SELECT key, result_id, created_at FROM results WHERE key=?"
            " ORDER BY created_at DESC, result_id",
            (key,),
        )
        return [ResultRecord(r["key"], r["result_id"], r["created_at"]) for r in rows]

    def result_ids(self) -> set[str]:
        """Every result id some key holds (the store uses it to tell cached records)."""
        return {r[0] for r in self.db.query("SELECT DISTINCT result_id FROM results")}

    def release_result(self, result_id: str) -> None:
        """Forget ``result_id``; then drop links into keys that lead nowhere any more."""
        with self.db.tx() as c:
            frontier = [
                r[0] for r in c.execute("SELECT key FROM results WHERE result_id=?", (result_id,))
            ]
            c.execute("DELETE FROM results WHERE result_id=?", (result_id,))
            # A key is dangling when it holds no result and links to nothing: links into it can
            # never produce a hit. Removing them may leave their sources dangling in turn.
            seen: set[str] = set()
            while frontier:
                key = frontier.pop()
                if key in seen:
                    continue
                seen.add(key)
                busy = c.execute(
                    "SELECT EXISTS(SELECT 1 FROM results WHERE key=?)"
                    " OR EXISTS(SELECT 1 FROM links WHERE src=?)",
                    (key, key),
                ).fetchone()[0]
                if busy:
                    continue
                sources = [r[0] for r in c.execute("SELECT src FROM links WHERE dst=?", (key,))]
                c.execute("DELETE FROM links WHERE dst=?", (key,))
                frontier.extend(sources)
                seen.difference_update(sources)
