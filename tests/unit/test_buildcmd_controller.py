"""The embedded controller in-process: concurrent builds share work, outputs are checked early.

Uses vector v1 (``mkfile /hello.txt`` on scratch), so no container runtime is needed.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from bkcore.controller import BuildOptions, Controller, OutputSpec, run_build
from bkcore.errors import DefinitionError, ExportError
from bkcore.pluginmanager import get_plugin_manager
from bkcore.progress import ProgressStream, VertexEvent

V1 = Path(__file__).resolve().parents[1] / "data" / "vectors" / "v1_scratch_mkfile.llb"


def test_two_concurrent_builds_run_a_shared_vertex_once(tmp_path: Path) -> None:
    plugins = get_plugin_manager()
    options = BuildOptions(V1.read_bytes(), no_cache=True)

    async def main() -> tuple[int, list[list[VertexEvent]]]:
        streams = [ProgressStream(), ProgressStream()]
        readers = [s.subscribe() for s in streams]
        async with Controller(plugins, tmp_path) as controller:
            async with asyncio.TaskGroup() as tg:
                for s in streams:
                    tg.create_task(controller.build(options, progress=s))
            snapshots = len(controller.engine.store.snapshots.all())
        seen = [[e for e in r.read_nowait() if isinstance(e, VertexEvent)] for r in readers]
        return snapshots, seen

    snapshots, seen = asyncio.run(main())
    # --no-cache vertices of the same digest are shared by concurrent jobs: one run, one
    # snapshot; both jobs saw the vertex complete.
    assert snapshots == 1
    for events in seen:
        assert events[-1].name == "mkfile /hello.txt"
        assert events[-1].completed is not None and not events[-1].error


def test_results_are_released_and_the_store_is_reusable(tmp_path: Path) -> None:
    plugins = get_plugin_manager()
    options = BuildOptions(V1.read_bytes())

    async def main() -> list[bool]:
        cached = []
        for _ in range(2):
            stream = ProgressStream()
            reader = stream.subscribe()
            async with Controller(plugins, tmp_path) as controller:
                await controller.build(options, progress=stream)
                results = controller._results
                assert results is not None and results.live_refs() == 0
            events = [e for e in reader.read_nowait() if isinstance(e, VertexEvent)]
            cached.append(events[-1].cached)
        return cached

    assert asyncio.run(main()) == [False, True]


def test_unknown_output_type_fails_before_solving(tmp_path: Path) -> None:
    out = io.StringIO()
    options = BuildOptions(V1.read_bytes(), outputs=(OutputSpec("nope", {}),))
    with pytest.raises(ExportError, match="unknown output type 'nope'"):
        asyncio.run(run_build(options, get_plugin_manager(), state_dir=tmp_path, progress_out=out))
    assert out.getvalue() == ""
    assert not (tmp_path / "metadata.db").exists()  # nothing was opened


def test_bad_definition_fails_before_the_store_is_opened(tmp_path: Path) -> None:
    options = BuildOptions(b"\x0a\x03abc", source="x.llb")
    with pytest.raises(DefinitionError, match=r"x\.llb"):
        asyncio.run(run_build(options, get_plugin_manager(), state_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_run_build_renders_progress_to_the_given_stream(tmp_path: Path) -> None:
    out = io.StringIO()
    options = BuildOptions(V1.read_bytes())
    response = asyncio.run(
        run_build(
            options, get_plugin_manager(), state_dir=tmp_path, progress="plain", progress_out=out
        )
    )
    assert dict(response.exporter_response) == {}
    assert out.getvalue().startswith("#1 mkfile /hello.txt\n#1 DONE ")


def test_auto_progress_picks_tty_only_on_a_capable_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bkcore.controller import make_renderer
    from bkcore.plugins.progress.plain import PlainRenderer
    from bkcore.plugins.progress.rawjson import RawJsonRenderer
    from bkcore.plugins.progress.tty import TtyRenderer

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    plugins = get_plugin_manager()
    monkeypatch.setenv("TERM", "xterm")
    assert isinstance(make_renderer(plugins, "auto", Terminal()), TtyRenderer)
    assert isinstance(make_renderer(plugins, "auto", io.StringIO()), PlainRenderer)
    assert isinstance(make_renderer(plugins, "rawjson", Terminal()), RawJsonRenderer)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(make_renderer(plugins, "auto", Terminal()), PlainRenderer)
