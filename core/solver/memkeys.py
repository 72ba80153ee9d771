"""An in-memory :class:`~bkcore.solver.keystorage.KeyStorage` (tests, benchmarks, no cache dir)."""

from __future__ import annotations

import threading
from collections import defaultdict

from bkcore.solver.keystorage import LinkLabel, ResultRecord

__all__ = ["MemoryKeyStorage"]


class MemoryKeyStorage:
    """Keys, links and results in dictionaries, guarded by one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links: defaultdict[tuple[str, LinkLabel], set[str]] = defaultdict(set)
        self._out: defaultdict[str, set[tuple[LinkLabel, str]]] = defaultdict(set)
        self._in: defaultdict[str, set[tuple[str, LinkLabel]]] = defaultdict(set)
        self._results: defaultdict[str, dict[str, float]] = defaultdict(dict)
        self._by_result: defaultdict[str, set[str]] = defaultdict(set)

    def exists(self, key: str) -> bool:
        with self._lock:
            return bool(self._out.get(key) or self._in.get(key) or self._results.get(key))

    def add_link(self, src: str, label: LinkLabel, dst: str) -> None:
        with self._lock:
            self._links[(src, label)].add(dst)
            self._out[src].add((label, dst))
            self._in[dst].add((src, label))

    def walk_links(self, src: str, label: LinkLabel) -> list[str]:
        with self._lock:
            found = self._links.get((src, label))
            return sorted(found) if found else []

    def add_result(self, key: str, result_id: str, created_at: float) -> None:
        with self._lock:
            self._results[key].setdefault(result_id, created_at)
            self._by_result[result_id].add(key)

    def results(self, key: str) -> list[ResultRecord]:
        with self._lock:
            saved = self._results.get(key)
            if not saved:
                return []
            records = [ResultRecord(key, rid, t) for rid, t in saved.items()]
        records.sort(key=lambda r: (-r.created_at, r.result_id))
        return records

    def release_result(self, result_id: str) -> None:
        with self._lock:
            keys = self._by_result.pop(result_id, set())
            for key in keys:
                saved = self._results.get(key)
                if saved is not None:
                    saved.pop(result_id, None)
                    if not saved:
                        del self._results[key]
            pending = list(keys)
            while pending:
                key = pending.pop()
                if self._results.get(key) or self._out.get(key):
                    continue
                # A key with no results and no links onward leads nowhere: drop it.
                for src, label in self._in.pop(key, set()):
                    self._links[(src, label)].discard(key)
                    if not self._links[(src, label)]:
                        del self._links[(src, label)]
                    self._out[src].discard((label, key))
                    if not self._out[src]:
                        del self._out[src]
                        pending.append(src)
                self._out.pop(key, None)
