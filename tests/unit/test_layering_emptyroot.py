"""One rule for how content keys treat a snapshot's root: ``uses_empty_root_header``.

A synced local source's root directory metadata (the client directory's mode, owner and
mtime) never counts in a content key; file ops and exec mounts must agree on that.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, cast

import pytest

from bkcore.cache.results import LOCAL_SOURCE_DESCRIPTION, new_result, uses_empty_root_header
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.engine import Engine
from bkcore.errors import CacheError
from bkcore.llb import pb
from bkcore.llb.digest import marshal
from bkcore.ops.exec import ExecOpAdapter
from bkcore.ops.file import FileOpAdapter
from bkcore.progress import SharedProgress, VertexEvent
from bkcore.solver.types import ComputeDigest, OpContext, Result, Vertex


def _store(tmp_path: Path) -> CacheStore:
    return CacheStore.open(tmp_path / "store", COPY)


def _snapshot(store: CacheStore, description: str, mode: int) -> str:
    with store.snapshots.prepare(None, description) as m:
        root = m.mount()
        (root / "src").mkdir()
        (root / "src" / "a.txt").write_text("alpha\n")
        os.chmod(root, mode)
        return m.commit()


def _engine(store: CacheStore) -> Engine:
    return Engine(
        store=store,
        worker=cast(Any, None),
        sessions=cast(Any, None),
        plugins=cast(Any, None),
    )


def _ctx(digest: str) -> OpContext:
    vertex = Vertex(digest=digest, op=cast(Any, None))
    return OpContext(vertex, SharedProgress(VertexEvent(digest, "x")), lambda: [])


async def _exec_key(engine: Engine) -> ComputeDigest:
    """The content-key function of a RUN with its input mounted read-only at /ctx."""
    exec_op = pb.ExecOp(
        meta=pb.Meta(args=["true"]),
        mounts=[
            pb.Mount(input=-1, dest="/", output=0),
            pb.Mount(input=0, dest="/ctx", output=-1, readonly=True),
        ],
    )
    op = pb.Op().parse(marshal(pb.Op(inputs=[pb.Input(digest="sha256:" + "a" * 64)], exec=exec_op)))
    adapter = ExecOpAdapter(op, "sha256:" + "d" * 64, engine)
    cmap, _ = await adapter.cache_map(_ctx(adapter.digest), 0)
    compute = cmap.deps[0].compute_digest
    assert compute is not None
    return compute


async def _file_key(engine: Engine) -> ComputeDigest:
    """The content-key function of a COPY / /all from input 1 onto input 0."""
    copy = pb.FileActionCopy(src="/", dest="/all", mode=-1, timestamp=-1)
    copy.follow_symlink = True
    action = pb.FileAction(input=0, secondary_input=1, output=0, copy=copy)
    inputs = [pb.Input(digest="sha256:" + c * 64) for c in "ab"]
    op = pb.Op().parse(marshal(pb.Op(inputs=inputs, file=pb.FileOp(actions=[action]))))
    adapter = FileOpAdapter(op, "sha256:" + "e" * 64, engine)
    cmap, _ = await adapter.cache_map(_ctx("sha256:" + "e" * 64), 0)
    compute = cmap.deps[1].compute_digest
    assert compute is not None
    return compute


def test_local_source_snapshots_are_recognised_by_their_description(tmp_path: Path) -> None:
    store = _store(tmp_path)
    local = _snapshot(store, "local source for context", 0o755)
    built = _snapshot(store, "exec output", 0o755)
    named_like = _snapshot(store, "copy of a local source", 0o755)
    assert LOCAL_SOURCE_DESCRIPTION == "local source"
    assert uses_empty_root_header(store, local)
    assert not uses_empty_root_header(store, built)
    assert not uses_empty_root_header(store, named_like)  # a prefix, not a substring
    with pytest.raises(CacheError):
        uses_empty_root_header(store, "no-such-snapshot")


def test_exec_content_key_ignores_a_local_source_root_like_file_ops(tmp_path: Path) -> None:
    """Before the shared helper, exec keys of a local source changed with its root's mode."""

    async def main() -> None:
        store = _store(tmp_path)
        engine = _engine(store)
        exec_key, file_key = await _exec_key(engine), await _file_key(engine)
        keys: dict[tuple[str, int], tuple[str | None, str | None]] = {}
        results: list[Result] = []
        for desc in ("local source for context", "exec output"):
            for mode in (0o755, 0o700):
                res = await new_result(store, _snapshot(store, desc, mode))
                results.append(res)
                keys[desc, mode] = (await exec_key(res), await file_key(res))
        for res in results:
            await res.release()
        local_755, local_700 = (
            keys["local source for context", 0o755],
            keys["local source for context", 0o700],
        )
        built_755, built_700 = keys["exec output", 0o755], keys["exec output", 0o700]
        # exec and file ops: a local source's root mode never changes the key...
        assert local_755[0] == local_700[0]
        assert local_755[1] == local_700[1]
        # ...while any other snapshot's root metadata is part of its content
        assert built_755[0] != built_700[0]
        assert built_755[1] != built_700[1]
        # and the two treat the same root the same way (the header is the one difference)
        assert local_755[0] != built_755[0]

    asyncio.run(main())
