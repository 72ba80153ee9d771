"""The controller's public API for a daemon: builds over an already connected session
(``BuildOptions.session``), a parallelism bound, ``build_job`` for builds the caller drives
(forwarded builds) and build listeners (GC scheduling). Vector v1 (``mkfile /hello.txt`` on
scratch) needs no container runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import bkcore.controller as controller_mod
from bkcore.controller import BuildOptions, Controller, OutputSpec
from bkcore.errors import ExportError, SessionError
from bkcore.llb.dump import load_definition
from bkcore.pluginmanager import get_plugin_manager
from bkcore.session.session import Session

V1 = Path(__file__).resolve().parents[1] / "data" / "vectors" / "v1_scratch_mkfile.llb"


def _client_session(plugins: Any, dest: Path) -> Session:
    """A client-side session as a daemon client holds it: it receives local outputs in
    ``dest`` (whatever the build's options say)."""
    session = Session(name="client", shared_key="k")
    session.allow(plugins.registry("attachables").load("filesend")(dest_dir=str(dest)))
    return session


def test_build_uses_the_connected_session_named_in_the_options(tmp_path: Path) -> None:
    plugins = get_plugin_manager()
    dest = tmp_path / "client-out"

    async def main() -> tuple[list[str], list[str], list[str]]:
        async with Controller(plugins, tmp_path / "root") as c:
            session = _client_session(plugins, dest)
            c.engine.sessions.attach(session)
            before = c.engine.sessions.ids()
            options = BuildOptions(
                V1.read_bytes(),
                # the daemon's Solve: the client chose the directory; this dest is not used
                outputs=(OutputSpec("local", {"dest": str(tmp_path / "not-here")}),),
                session=session.id,
            )
            await c.build(options)
            during = c.engine.sessions.ids()
            return before, during, [session.id]

    before, after, mine = asyncio.run(main())
    assert (dest / "hello.txt").exists()
    assert not (tmp_path / "not-here").exists()
    # the client's session is the caller's to end: the build did not unregister it, and
    # made no session of its own
    assert before == after == mine


def test_a_session_that_never_connects_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller_mod, "SESSION_WAIT", 0.05)
    plugins = get_plugin_manager()
    ended: list[int] = []

    async def main() -> None:
        async with Controller(plugins, tmp_path) as c:
            c.add_build_listener(lambda: ended.append(1))
            with pytest.raises(SessionError, match="no active session for nosuch"):
                await c.build(BuildOptions(V1.read_bytes(), session="nosuch"))
            assert c.running_builds == 0

    asyncio.run(main())
    assert ended == []  # it never started


def test_parallelism_reaches_the_solver_and_is_checked(tmp_path: Path) -> None:
    plugins = get_plugin_manager()

    async def main() -> tuple[int | None, int | None]:
        async with Controller(plugins, tmp_path, parallelism=3) as c:
            bounded = c.solver.parallelism
        async with Controller(plugins, tmp_path) as c:
            unbounded = c.solver.parallelism
        return bounded, unbounded

    assert asyncio.run(main()) == (3, None)
    with pytest.raises(ValueError, match="at least 1"):
        Controller(plugins, tmp_path, parallelism=0)


def test_build_job_drives_a_solve_through_its_bridge_and_exports(tmp_path: Path) -> None:
    """What a forwarded build does: the caller solves through the job's bridge, then
    exports; everything is released when the block ends, and listeners run once."""
    plugins = get_plugin_manager()
    dest = tmp_path / "out"
    ended: list[int] = []

    async def main() -> tuple[int, int, int]:
        async with Controller(plugins, tmp_path / "root") as c:
            remove = c.add_build_listener(lambda: ended.append(c.running_builds))
            options = BuildOptions(outputs=(OutputSpec("local", {"dest": str(dest)}),))
            async with c.build_job(options) as build:
                running = c.running_builds
                sessions = len(c.engine.sessions.ids())
                result = await build.bridge().solve(load_definition(V1.read_bytes(), "v1"))
                assert result.ref is not None
                await build.export(result.ref)
            results = c._results
            assert results is not None
            live = results.live_refs()
            remove()
            async with c.build_job(BuildOptions()):
                pass
            return running, sessions, live + len(c.engine.sessions.ids())

    running, sessions, left = asyncio.run(main())
    assert (dest / "hello.txt").exists()
    assert running == 1 and sessions == 1  # an in-process session for the build
    assert left == 0  # bridge refs released, session unregistered
    assert ended == [0]  # once, after the build; not after the listener was removed


def test_listeners_run_when_a_build_fails(tmp_path: Path) -> None:
    plugins = get_plugin_manager()
    ended: list[int] = []

    async def main() -> None:
        async with Controller(plugins, tmp_path) as c:
            c.add_build_listener(lambda: ended.append(1))
            with pytest.raises(ExportError, match="boom"):
                async with c.build_job(BuildOptions()):
                    raise ExportError("boom")
            assert c.running_builds == 0 and c.engine.sessions.ids() == []

    asyncio.run(main())
    assert ended == [1]
