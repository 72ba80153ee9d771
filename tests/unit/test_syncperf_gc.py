"""The receiver's collector pause: nested, bounded to the sync, never turns a disabled GC on."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from bkcore.errors import SessionError
from bkcore.session import Session
from bkcore.session.filesync import sync_dir
from bkcore.session.filesync.receiver import _GcPause
from bkcore.sessions.filesync import FileSyncProvider


def test_pauses_nest_and_restore() -> None:
    assert gc.isenabled()
    a, b = _GcPause(), _GcPause()
    a.start()
    a.start()  # idempotent
    b.start()
    assert not gc.isenabled()
    a.stop()
    assert not gc.isenabled()  # b still holds it
    b.stop()
    b.stop()
    assert gc.isenabled()
    gc.disable()
    try:
        a.start()
        a.stop()
        assert not gc.isenabled()  # someone else's choice is kept
    finally:
        gc.enable()


def test_sync_restores_the_collector_on_success_and_failure(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(50):
        (src / "d" / f"f{i}").write_bytes(b"x" * i)
    session = Session(name="t")
    session.allow(FileSyncProvider({"ctx": str(src)}))
    caller = session.caller()
    seen: list[bool] = []

    async def run(name: str) -> None:
        async def watch() -> None:
            while True:
                seen.append(gc.isenabled())
                await asyncio.sleep(0)

        task = asyncio.create_task(watch())
        try:
            await sync_dir(caller, name, str(tmp_path / "dst"))
        finally:
            task.cancel()

    asyncio.run(run("ctx"))
    assert (tmp_path / "dst" / "d" / "f7").read_bytes() == b"x" * 7
    assert False in seen and gc.isenabled()
    with pytest.raises(SessionError):
        asyncio.run(run("missing"))
    assert gc.isenabled()
