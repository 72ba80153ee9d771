"""Cache mounts: sharing modes, persistence, drop, cross-process locking."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bkcore.cache.cachemounts import CacheMounts
from bkcore.cache.db import Database
from bkcore.errors import CacheError


def _mounts(root: Path) -> CacheMounts:
    return CacheMounts(root, Database(root / "m.db"))


def test_shared_gives_one_dir_and_persists(tmp_path: Path) -> None:
    cm = _mounts(tmp_path)

    async def main() -> tuple[Path, Path]:
        async with cm.acquire("npm", "shared") as a, cm.acquire("npm", "shared") as b:
            (a / "f").write_text("kept")
            return a, b

    a, b = asyncio.run(main())
    assert a == b
    cm2 = _mounts(tmp_path)  # a new process view of the same store

    async def again() -> str:
        async with cm2.acquire("npm", "shared") as c:
            return (c / "f").read_text()

    assert asyncio.run(again()) == "kept"


def test_private_gives_distinct_dirs_concurrently_and_reuses_idle(tmp_path: Path) -> None:
    cm = _mounts(tmp_path)

    async def main() -> tuple[Path, Path, Path]:
        async with cm.acquire("c", "private") as a, cm.acquire("c", "private") as b:
            (a / "mine").write_text("a")
            assert not (b / "mine").exists()
        async with cm.acquire("c", "private") as c:
            return a, b, c

    a, b, c = asyncio.run(main())
    assert a != b
    assert c == a  # an idle dir is reused before making a new one
    assert len(cm.all()) == 2


def test_locked_really_waits(tmp_path: Path) -> None:
    cm = _mounts(tmp_path)
    events: list[str] = []

    async def holder(started: asyncio.Event, release: asyncio.Event) -> None:
        async with cm.acquire("l", "locked") as d:
            events.append("holder-in")
            (d / "n").write_text("1")
            started.set()
            await release.wait()
            events.append("holder-out")

    async def waiter() -> None:
        async with cm.acquire("l", "locked") as d:
            events.append("waiter-in")
            (d / "n").write_text(str(int((d / "n").read_text()) + 1))

    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(holder(started, release))
            await started.wait()
            w = tg.create_task(waiter())
            for _ in range(10):
                await asyncio.sleep(0.02)
            assert not w.done()
            assert events == ["holder-in"]
            release.set()

    asyncio.run(main())
    assert events == ["holder-in", "holder-out", "waiter-in"]
    (info,) = cm.all()
    assert (info.path / "n").read_text() == "2"


def test_locked_waits_for_other_process(tmp_path: Path) -> None:
    cm = _mounts(tmp_path)
    code = f"""
        import asyncio, sys
        from pathlib import Path
        from bkcore.cache.cachemounts import CacheMounts
        from bkcore.cache.db import Database
        cm = CacheMounts(Path({str(tmp_path)!r}), Database(Path({str(tmp_path)!r}) / "m.db"))
        async def main():
            async with cm.acquire("x", "locked") as d:
                print(d, flush=True)
                sys.stdin.readline()
        asyncio.run(main())
    """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdin is not None
    held = Path(child.stdout.readline().decode().strip())
    assert cm.in_use(cm.all()[0].num)

    async def main() -> Path:
        task = asyncio.create_task(_enter(cm))
        await asyncio.sleep(0.3)
        assert not task.done()
        child.stdin.write(b"\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        return await asyncio.wait_for(task, 30)

    assert asyncio.run(main()) == held
    child.wait(timeout=30)


async def _enter(cm: CacheMounts) -> Path:
    async with cm.acquire("x", "locked") as d:
        return d


def test_drop_starts_empty_and_cleans_busy_dir_later(tmp_path: Path) -> None:
    cm = _mounts(tmp_path)

    async def main() -> None:
        async with cm.acquire("d", "shared") as old:
            (old / "f").write_text("old")
            cm.drop("d")  # in use: row gone, directory kept for its user
            assert (old / "f").read_text() == "old"
            async with cm.acquire("d", "shared") as new:
                assert new != old and list(new.iterdir()) == []
        cm.recover()
        assert not old.exists()
        cm.drop("d")
        assert cm.all() == []
        assert list((tmp_path / "cachemounts").iterdir()) == []

    asyncio.run(main())


def test_bad_sharing_mode(tmp_path: Path) -> None:
    cm = _mounts(tmp_path)

    async def main() -> None:
        async with cm.acquire("d", "bogus"):  # type: ignore[arg-type]
            pass

    with pytest.raises(CacheError):
        asyncio.run(main())


def test_cancelled_wait_leaves_no_lock(tmp_path: Path) -> None:
    cm = _mounts(tmp_path)

    async def main() -> None:
        async with cm.acquire("c", "locked"):
            waiter = asyncio.create_task(_enter_c(cm))
            await asyncio.sleep(0.1)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        # Neither the holder nor the cancelled waiter keeps the directory.
        await asyncio.sleep(0.05)
        assert not cm.in_use(cm.all()[0].num)
        assert await asyncio.wait_for(_enter_c(cm), 5) == cm.all()[0].path

    asyncio.run(main())


async def _enter_c(cm: CacheMounts) -> Path:
    async with cm.acquire("c", "locked") as d:
        return d
