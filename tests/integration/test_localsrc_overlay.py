"""local:// snapshots on overlayfs: after a sync that changed a few paths, the new snapshot is
the copy's last snapshot plus only those changes, and it holds exactly the synced tree."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bkcore.cache.mount import overlay_works
from bkcore.cache.results import results_for
from bkcore.cache.snapshots import OVERLAY
from bkcore.cache.store import CacheStore
from bkcore.progress import SharedProgress, VertexEvent
from bkcore.session.manager import SessionManager
from bkcore.session.session import Session
from bkcore.sessions.filesync import FileSyncProvider
from bkcore.solver.types import JobInfo, Result
from bkcore.sources.local.source import LocalSource, copy_dir_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root"),
]


@dataclass
class _Engine:
    store: CacheStore
    sessions: SessionManager


@dataclass
class _Ctx:
    engine: Any
    session_ids: Sequence[str]
    progress: SharedProgress = field(
        default_factory=lambda: SharedProgress(VertexEvent("sha256:v", "local"))
    )

    def jobs(self) -> list[JobInfo]:
        return [JobInfo("job", {"session": s}) for s in self.session_ids]


def _listing(root: Path) -> list[tuple[str, int, int, int, int, str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            p = Path(dirpath, name)
            st = p.lstat()
            if p.is_symlink():
                extra = "->" + os.readlink(p)
            elif p.is_file():
                extra = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                extra = "dir"
            rel = str(p.relative_to(root))
            out.append((rel, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, extra))
    return out


def _check(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    if not overlay_works(probe):
        pytest.skip("overlay mounts do not work here")
    shutil.rmtree(probe, ignore_errors=True)


def test_changes_are_layered_on_the_last_snapshot(tmp_path: Path) -> None:
    _check(tmp_path)
    client = tmp_path / "client"
    (client / "keep" / "deep").mkdir(parents=True)
    (client / "keep" / "deep" / "f").write_text("unchanged\n")
    (client / "edit.txt").write_text("v1\n")
    (client / "gone").mkdir()
    (client / "gone" / "x").write_text("x\n")
    (client / "becomes_dir").write_text("file\n")
    os.symlink("edit.txt", client / "ln")

    async def main() -> None:
        store = CacheStore.open(tmp_path / "state", OVERLAY)
        sessions = SessionManager()
        session = Session(shared_key="p")
        session.allow(FileSyncProvider({"ctx": str(client)}))
        sessions.attach(session)
        ctx = _Ctx(_Engine(store, sessions), [session.id])
        inst = LocalSource().identify("local://ctx", {}, None)
        first = await inst.snapshot(ctx)
        assert store.snapshots.get(first.id).parent is None

        (client / "edit.txt").write_text("v2 longer\n")
        shutil.rmtree(client / "gone")
        (client / "becomes_dir").unlink()
        (client / "becomes_dir").mkdir()
        (client / "becomes_dir" / "inside").write_text("in\n")
        (client / "new" / "sub").mkdir(parents=True)
        (client / "new" / "sub" / "n").write_text("n\n")
        os.chmod(client / "keep", 0o700)
        os.unlink(client / "ln")
        os.symlink("new/sub/n", client / "ln")
        second = await inst.snapshot(ctx)
        assert store.snapshots.get(second.id).parent == first.id  # only the changes
        tree = copy_dir_for(store.root, "ctx", "", "p") / "tree"
        with store.snapshots.view(second.id) as root:
            assert _listing(root) == _listing(tree)
            assert (root / "edit.txt").read_text() == "v2 longer\n"
            assert not (root / "gone").exists()
        with store.snapshots.view(first.id) as root:  # the earlier snapshot is untouched
            assert (root / "edit.txt").read_text() == "v1\n" and (root / "gone" / "x").exists()

        # a hard-linked file among the changes: copied whole instead (links kept)
        os.link(client / "edit.txt", client / "hard")
        third = await inst.snapshot(ctx)
        assert store.snapshots.get(third.id).parent is None
        with store.snapshots.view(third.id) as root:
            assert _listing(root) == _listing(tree)
            assert os.stat(root / "hard").st_ino == os.stat(root / "edit.txt").st_ino
        results: list[Result] = [first, second, third]
        for r in results:
            await r.release()
        await results_for(store).close()
        await sessions.close()

    asyncio.run(main())
