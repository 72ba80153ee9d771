"""Statuses inside the export vertices, as buildctl shows them against buildkitd v0.11.6:
``copying files NB`` under "exporting to client directory", ``sending tarball`` under
"exporting to client tarball"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bkcore.plugins.exporters.common import exporting
from bkcore.plugins.exporters.local import LocalExporter
from bkcore.plugins.exporters.tar import TarExporter
from bkcore.progress import ProgressStream, StatusEvent, VertexEvent
from bkcore.session.session import Session
from bkcore.sessions.filesync import FileSendTarget


@dataclass
class _Ctx:
    root: Path
    caller: Any
    progress: ProgressStream = field(default_factory=ProgressStream)
    refs: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, bytes] = field(default_factory=dict)

    def view(self, result: object) -> contextlib.AbstractContextManager[Path]:
        @contextlib.contextmanager
        def cm() -> Iterator[Path]:
            yield self.root

        return cm()


def _tree(root: Path) -> Path:
    (root / "d").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"x" * 300)
    (root / "d" / "b.txt").write_bytes(b"y" * 53)
    return root


def _events(ctx: _Ctx, reader: Any) -> tuple[list[VertexEvent], list[StatusEvent]]:
    events = reader.read_nowait()
    return (
        [e for e in events if isinstance(e, VertexEvent)],
        [e for e in events if isinstance(e, StatusEvent)],
    )


def test_local_export_shows_copying_files_with_the_bytes_sent(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    session = Session()
    session.allow(FileSendTarget(dest_dir=str(tmp_path / "out")))
    ctx = _Ctx(root, session.caller())
    reader = ctx.progress.subscribe()
    asyncio.run(LocalExporter().export(ctx, None, {}))
    assert (tmp_path / "out" / "d" / "b.txt").read_bytes() == b"y" * 53
    vertices, statuses = _events(ctx, reader)
    assert {v.name for v in vertices} == {"exporting to client directory"}
    assert [s.name for s in statuses] == ["copying files", "copying files"]
    assert all(s.vertex == vertices[0].digest for s in statuses)
    first, last = statuses
    assert first.started and not first.completed
    assert last.completed and last.current == 353  # the file bytes, as "copying files 353B"


def test_tar_export_is_exporting_to_client_tarball_with_sending_tarball(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    session = Session()
    session.allow(FileSendTarget(file=str(tmp_path / "out.tar")))
    ctx = _Ctx(root, session.caller())
    reader = ctx.progress.subscribe()
    asyncio.run(TarExporter().export(ctx, None, {}))
    vertices, statuses = _events(ctx, reader)
    assert {v.name for v in vertices} == {"exporting to client tarball"}
    assert [s.name for s in statuses] == ["sending tarball"] * 2
    assert statuses[-1].completed and statuses[-1].vertex == vertices[0].digest


def test_step_completes_its_status_on_error() -> None:
    progress = ProgressStream()
    reader = progress.subscribe()

    async def run() -> None:
        async with exporting(progress, "exporting to image") as vertex:
            async with vertex.step("pushing layers"):
                raise OSError("gone")

    try:
        asyncio.run(run())
    except OSError:
        pass
    events = reader.read_nowait()
    statuses = [e for e in events if isinstance(e, StatusEvent)]
    vertices = [e for e in events if isinstance(e, VertexEvent)]
    assert [s.completed is not None for s in statuses] == [False, True]
    assert vertices[-1].error == "gone"


def test_docker_and_oci_tarballs_are_one_vertex_with_buildkits_statuses(tmp_path: Path) -> None:
    from bkcore.plugins.exporters.docker import DockerExporter
    from bkcore.plugins.exporters.oci import OCIExporter

    for kind, exporter in (("docker", DockerExporter()), ("oci", OCIExporter())):
        session = Session()
        session.allow(FileSendTarget(file=str(tmp_path / f"{kind}.tar")))
        ctx = _Ctx(tmp_path, session.caller())
        reader = ctx.progress.subscribe()
        out = asyncio.run(exporter.export(ctx, None, {"name": "x/y:z"}))  # type: ignore[arg-type]
        assert (tmp_path / f"{kind}.tar").stat().st_size > 0
        vertices, statuses = _events(ctx, reader)
        assert {v.name for v in vertices} == {f"exporting to {kind} image format"}
        done = [s.name for s in statuses if s.completed]
        assert done == [
            "exporting layers",
            f"exporting manifest {out['containerimage.digest']}",
            f"exporting config {out['containerimage.config.digest']}",
            "sending tarball",
        ]
        assert {s.vertex for s in statuses} == {vertices[0].digest}
