"""FileSync over the in-process transport: tree fidelity, incremental re-sync, patterns."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from bkcore.errors import SessionError
from bkcore.session import CallError, Handler, ServerStream, Session, Status
from bkcore.session.filesync import DIFFCOPY, SyncResult, default_index_path, sync_dir
from bkcore.session.filesync.packets import Packet, PacketType, Stat
from bkcore.session.filesync.walker import RACY_NS
from bkcore.sessions.filesync import FileSyncProvider


def make_tree(root: Path) -> None:
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "exec.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "exec.sh", 0o755)
    (root / "dir" / "b.bin").write_bytes(os.urandom(100_000))
    (root / "dir" / "sub" / "c.txt").write_bytes(b"c" * 10)
    os.symlink("../a.txt", root / "dir" / "link")
    os.symlink("/nonexistent/abs", root / "dangling")
    os.link(root / "a.txt", root / "dir" / "hard")
    os.chmod(root / "dir" / "sub", 0o750)
    os.mkfifo(root / "fifo", 0o640)
    os.setxattr(root / "dir" / "sub" / "c.txt", "user.origin", b"test")
    # make every file old enough that its change token is trusted
    old = 1_600_000_000_000_000_000
    for p in [*root.rglob("*")]:
        os.utime(p, ns=(old, old), follow_symlinks=False)
    settle()


def settle() -> None:
    """Let ctimes age past the racy window (a file changed within a timestamp tick of the
    walk gets no change token and is verified by hash instead)."""
    time.sleep(RACY_NS / 1e9 + 0.01)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        s = p.lstat()
        if stat.S_ISLNK(s.st_mode):
            out[rel] = ("link", os.readlink(p), s.st_mtime_ns)
        elif stat.S_ISDIR(s.st_mode):
            out[rel] = ("dir", stat.S_IMODE(s.st_mode), s.st_mtime_ns)
        elif stat.S_ISFIFO(s.st_mode):
            out[rel] = ("fifo", stat.S_IMODE(s.st_mode), s.st_mtime_ns)
        else:
            first = inodes.setdefault(s.st_ino, rel)
            xattrs = {k: os.getxattr(p, k) for k in os.listxattr(p)}
            out[rel] = (
                "file",
                stat.S_IMODE(s.st_mode),
                s.st_mtime_ns,
                p.read_bytes(),
                first,
                xattrs,
            )
    return out


def provider_session(**dirs: Path) -> Session:
    s = Session(name="test")
    s.allow(FileSyncProvider({k: str(v) for k, v in dirs.items()}))
    return s


def sync(session: Session, dest: Path, name: str = "ctx", **kw: object) -> SyncResult:
    return asyncio.run(sync_dir(session.caller(), name, str(dest), **kw))  # type: ignore[arg-type]


def test_first_sync_reproduces_tree(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    res = sync(provider_session(ctx=src), dst)
    assert snapshot(dst) == snapshot(src)
    # hard links stay hard links; modes kept
    assert (dst / "a.txt").stat().st_ino == (dst / "dir" / "hard").stat().st_ino
    assert stat.S_IMODE((dst / "exec.sh").stat().st_mode) == 0o755
    assert res.files_received == 4  # a.txt, exec.sh, b.bin, c.txt (hard link not re-sent)
    assert res.bytes_received == 6 + 18 + 100_000 + 10
    assert res.digests["dir/hard"] == res.digests["a.txt"]
    # the index lives beside the destination, never inside it
    assert os.path.exists(default_index_path(str(dst)))
    assert not any(".bk" in p.name for p in dst.rglob("*"))


def test_resync_after_touch_sends_exactly_that_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = provider_session(ctx=src)
    sync(session, dst)
    again = sync(session, dst)
    assert again.files_received == 0 and again.hash_checks == 0
    os.utime(src / "dir" / "sub" / "c.txt", ns=(1_700_000_000_000_000_000,) * 2)
    res = sync(session, dst)
    assert res.files_received == 1
    assert res.bytes_received == 10
    assert res.changed == {"dir/sub/c.txt"}
    assert snapshot(dst) == snapshot(src)


def test_same_size_restored_mtime_is_detected(tmp_path: Path) -> None:
    """BuildKit v0.11 keeps the stale content here (solver.md §9); bkcore must not."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = provider_session(ctx=src)
    sync(session, dst)
    target = src / "dir" / "sub" / "c.txt"
    before = target.stat()
    target.write_bytes(b"d" * 10)  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # like `touch -r`
    assert target.stat().st_mtime_ns == before.st_mtime_ns
    res = sync(session, dst)
    assert (dst / "dir" / "sub" / "c.txt").read_bytes() == b"d" * 10
    assert res.files_received == 1
    assert res.hash_checks == 1


def test_ctime_change_with_same_content_is_verified_by_hash_only(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = provider_session(ctx=src)
    sync(session, dst)
    os.chmod(src / "a.txt", 0o644)  # ctime changes, nothing else
    settle()
    res = sync(session, dst)
    assert res.hash_checks == 1
    assert res.files_received == 0
    assert sync(session, dst).hash_checks == 0  # the index now trusts the new token
    # an xattr-only change (invisible to BuildKit's differ) is applied without a transfer
    os.setxattr(src / "a.txt", "user.note", b"1")
    os.removexattr(src / "dir" / "sub" / "c.txt", "user.origin")
    settle()
    res = sync(session, dst)
    assert (res.hash_checks, res.files_received) == (2, 0)
    assert os.getxattr(dst / "a.txt", "user.note") == b"1"
    assert os.listxattr(dst / "dir" / "sub" / "c.txt") == []


def test_lost_index_is_safe(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = provider_session(ctx=src)
    sync(session, dst)
    os.unlink(default_index_path(str(dst)))
    (src / "a.txt").write_bytes(b"ALPHA\n")
    os.utime(src / "a.txt", ns=(1_600_000_000_000_000_000,) * 2)
    res = sync(session, dst)
    assert (dst / "a.txt").read_bytes() == b"ALPHA\n"
    assert res.files_received == 1  # the others were verified by hash, not re-sent
    assert snapshot(dst) == snapshot(src)


def test_deletions_and_type_changes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = provider_session(ctx=src)
    sync(session, dst)
    os.unlink(src / "exec.sh")
    import shutil

    shutil.rmtree(src / "dir" / "sub")
    (src / "dir" / "sub").write_bytes(b"now a file")  # dir -> file
    os.unlink(src / "dangling")
    (src / "dangling").mkdir()  # symlink -> dir
    (src / "dangling" / "x").write_bytes(b"x")
    res = sync(session, dst)
    assert snapshot(dst) == snapshot(src)
    assert res.deleted >= 1
    assert {"exec.sh", "dir/sub", "dangling", "dangling/x"} <= res.changed
    assert "a.txt" not in res.changed
    assert not (dst / "exec.sh").exists()


def test_include_exclude_and_followpaths(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    (src / "dir" / "skip.tmp").write_bytes(b"tmp")
    session = provider_session(ctx=src)
    sync(session, dst, includes=["dir"], excludes=["**/*.tmp", "dir/sub"])
    got = sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    assert got == ["dir", "dir/b.bin", "dir/hard", "dir/link"]
    # parents of included files are sent even when not selected themselves
    dst2 = tmp_path / "dst2"
    sync(session, dst2, includes=["dir/sub/c.txt"])
    assert sorted(str(p.relative_to(dst2)) for p in dst2.rglob("*")) == [
        "dir",
        "dir/sub",
        "dir/sub/c.txt",
    ]
    # followpaths: a symlink and its target are both sent
    dst3 = tmp_path / "dst3"
    sync(session, dst3, follow_paths=["dir/link"])
    assert sorted(str(p.relative_to(dst3)) for p in dst3.rglob("*")) == [
        "a.txt",
        "dir",
        "dir/link",
    ]


def test_changing_patterns_deletes_what_is_no_longer_selected(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = provider_session(ctx=src)
    sync(session, dst)
    sync(session, dst, excludes=["dir"])
    assert not (dst / "dir").exists()
    assert (dst / "a.txt").exists()


def test_unknown_dir_and_missing_provider(tmp_path: Path) -> None:
    session = provider_session(ctx=tmp_path)
    with pytest.raises(CallError) as info:
        sync(session, tmp_path / "out", name="nope")
    assert info.value.code is Status.NOT_FOUND
    assert 'no access allowed to dir "nope"' in str(info.value)
    with pytest.raises(SessionError, match="no local sources enabled"):
        sync(Session(), tmp_path / "out")
    assert DIFFCOPY in provider_session(ctx=tmp_path).methods()


def test_differ_none_resends_everything(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = provider_session(ctx=src)
    sync(session, dst)
    assert sync(session, dst, differ="none").files_received == 4


class StallingSender:
    """Lists one file, sends its first chunk when asked, then never finishes."""

    def handlers(self) -> Mapping[str, Handler]:
        return {DIFFCOPY: Handler("stream", self.run, Packet, Packet)}

    async def run(self, stream: ServerStream) -> None:
        await stream.send(Packet(PacketType.STAT, stat=Stat("big", 0o644, size=1 << 20)))
        await stream.send(Packet())
        req = await stream.recv()
        assert req is not None and req.type == PacketType.REQ
        await stream.send(Packet(PacketType.DATA, id=0, data=b"x" * 1000))
        await asyncio.Event().wait()  # stall until cancelled


def test_cancelled_sync_leaves_no_partial_file(tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "big").write_bytes(b"old")
    session = Session()
    session.allow(StallingSender())
    seen_partial = []

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(sync_dir(session.caller(), "ctx", str(dst)))
            for _ in range(200):  # wait until the half-written temporary exists
                await asyncio.sleep(0.01)
                partial = [p.name for p in dst.iterdir() if p.name != "big"]
                if partial:
                    seen_partial.extend(partial)
                    break
            task.cancel()
        assert task.cancelled()
        # sync_dir returned only after the partial file was removed
        assert sorted(p.name for p in dst.iterdir()) == ["big"]

    asyncio.run(main())
    assert seen_partial, "the test must cancel while a file is half-written"
    assert sorted(p.name for p in dst.iterdir()) == ["big"]
    assert (dst / "big").read_bytes() == b"old"


def test_fresh_files_are_verified_by_hash_not_resent(tmp_path: Path) -> None:
    """Files changed right before a sync get no trusted token ("racy"), so the next sync
    checks them by hash; nothing is re-sent when the content is the same."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "new.txt").write_bytes(b"fresh")
    session = provider_session(ctx=src)
    sync(session, dst)
    settle()
    res = sync(session, dst)
    assert (res.hash_checks, res.files_received) == (1, 0)


def test_concurrent_syncs_into_one_dest_are_serialised(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_tree(src)
    session = provider_session(ctx=src)

    async def main() -> list[SyncResult]:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(sync_dir(session.caller(), "ctx", str(dst))) for _ in range(3)]
        return [t.result() for t in tasks]

    results = asyncio.run(main())
    # the first one transferred everything, the others found nothing to do
    assert sorted(r.files_received for r in results) == [0, 0, 4]
    assert snapshot(dst) == snapshot(src)


def test_index_inside_destination_is_refused(tmp_path: Path) -> None:
    session = provider_session(ctx=tmp_path)
    with pytest.raises(SessionError, match="must not be inside"):
        sync(session, tmp_path / "d", index_path=str(tmp_path / "d" / "idx.json"))
