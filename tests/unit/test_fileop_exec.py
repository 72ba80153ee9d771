"""Running FileOps on snapshots (copy driver: no root, no mounts), content keys, solver use."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from bkcore.cache.results import new_result, results_for
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.engine import Engine
from bkcore.fs import fileops
from bkcore.fs.contenthash import checksum, combine_selectors
from bkcore.fs.errors import FileOpError
from bkcore.llb import pb
from bkcore.ops import file as fileop
from bkcore.ops.file import FileOpAdapter
from bkcore.progress import SharedProgress, VertexEvent
from bkcore.solver.scheduler import Solver
from bkcore.solver.types import CacheMap, OpContext, Result, Vertex

IN = "sha256:" + "1" * 64


def make_op(actions: list[pb.FileAction], inputs: int) -> pb.Op:
    op = pb.Op(inputs=[pb.Input(digest=IN, index=i) for i in range(inputs)])
    op.file = pb.FileOp(actions=actions)
    return pb.Op().parse(bytes(op))


def mkdir(path: str, mode: int = 0o755, parents: bool = False) -> pb.FileActionMkDir:
    return pb.FileActionMkDir(path=path, mode=mode, make_parents=parents, timestamp=-1)


def mkfile(path: str, data: bytes, mode: int = 0o644) -> pb.FileActionMkFile:
    return pb.FileActionMkFile(path=path, mode=mode, data=data, timestamp=-1)


def cp(src: str, dest: str, **kw: Any) -> pb.FileActionCopy:
    base: dict[str, Any] = {"mode": -1, "timestamp": -1, "create_dest_path": True}
    base.update(kw)
    return pb.FileActionCopy(src=src, dest=dest, **base)


def act(i: int, s: int, o: int, **body: Any) -> pb.FileAction:
    return pb.FileAction(input=i, secondary_input=s, output=o, **body)


class World:
    def __init__(self, root: Path) -> None:
        self.store = CacheStore.open(root / "store", COPY)
        self.engine = Engine(
            store=self.store,
            worker=cast(Any, None),
            sessions=cast(Any, None),
            plugins=cast(Any, None),
        )

    def snapshot(self, files: dict[str, str], description: str = "test input") -> str:
        with self.store.snapshots.prepare(None, description) as m:
            root = m.mount()
            for name, text in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text(text)
            return m.commit()

    async def result(self, files: dict[str, str], description: str = "test input") -> Result:
        return await new_result(self.store, self.snapshot(files, description))

    def ids(self) -> set[str]:
        return {s.id for s in self.store.snapshots.all()}

    def tree(self, sid: str) -> dict[str, str]:
        out: dict[str, str] = {}
        with self.store.snapshots.view(sid) as root:
            for dirpath, dirnames, filenames in os.walk(root):
                rel = os.path.relpath(dirpath, root)
                for d in dirnames:
                    out[os.path.normpath(os.path.join(rel, d))] = "<dir>"
                for f in filenames:
                    out[os.path.normpath(os.path.join(rel, f))] = Path(dirpath, f).read_text()
        return out

    def ctx(self) -> OpContext:
        vertex = Vertex(digest="sha256:" + "e" * 64, op=cast(Any, None))
        progress = SharedProgress(VertexEvent(vertex.digest, "file"))
        return OpContext(vertex=vertex, progress=progress, jobs=lambda: [])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def execute(w: World, op: pb.Op, inputs: Sequence[Result]) -> list[Result]:
    return await FileOpAdapter(op, "sha256:" + "d" * 64, w.engine).exec(w.ctx(), inputs)


def test_chain_on_scratch_changes_one_snapshot_in_place(tmp_path: Path) -> None:
    async def main() -> None:
        w = World(tmp_path)
        op = make_op(
            [
                act(-1, -1, -1, mkdir=mkdir("/a/b", 0o700, parents=True)),
                act(0, -1, -1, mkfile=mkfile("/a/b/f", b"hello", 0o600)),
                act(1, -1, -1, mkfile=mkfile("/gone", b"x")),
                act(2, -1, 0, rm=pb.FileActionRm(path="/gone")),
            ],
            0,
        )
        [out] = await execute(w, op, [])
        assert w.tree(out.id) == {"a": "<dir>", "a/b": "<dir>", "a/b/f": "hello"}
        # Intermediate actions were applied in place: one snapshot, no parents.
        assert w.ids() == {out.id}
        assert w.store.snapshots.get(out.id).parent is None
        with w.store.snapshots.view(out.id) as root:
            assert (root / "a/b").stat().st_mode & 0o777 == 0o700
            assert (root / "a/b/f").stat().st_mode & 0o777 == 0o600
        assert w.store.leases.held("snapshot") == {out.id}  # only the result's lease
        await out.release()

    run(main())


def test_copy_from_a_secondary_input_onto_the_base(tmp_path: Path) -> None:
    async def main() -> None:
        w = World(tmp_path)
        base = await w.result({"etc/os": "base"})
        ctx = await w.result({"src/a.txt": "A", "src/b.md": "B", "other": "O"})
        op = make_op(
            [
                act(0, 1, -1, copy=cp("/src/a.txt", "/app/")),
                act(2, 1, 0, copy=cp("/src/*.md", "/docs/", allow_wildcard=True)),
            ],
            2,
        )
        [out] = await execute(w, op, [base, ctx])
        assert w.tree(out.id) == {
            "etc": "<dir>",
            "etc/os": "base",
            "app": "<dir>",
            "app/a.txt": "A",
            "docs": "<dir>",
            "docs/b.md": "B",
        }
        assert w.store.snapshots.get(out.id).parent == base.id
        # The inputs are untouched.
        assert w.tree(base.id) == {"etc": "<dir>", "etc/os": "base"}
        for r in (out, base, ctx):
            await r.release()

    run(main())


def test_two_outputs_and_a_shared_intermediate(tmp_path: Path) -> None:
    async def main() -> None:
        w = World(tmp_path)
        op = make_op(
            [
                act(-1, -1, -1, mkfile=mkfile("/shared", b"s")),  # used by two actions
                act(0, -1, 1, mkfile=mkfile("/one", b"1")),
                act(0, -1, -1, mkfile=mkfile("/tmp-only", b"t")),  # read as a copy source
                act(-1, 2, 0, copy=cp("/tmp-only", "/copied")),
                act(-1, -1, -1, mkfile=mkfile("/unused", b"u")),  # nothing needs it
            ],
            0,
        )
        before = w.ids()
        out0, out1 = await execute(w, op, [])
        assert w.tree(out0.id) == {"copied": "t"}
        assert w.tree(out1.id) == {"shared": "s", "one": "1"}
        # The shared intermediate stays as out1's parent; nothing else was left behind.
        shared = w.store.snapshots.get(out1.id).parent
        assert shared is not None
        assert w.ids() - before == {out0.id, out1.id, shared}
        assert w.tree(shared) == {"shared": "s"}
        await out0.release()
        await out1.release()
        assert results_for(w.store).live_refs() == 0
        assert not w.store.leases.held("snapshot")
        w.store.prune()
        assert w.ids() == before

    run(main())


def test_failure_leaves_no_snapshot_or_lease(tmp_path: Path) -> None:
    async def main() -> None:
        w = World(tmp_path)
        src = await w.result({"x": "x"})
        op = make_op(
            [
                act(-1, -1, -1, mkfile=mkfile("/f", b"f")),  # index 1, used twice: committed
                act(1, -1, 1, mkfile=mkfile("/g", b"g")),  # output 1 (never reached)
                act(1, 0, -1, copy=cp("/x", "/x")),  # index 3
                act(3, 0, 0, copy=cp("/missing", "/m")),
            ],
            1,
        )
        before = w.ids()
        with pytest.raises(FileOpError, match="copy /missing: no such file"):
            await execute(w, op, [src])
        assert w.ids() == before
        assert w.store.leases.held("snapshot") == {src.id}
        assert not [r for r in w.store.db.query("SELECT id FROM leases WHERE id LIKE 'fileop-%'")]
        await src.release()

    run(main())


def test_cancellation_removes_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = threading.Event()
    real = fileops.mkfile

    def slow_mkfile(*args: Any, **kw: Any) -> None:
        started.set()
        time.sleep(0.05)
        real(*args, **kw)

    monkeypatch.setattr(fileops, "mkfile", slow_mkfile)

    async def main() -> None:
        w = World(tmp_path)
        actions = [act(-1, -1, -1, mkfile=mkfile("/f0", b"0"))]
        actions += [
            act(k - 1, -1, 0 if k == 39 else -1, mkfile=mkfile(f"/f{k}", b"k"))
            for k in range(1, 40)
        ]
        before = w.ids()
        task = asyncio.ensure_future(execute(w, make_op(actions, 0), []))
        await asyncio.to_thread(started.wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert w.ids() == before
        assert not w.store.db.query("SELECT id FROM leases")

    run(main())


def test_cancelled_after_the_run_finished_undoes_it(tmp_path: Path) -> None:
    async def main() -> None:
        gate = threading.Event()
        undone: list[str] = []

        def work() -> str:
            gate.wait()
            return "made"

        task = asyncio.ensure_future(fileop._in_thread(work, lambda: None, undone.append))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)
        gate.set()  # the work finishes although it was cancelled
        with pytest.raises(asyncio.CancelledError):
            await task
        assert undone == ["made"]

    run(main())


def test_content_key_covers_only_the_selected_paths(tmp_path: Path) -> None:
    async def main() -> None:
        w = World(tmp_path)
        op = make_op([act(0, 1, 0, copy=cp("/src/a.txt", "/a.txt", follow_symlink=True))], 2)
        cmap, last = await FileOpAdapter(op, "sha256:" + "d" * 64, w.engine).cache_map(w.ctx(), 0)
        assert last and cmap.deps[0].compute_digest is None
        compute = cmap.deps[1].compute_digest
        assert compute is not None
        one = await w.result({"src/a.txt": "A", "other": "1"})
        two = await w.result({"src/a.txt": "A", "other": "2"})
        three = await w.result({"src/a.txt": "changed", "other": "1"})
        k1, k2, k3 = [await compute(r) for r in (one, two, three)]
        assert k1 == k2 != k3
        with w.store.snapshots.view(one.id) as root:
            expected = combine_selectors([checksum(str(root), "/src/a.txt", follow_links=True)])
        assert k1 == expected
        # Errors like BuildKit's lazy scan (conformance cases 053 and 059).
        no_parent = await w.result({"other": "1"})
        with pytest.raises(FileOpError) as info:
            await compute(no_parent)
        assert str(info.value) == (
            "failed to compute cache key: failed to calculate checksum of ref"
            f" {no_parent.id}: failed to walk /src: lstat /src: no such file or directory"
        )
        parent = await w.result({"src/b.txt": "B"})
        with pytest.raises(FileOpError, match=r'"/src/a\.txt": not found$'):
            await compute(parent)
        local = await w.result({"other": "1"}, "local source context")
        with pytest.raises(FileOpError, match=r'"/src/a\.txt": not found$'):
            await compute(local)
        for r in (one, two, three, no_parent, parent, local):
            await r.release()

    run(main())


def test_root_of_a_local_source_ignores_its_own_metadata(tmp_path: Path) -> None:
    async def main() -> None:
        w = World(tmp_path)
        op = make_op([act(0, 1, 0, copy=cp("/", "/all"))], 2)
        cmap, _ = await FileOpAdapter(op, "sha256:" + "d" * 64, w.engine).cache_map(w.ctx(), 0)
        compute = cmap.deps[1].compute_digest
        assert compute is not None
        keys = []
        for mode in (0o755, 0o700):
            for desc in ("local source context", "exec output"):
                res = await w.result({"f": "x"}, desc)
                with w.store.snapshots.view(res.id) as root:
                    os.chmod(root, mode)
                keys.append(await compute(res))
                await res.release()
        local_755, exec_755, local_700, exec_700 = keys
        assert local_755 == local_700
        assert exec_755 != exec_700

    run(main())


class SourceOp:
    """A root op producing a fixed snapshot (stands in for a local source)."""

    def __init__(self, w: World, files: dict[str, str], name: str) -> None:
        self.w, self.files, self.name, self.runs = w, files, name, 0

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def worker(self) -> str:
        return "local"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        return CacheMap(digest="random:" + self.name), True

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        self.runs += 1
        return [await self.w.result(self.files)]


class Counting(FileOpAdapter):
    runs = 0

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        type(self).runs += 1
        return await super().exec(ctx, inputs)


def test_solver_caches_across_solvers_by_content(tmp_path: Path) -> None:
    async def build(w: World, files: dict[str, str], name: str) -> dict[str, str]:
        base = Vertex(digest="sha256:" + "b" * 64, op=SourceOp(w, {"etc/os": "base"}, "b"))
        ctx = Vertex(digest="sha256:" + name * 64, op=SourceOp(w, files, name))
        op = make_op([act(0, 1, 0, copy=cp("/a.txt", "/app/a.txt", follow_symlink=True))], 2)
        vtx = Vertex(
            digest="sha256:" + "c" * 64,
            op=Counting(op, "sha256:" + "c" * 64, w.engine),
            inputs=((base, 0), (ctx, 0)),
        )
        results = results_for(w.store)
        async with Solver(w.store.keys, results) as solver:
            async with solver.job() as job:
                res = await solver.solve(vtx, job)
                tree = w.tree(res.id)
                await res.release()
        return tree

    async def main() -> None:
        w = World(tmp_path)
        t1 = await build(w, {"a.txt": "A", "b.txt": "1"}, "1")
        assert Counting.runs == 1
        assert t1 == {"etc": "<dir>", "etc/os": "base", "app": "<dir>", "app/a.txt": "A"}
        # Another context whose a.txt is the same: the copy is found by its content key.
        t2 = await build(w, {"a.txt": "A", "b.txt": "2"}, "2")
        assert Counting.runs == 1 and t2 == t1
        t3 = await build(w, {"a.txt": "new", "b.txt": "2"}, "3")
        assert Counting.runs == 2 and t3["app/a.txt"] == "new"
        assert results_for(w.store).live_refs() == 0

    run(main())


def test_ops_on_one_snapshot_read_each_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bkcore.fs import contenthash

    reads: list[str] = []
    real = contenthash._hash_file

    def counting(h: Any, host: str, size: int) -> None:
        reads.append(os.path.basename(host))
        real(h, host, size)

    monkeypatch.setattr(contenthash, "_hash_file", counting)

    async def main() -> None:
        w = World(tmp_path)
        ctx = await w.result({"src/a.txt": "A", "src/b.txt": "B"})
        keys = []
        for src in ("/src", "/src/a.txt", "/src"):
            op = make_op([act(0, 1, 0, copy=cp(src, "/x"))], 2)
            cmap, _ = await FileOpAdapter(op, "sha256:" + "d" * 64, w.engine).cache_map(w.ctx(), 0)
            compute = cmap.deps[1].compute_digest
            assert compute is not None
            keys.append(await compute(ctx))
        assert keys[0] == keys[2] != keys[1]
        assert sorted(reads) == ["a.txt", "b.txt"]
        await ctx.release()

    run(main())
