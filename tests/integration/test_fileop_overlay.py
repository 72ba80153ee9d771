"""FileOps on real overlayfs snapshots as root: owners, views, mounts left behind, solver."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from bkcore.cache.results import new_result, results_for
from bkcore.cache.snapshots import OVERLAY, detect_driver
from bkcore.cache.store import CacheStore
from bkcore.engine import Engine
from bkcore.fs.errors import FileOpError
from bkcore.llb import pb
from bkcore.ops.file import FileOpAdapter
from bkcore.progress import SharedProgress, VertexEvent
from bkcore.solver.scheduler import Solver
from bkcore.solver.types import CacheMap, OpContext, Result, Vertex

pytestmark = pytest.mark.integration

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:3456:\n"


@pytest.fixture
def store(tmp_path: Path) -> CacheStore:
    if os.geteuid() != 0:
        pytest.skip("overlay snapshots need root")
    if detect_driver(tmp_path) != OVERLAY:
        pytest.skip("overlay mounts do not work on this file system")
    return CacheStore.open(tmp_path / "store", OVERLAY)


def make_op(actions: list[pb.FileAction], inputs: int) -> pb.Op:
    op = pb.Op(inputs=[pb.Input(digest="sha256:" + "1" * 64, index=i) for i in range(inputs)])
    op.file = pb.FileOp(actions=actions)
    return pb.Op().parse(bytes(op))


def act(i: int, s: int, o: int, **body: Any) -> pb.FileAction:
    return pb.FileAction(input=i, secondary_input=s, output=o, **body)


def by_name(name: str, index: int) -> pb.UserOpt:
    return pb.UserOpt(by_name=pb.NamedUserOpt(name=name, input=index))


def engine(store: CacheStore) -> Engine:
    none = cast(Any, None)
    return Engine(store=store, worker=none, sessions=none, plugins=none)


def ctx() -> OpContext:
    vertex = Vertex(digest="sha256:" + "e" * 64, op=cast(Any, None))
    progress = SharedProgress(VertexEvent(vertex.digest, "file"))
    return OpContext(vertex=vertex, progress=progress, jobs=lambda: [])


def snapshot(store: CacheStore, files: dict[str, str], parent: str | None = None) -> str:
    with store.snapshots.prepare(parent, "test input") as m:
        root = m.mount()
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        return m.commit()


async def execute(store: CacheStore, op: pb.Op, inputs: Sequence[Result]) -> list[Result]:
    return await FileOpAdapter(op, "sha256:" + "d" * 64, engine(store)).exec(ctx(), inputs)


def stat_of(store: CacheStore, sid: str, path: str) -> os.stat_result:
    with store.snapshots.view(sid) as root:
        return os.lstat(root / path.lstrip("/"))


def test_owners_by_name_and_id_on_overlay(store: CacheStore) -> None:
    async def main() -> None:
        users = await new_result(store, snapshot(store, {"etc/passwd": PASSWD, "etc/group": GROUP}))
        src = await new_result(store, snapshot(store, {"a.txt": "A"}))
        copy = pb.FileActionCopy(
            src="/a.txt",
            dest="/a.txt",
            mode=-1,
            timestamp=-1,
            create_dest_path=True,
            owner=pb.ChownOpt(user=by_name("app", 0)),
        )
        mkdir = pb.FileActionMkDir(
            path="/d",
            mode=0o750,
            timestamp=-1,
            owner=pb.ChownOpt(user=pb.UserOpt(by_id=77), group=by_name("staff", 0)),
        )
        mkfile = pb.FileActionMkFile(
            path="/d/f",
            mode=0o640,
            data=b"x",
            timestamp=-1,
            owner=pb.ChownOpt(user=pb.UserOpt(by_id=5)),
        )
        op = make_op(
            [act(0, 1, -1, copy=copy), act(2, -1, -1, mkdir=mkdir), act(3, -1, 0, mkfile=mkfile)],
            2,
        )
        [out] = await execute(store, op, [users, src])
        a = stat_of(store, out.id, "/a.txt")
        assert (a.st_uid, a.st_gid) == (1234, 2345)  # primary group from /etc/passwd
        d = stat_of(store, out.id, "/d")
        assert (d.st_uid, d.st_gid, d.st_mode & 0o777) == (77, 3456, 0o750)
        f = stat_of(store, out.id, "/d/f")
        assert (f.st_uid, f.st_gid, f.st_mode & 0o777) == (5, 5, 0o640)
        assert store.snapshots.leftover_mounts() == []
        for r in (out, users, src):
            await r.release()

    asyncio.run(main())


def test_name_forms_like_conformance_case_011(store: CacheStore) -> None:
    def cp(dest: str, user: pb.UserOpt | None, group: pb.UserOpt | None) -> pb.FileActionCopy:
        owner = pb.ChownOpt()
        if user is not None:
            owner.user = user
        if group is not None:
            owner.group = group
        return pb.FileActionCopy(src="/c", dest=dest, mode=-1, create_dest_path=True, owner=owner)

    async def main() -> None:
        passwd = PASSWD + "svc:x:2001:3003::/srv:/bin/sh\n"
        group = GROUP + "extra:x:4004:app\n"
        base = await new_result(store, snapshot(store, {"etc/passwd": passwd, "etc/group": group}))
        src = await new_result(store, snapshot(store, {"c": "c"}))
        cases = {
            "/by-user-name": (by_name("svc", 0), None, (2001, 3003)),
            "/user-group-names": (by_name("svc", 0), by_name("extra", 0), (2001, 4004)),
            "/uid-only": (pb.UserOpt(by_id=2001), None, (2001, 2001)),
            "/unknown-user": (by_name("no-such-user", 0), None, (0, 0)),
            "/unknown-group": (by_name("svc", 0), by_name("no-such-group", 0), (2001, 3003)),
            "/group-only": (None, by_name("extra", 0), (0, 4004)),
            "/numeric-name": (by_name("2001", 0), None, (0, 0)),  # names are never numbers
        }
        actions = []
        for k, (dest, (user, grp, _ids)) in enumerate(cases.items()):
            last = k == len(cases) - 1
            actions.append(
                act(0 if k == 0 else 1 + k, 1, 0 if last else -1, copy=cp(dest, user, grp))
            )
        [out] = await execute(store, make_op(actions, 2), [base, src])
        for dest, (_u, _g, ids) in cases.items():
            st = stat_of(store, out.id, dest)
            assert (st.st_uid, st.st_gid) == ids, dest
        # No /etc/passwd in the named input: also not found, so root.
        [out2] = await execute(
            store, make_op([act(0, 1, 0, copy=cp("/x", by_name("svc", 1), None))], 2), [base, src]
        )
        st = stat_of(store, out2.id, "/x")
        assert (st.st_uid, st.st_gid) == (0, 0)
        for r in (out, out2, base, src):
            await r.release()

    asyncio.run(main())


def test_failure_leaves_no_mount_or_snapshot(store: CacheStore) -> None:
    async def main() -> None:
        base = await new_result(store, snapshot(store, {"a": "a"}))
        before = {s.id for s in store.snapshots.all()}
        op = make_op(
            [
                act(0, -1, -1, mkfile=pb.FileActionMkFile(path="/f", mode=0o644, data=b"f")),
                act(1, 1, -1, copy=pb.FileActionCopy(src="/f", dest="/g", mode=-1)),
                act(2, 0, 0, copy=pb.FileActionCopy(src="/missing", dest="/m", mode=-1)),
            ],
            1,
        )
        with pytest.raises(FileOpError, match="copy /missing: no such file"):
            await execute(store, op, [base])
        assert {s.id for s in store.snapshots.all()} == before
        assert store.snapshots.leftover_mounts() == []
        assert not store.db.query("SELECT id FROM leases WHERE id LIKE 'fileop-%'")
        await base.release()

    asyncio.run(main())


def test_layers_stack_and_outputs_share_a_parent(store: CacheStore) -> None:
    async def main() -> None:
        base_id = snapshot(store, {"base": "b"})
        base = await new_result(store, snapshot(store, {"upper": "u"}, parent=base_id))
        op = make_op(
            [
                act(0, -1, -1, rm=pb.FileActionRm(path="/base")),
                act(1, -1, 1, mkfile=pb.FileActionMkFile(path="/x", mode=0o644, data=b"x")),
                act(1, 1, 0, copy=pb.FileActionCopy(src="/upper", dest="/copy", mode=-1)),
            ],
            1,
        )
        out0, out1 = await execute(store, op, [base])
        for out in (out0, out1):
            with store.snapshots.view(out.id) as root:
                names = sorted(os.listdir(root))
            assert "base" not in names and "upper" in names
        with store.snapshots.view(out0.id) as root:
            assert sorted(os.listdir(root)) == ["copy", "upper"]
        parent = store.snapshots.get(out0.id).parent
        assert parent is not None and parent == store.snapshots.get(out1.id).parent
        assert store.snapshots.get(parent).parent == base.id
        assert store.snapshots.leftover_mounts() == []
        for r in (out0, out1, base):
            await r.release()

    asyncio.run(main())


class Root:
    def __init__(self, store: CacheStore, files: dict[str, str], name: str) -> None:
        self.store, self.files, self.name = store, files, name

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def worker(self) -> str:
        return "local"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        return CacheMap(digest="random:" + self.name), True

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        return [await new_result(self.store, snapshot(self.store, self.files))]


def test_second_process_style_solve_is_cached(store: CacheStore, tmp_path: Path) -> None:
    copy = pb.FileActionCopy(src="/a", dest="/a", mode=-1, follow_symlink=True)
    op = make_op([act(-1, 0, 0, copy=copy)], 1)

    async def solve(files: dict[str, str], name: str) -> tuple[str, bool]:
        src = Vertex(digest="sha256:" + name * 64, op=Root(store, files, name))
        adapter = FileOpAdapter(op, "sha256:" + "c" * 64, engine(store))
        ran = False
        real = adapter.exec

        async def exec_spy(c: OpContext, inputs: Sequence[Result]) -> list[Result]:
            nonlocal ran
            ran = True
            return await real(c, inputs)

        adapter.exec = exec_spy  # type: ignore[method-assign,assignment]
        vtx = Vertex(digest="sha256:" + "c" * 64, op=adapter, inputs=((src, 0),))
        async with Solver(store.keys, results_for(store)) as solver:
            async with solver.job() as job:
                res = await solver.solve(vtx, job)
                with store.snapshots.view(res.id) as root:
                    text = (root / "a").read_text()
                await res.release()
        await results_for(store).close()
        return text, ran

    assert asyncio.run(solve({"a": "1", "b": "1"}, "1")) == ("1", True)
    # A new event loop and result store (like a new process); b.txt changed only.
    reopened = CacheStore.open(tmp_path / "store")
    try:
        store = reopened
        assert asyncio.run(solve({"a": "1", "b": "2"}, "2")) == ("1", False)
        assert asyncio.run(solve({"a": "2", "b": "2"}, "3")) == ("2", True)
        assert store.snapshots.leftover_mounts() == []
    finally:
        reopened.close()


def test_empty_owner_means_root_and_no_owner_keeps_the_source_owner(store: CacheStore) -> None:
    async def main() -> None:
        with store.snapshots.prepare(None, "owned source") as m:
            (m.mount() / "f").write_text("f")
            os.chown(m.mount() / "f", 1234, 2345)
            src = await new_result(store, m.commit())
        present = pb.ChownOpt()
        present._serialized_on_wire = True  # a Go client's &ChownOpt{}
        keep = pb.FileActionCopy(src="/f", dest="/keep", mode=-1)
        root = pb.FileActionCopy(src="/f", dest="/root", mode=-1, owner=present)
        op = pb.Op().parse(bytes(make_op([act(-1, 0, -1, copy=keep), act(1, 0, 0, copy=root)], 1)))
        [out] = await execute(store, op, [src])
        k, r = stat_of(store, out.id, "/keep"), stat_of(store, out.id, "/root")
        assert (k.st_uid, k.st_gid) == (1234, 2345)
        assert (r.st_uid, r.st_gid) == (0, 0)
        for res in (out, src):
            await res.release()

    asyncio.run(main())


def test_symlinks_never_lead_out_of_the_snapshots(store: CacheStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")

    async def main() -> None:
        with store.snapshots.prepare(None, "hostile base") as m:
            root = m.mount()
            os.symlink(str(outside), root / "abs")  # absolute: means /<outside> inside
            os.symlink("../../../../../../" + str(outside).lstrip("/"), root / "rel")
            base = await new_result(store, m.commit())
        with store.snapshots.prepare(None, "hostile source") as m:
            root = m.mount()
            os.symlink(str(outside / "secret"), root / "s")
            (root / "d").mkdir()
            os.symlink("../../../../../../" + str(outside / "secret").lstrip("/"), root / "d/s")
            src = await new_result(store, m.commit())
        mk = pb.FileActionMkFile(path="/abs/new", mode=0o644, data=b"in", timestamp=-1)
        mkabs = pb.FileActionMkDir(path="/abs", mode=0o755, timestamp=-1, make_parents=True)
        md = pb.FileActionMkDir(path="/rel/dir", mode=0o755, timestamp=-1, make_parents=True)
        for src_path in ("/s", "/d/s"):
            # The followed links name paths that do not exist inside the source snapshot.
            follow = pb.FileActionCopy(src=src_path, dest="/copied", mode=-1, follow_symlink=True)
            with pytest.raises(FileOpError, match="no such file"):
                await execute(store, make_op([act(0, 1, 0, copy=follow)], 2), [base, src])
        ok = make_op(
            [
                act(0, -1, -1, mkdir=mkabs),
                act(1, -1, -1, mkfile=mk),
                act(2, -1, 0, mkdir=md),
            ],
            1,
        )
        [out] = await execute(store, ok, [base])
        with store.snapshots.view(out.id) as root:
            inside = root / str(outside).lstrip("/")
            assert (inside / "new").read_text() == "in"
            assert (inside / "dir").is_dir()
            assert os.readlink(root / "abs") == str(outside)  # the link itself is kept
        assert sorted(os.listdir(outside)) == ["secret"]
        for r in (out, base, src):
            await r.release()

    asyncio.run(main())
