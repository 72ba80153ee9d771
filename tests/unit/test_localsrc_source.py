"""local:// source: attrs, cache key strings, sync into per-copy dirs, content-addressed
snapshots (no root, copy snapshot driver)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bkcore.cache.results import SnapshotResults, results_for
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.errors import SourceError
from bkcore.fs.contenthash import ContentHasher
from bkcore.progress import SharedProgress, StatusEvent, VertexEvent
from bkcore.session.manager import SessionManager
from bkcore.session.session import Session
from bkcore.sessions.filesync import FileSyncProvider
from bkcore.solver.types import JobInfo, Result
from bkcore.sources.local.source import (
    LocalInstance,
    LocalSource,
    cache_key_string,
    copy_dir_for,
    parse,
    tree_identity,
)


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
        return [JobInfo(f"job{i}", {"session": s}) for i, s in enumerate(self.session_ids)]


def _instance(name: str = "ctx", **attrs: str) -> LocalInstance:
    return LocalSource().identify(f"local://{name}", attrs, None)


def _files(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            out[rel] = ("->" + os.readlink(p)) if os.path.islink(p) else Path(p).read_bytes()
    return out


def _view_files(store: CacheStore, result: Result) -> dict[str, bytes | str]:
    with store.snapshots.view(result.id) as root:
        return _files(root)


def _setup(tmp_path: Path) -> tuple[CacheStore, SessionManager, Path]:
    store = CacheStore.open(tmp_path / "root", COPY)
    client = tmp_path / "client"
    client.mkdir()
    (client / "a.txt").write_text("alpha\n")
    (client / "sub").mkdir()
    (client / "sub" / "b.txt").write_text("beta\n")
    os.symlink("a.txt", client / "link")
    (client / "junk.tmp").write_text("ignored\n")
    return store, SessionManager(), client


def _session(sessions: SessionManager, dirs: dict[str, str], shared_key: str = "k1") -> Session:
    session = Session(name="test", shared_key=shared_key)
    session.allow(FileSyncProvider(dirs))
    sessions.attach(session)
    return session


# -- parsing and keys --------------------------------------------------------------------------


def test_parse_attrs() -> None:
    spec = parse(
        "local://context",
        {
            "local.session": "p:abc",
            "local.includepattern": '["a","b/*"]',
            "local.excludepatterns": '["*.tmp"]',
            "local.followpaths": '["x"]',
            "local.sharedkeyhint": "hint",
            "local.differ": "none",
            "local.unique": "u",
        },
    )
    assert spec.name == "context" and spec.session == "p:abc"
    assert spec.includes == ("a", "b/*") and spec.excludes == ("*.tmp",)
    assert spec.follow_paths == ("x",) and spec.shared_key_hint == "hint"
    assert spec.differ == "none"
    plain = parse("local://c", {"local.differ": ""})
    assert plain.includes is None and plain.excludes is None and plain.differ == "metadata"


@pytest.mark.parametrize(
    ("identifier", "attrs", "message"),
    [
        ("local://", {}, "the name is empty"),
        ("git://x", {}, "expected local://NAME"),
        ("local://c", {"local.includepattern": "a,b"}, "JSON list of strings"),
        ("local://c", {"local.excludepatterns": "[1, 2]"}, "JSON list of strings"),
        ("local://c", {"local.differ": "content"}, "expected metadata or none"),
    ],
)
def test_bad_input_is_a_source_error(identifier: str, attrs: dict[str, str], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        LocalSource().identify(identifier, attrs, None)


def test_key_string_is_session_prefixed_go_json_digest() -> None:
    spec = parse("local://context", {"local.includepattern": '["a<b"]'})
    key = cache_key_string(spec, "sid1")
    # Go: nil slices are null, "<" is escaped as \u003c, fields in struct order.
    doc = (
        '{"SessionID":"sid1","IncludePatterns":["a\\u003cb"],'
        '"ExcludePatterns":null,"FollowPaths":null}'
    )
    assert key == "session:context:sha256:" + hashlib.sha256(doc.encode()).hexdigest()
    assert json.loads(doc)["IncludePatterns"] == ["a<b"]
    assert cache_key_string(spec, "sid2") != key  # the session counts


def test_cache_key_uses_local_session_first_then_jobs() -> None:
    async def main() -> None:
        inst = _instance(**{"local.session": "prefix:given"})
        ctx = _Ctx(engine=None, session_ids=["jobsession"])
        key, last = await inst.cache_key(ctx, 0)
        assert last and key == cache_key_string(inst.spec, "prefix:given")  # as written
        assert inst.spec.dir_name == "prefix-ctx" and _instance().spec.dir_name == "ctx"
        inst2 = _instance()
        key2, _ = await inst2.cache_key(ctx, 0)
        assert key2 == cache_key_string(inst2.spec, "jobsession")
        with pytest.raises(SourceError, match="no session"):
            await inst2.cache_key(_Ctx(engine=None, session_ids=[]), 0)

    asyncio.run(main())


# -- fetching ------------------------------------------------------------------------------------


def test_fetch_syncs_and_commits_a_local_snapshot(tmp_path: Path) -> None:
    async def main() -> None:
        store, sessions, client = _setup(tmp_path)
        session = _session(sessions, {"ctx": str(client)})
        ctx = _Ctx(_Engine(store, sessions), [session.id])
        inst = _instance(**{"local.excludepatterns": '["*.tmp"]', "local.sharedkeyhint": "h"})
        result = await inst.snapshot(ctx)
        try:
            files = _view_files(store, result)
            assert files == {
                "a.txt": b"alpha\n",
                "sub/": "dir",
                "sub/b.txt": b"beta\n",
                "link": "->a.txt",
            }
            info = store.snapshots.get(result.id)
            assert info.state == "committed" and info.description == "local source for ctx"
            # the persistent copy lives under the store root, keyed by name:hint:shared key
            base = copy_dir_for(store.root, "ctx", "h", "k1")
            assert (base / "tree" / "a.txt").read_text() == "alpha\n"
            assert (base / "index.json").is_file()
            events = [e for e in ctx.progress.history() if isinstance(e, StatusEvent)]
            assert events and events[-1].id == "transferring ctx:" and events[-1].completed
            assert events[-1].current == len("alpha\n") + len("beta\n")
        finally:
            await result.release()
        await results_for(store).close()
        await sessions.close()

    asyncio.run(main())


def test_unchanged_tree_reuses_its_snapshot_and_changes_make_a_new_one(tmp_path: Path) -> None:
    async def main() -> None:
        store, sessions, client = _setup(tmp_path)
        session = _session(sessions, {"ctx": str(client)})
        ctx = _Ctx(_Engine(store, sessions), [session.id])
        inst = _instance()
        first = await inst.snapshot(ctx)
        again = await inst.snapshot(ctx)
        assert again.id == first.id  # content-addressed: no new copy
        (client / "a.txt").write_text("ALPHA\n")
        changed = await inst.snapshot(ctx)
        assert changed.id != first.id
        assert _view_files(store, changed)["a.txt"] == b"ALPHA\n"
        assert _view_files(store, first)["a.txt"] == b"alpha\n"  # old snapshot untouched
        (client / "a.txt").write_text("alpha\n")
        os.utime(client / "a.txt", ns=(0, os.stat(client / "sub" / "b.txt").st_mtime_ns))
        back = await inst.snapshot(ctx)
        # same bytes but another mtime: a different tree, so another snapshot
        assert back.id not in (first.id, changed.id)
        assert os.stat(client / "a.txt").st_mtime_ns == _mtime(store, back, "a.txt")
        for r in (first, again, changed, back):
            await r.release()
        await results_for(store).close()
        await sessions.close()

    asyncio.run(main())


def _mtime(store: CacheStore, result: Result, rel: str) -> int:
    with store.snapshots.view(result.id) as root:
        return os.lstat(root / rel).st_mtime_ns


def test_same_content_in_two_projects_shares_one_snapshot_but_not_the_copy(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        store, sessions, client = _setup(tmp_path)
        other = tmp_path / "other"
        other.mkdir()
        (other / "x").write_text("other project\n")
        s1 = _session(sessions, {"ctx": str(client)}, shared_key="project1")
        s2 = _session(sessions, {"ctx": str(other)}, shared_key="project2")
        engine = _Engine(store, sessions)
        r1 = await _instance().snapshot(_Ctx(engine, [s1.id]))
        r2 = await _instance().snapshot(_Ctx(engine, [s2.id]))
        r1b = await _instance().snapshot(_Ctx(engine, [s1.id]))
        # BuildKit gives both one dir (empty shared key); here each project keeps its own copy
        assert r1.id != r2.id and r1b.id == r1.id
        assert _view_files(store, r2) == {"x": b"other project\n"}
        assert (copy_dir_for(store.root, "ctx", "", "project1") / "tree" / "a.txt").exists()
        assert (copy_dir_for(store.root, "ctx", "", "project2") / "tree" / "x").exists()
        for r in (r1, r2, r1b):
            await r.release()
        await results_for(store).close()
        await sessions.close()

    asyncio.run(main())


def test_pruned_snapshot_is_made_again(tmp_path: Path) -> None:
    async def main() -> None:
        store, sessions, client = _setup(tmp_path)
        session = _session(sessions, {"ctx": str(client)})
        ctx = _Ctx(_Engine(store, sessions), [session.id])
        first = await _instance().snapshot(ctx)
        first_id = first.id
        await first.release()
        assert store.prune() > 0 and not store.snapshots.exists(first_id)
        again = await _instance().snapshot(ctx)
        assert again.id != first_id and store.snapshots.exists(again.id)
        assert _view_files(store, again)["sub/b.txt"] == b"beta\n"
        await again.release()
        await results_for(store).close()
        await sessions.close()

    asyncio.run(main())


def test_snapshot_checksums_like_buildkit_local_context(tmp_path: Path) -> None:
    async def main() -> None:
        store, sessions, client = _setup(tmp_path)
        session = _session(sessions, {"ctx": str(client)})
        ctx = _Ctx(_Engine(store, sessions), [session.id])
        result = await _instance().snapshot(ctx)
        with store.snapshots.view(result.id) as root:
            digest = ContentHasher(str(root), empty_root_header=True).checksum(
                "/", follow_links=True
            )
        os.chmod(client, 0o700)  # the root's own metadata never counts
        (client / "sub" / "b.txt").write_text("beta\n")  # same content, new mtime
        again = await _instance().snapshot(ctx)
        with store.snapshots.view(again.id) as root:
            digest2 = ContentHasher(str(root), empty_root_header=True).checksum(
                "/", follow_links=True
            )
        assert digest2 == digest
        await result.release()
        await again.release()
        await results_for(store).close()
        await sessions.close()

    asyncio.run(main())


def test_session_errors_become_source_errors(tmp_path: Path) -> None:
    async def main() -> None:
        store, sessions, client = _setup(tmp_path)
        session = _session(sessions, {"ctx": str(client)})
        ctx = _Ctx(_Engine(store, sessions), [session.id])
        with pytest.raises(SourceError, match="no access allowed to dir"):
            await _instance("missing").snapshot(ctx)
        with pytest.raises(SourceError, match="no session"):
            await _instance().snapshot(_Ctx(_Engine(store, sessions), []))
        results: SnapshotResults = results_for(store)
        assert results.live_refs() == 0
        assert [s for s in store.snapshots.all() if s.state == "active"] == []
        await results.close()
        await sessions.close()

    asyncio.run(main())


def test_tree_identity_covers_content_metadata_and_uses_known_digests(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "f").write_text("one")
    base = tree_identity(str(root))
    sha = hashlib.sha256(b"one").hexdigest()
    assert tree_identity(str(root), {"f": sha}) == base
    assert tree_identity(str(root), {"f": "0" * 64}) != base  # the given digest is used
    os.chmod(root / "f", 0o600)
    assert tree_identity(str(root)) != base
    os.chmod(root / "f", 0o644)
    mode_back = tree_identity(str(root))
    os.utime(root / "f", ns=(1, 1))
    assert tree_identity(str(root)) != mode_back


def test_concurrent_fetches_of_one_copy_are_serialised(tmp_path: Path) -> None:
    async def main() -> None:
        store, sessions, client = _setup(tmp_path)
        session = _session(sessions, {"ctx": str(client)})
        ctx = _Ctx(_Engine(store, sessions), [session.id])
        results = await asyncio.gather(*(_instance().snapshot(ctx) for _ in range(4)))
        assert len({r.id for r in results}) == 1
        assert _view_files(store, results[0])["a.txt"] == b"alpha\n"
        assert len(store.snapshots.all()) == 1
        for r in results:
            await r.release()
        await results_for(store).close()
        await sessions.close()

    asyncio.run(main())


def test_cancelled_fetch_leaves_nothing_and_the_copy_usable(tmp_path: Path) -> None:
    async def main() -> None:
        store, sessions, client = _setup(tmp_path)
        for i in range(200):
            (client / f"f{i}").write_bytes(os.urandom(20_000))
        session = _session(sessions, {"ctx": str(client)})
        ctx = _Ctx(_Engine(store, sessions), [session.id])
        task = asyncio.ensure_future(_instance().snapshot(ctx))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [s for s in store.snapshots.all() if s.state == "active"] == []
        assert results_for(store).live_refs() == 0
        result = await asyncio.wait_for(_instance().snapshot(ctx), 30)  # lock was released
        files = _view_files(store, result)
        assert files["f199"] == (client / "f199").read_bytes() and files["a.txt"] == b"alpha\n"
        await result.release()
        await results_for(store).close()
        await sessions.close()

    asyncio.run(main())
