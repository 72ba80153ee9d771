"""The real ``local://`` source writes copies that ``du`` lists and ``prune`` reclaims, and a
sync after a prune makes the copy again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bkcore.cache.results import results_for
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import KIND_LOCAL, CacheStore
from bkcore.progress import SharedProgress, VertexEvent
from bkcore.session.manager import SessionManager
from bkcore.session.session import Session
from bkcore.sessions.filesync import FileSyncProvider
from bkcore.solver.types import JobInfo
from bkcore.sources.local.source import LocalSource, copy_dir_for


@dataclass
class _Engine:
    store: CacheStore
    sessions: SessionManager


@dataclass
class _Ctx:
    engine: Any
    session_ids: list[str]
    progress: SharedProgress = field(
        default_factory=lambda: SharedProgress(VertexEvent("sha256:v", "local"))
    )

    def jobs(self) -> list[JobInfo]:
        return [JobInfo(f"job{i}", {"session": s}) for i, s in enumerate(self.session_ids)]


def test_synced_copy_is_listed_pruned_and_made_again(tmp_path: Path) -> None:
    async def main() -> None:
        store = CacheStore.open(tmp_path / "root", COPY)
        client = tmp_path / "client"
        client.mkdir()
        (client / "big.bin").write_bytes(b"x" * 300_000)
        sessions = SessionManager()
        session = Session(name="test", shared_key="proj")
        session.allow(FileSyncProvider({"context": str(client)}))
        sessions.attach(session)
        ctx = _Ctx(_Engine(store, sessions), [session.id])
        inst = LocalSource().identify("local://context", {}, None)

        first = await inst.snapshot(ctx)
        await first.release()
        base = copy_dir_for(store.root, "context", "", "proj")
        records = [r for r in store.du() if r.kind == KIND_LOCAL]
        assert [(r.id, r.description, r.in_use) for r in records] == [
            ("local-" + base.name, "local source for context", False)
        ]
        assert records[0].size >= 300_000
        freed = await asyncio.to_thread(store.prune)
        assert freed >= 300_000 + records[0].size
        assert not base.exists() and [r for r in store.du() if r.kind == KIND_LOCAL] == []

        again = await inst.snapshot(ctx)
        assert (base / "tree" / "big.bin").stat().st_size == 300_000
        with store.snapshots.view(again.id) as root:
            assert (root / "big.bin").stat().st_size == 300_000
        await again.release()
        await results_for(store).close()
        await sessions.close()
        store.close()

    asyncio.run(main())
