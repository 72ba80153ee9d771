"""local:// sources through the embedded controller (file ops only: no container runtime).

A local source's key is random per session, so consumers are cached by the content of what
they select: a second build in a new process-like controller reuses the copy as long as the
copied file is unchanged, whatever happens to other files of the context.
"""

from __future__ import annotations

import asyncio
import os
import tarfile
from pathlib import Path

from bkcore import llb
from bkcore.controller import BuildOptions, Controller, OutputSpec
from bkcore.pluginmanager import get_plugin_manager
from bkcore.progress import ProgressStream, VertexEvent


def _definition() -> bytes:
    context = llb.local("context", shared_key_hint="context", exclude_patterns=["*.tmp"])
    out = llb.scratch().file(
        llb.copy(context, "/a.txt", "/out/a.txt", create_dest_path=True),
        custom_name="copy a.txt",
    )
    return out.marshal(platform="linux/amd64").to_bytes()


def _build(root: Path, context: Path, outputs: tuple[OutputSpec, ...]) -> dict[str, bool]:
    """One build in a fresh controller; returns {vertex name: cached}."""
    options = BuildOptions(_definition(), locals={"context": str(context)}, outputs=outputs)

    async def main() -> dict[str, bool]:
        stream = ProgressStream()
        reader = stream.subscribe()
        async with Controller(get_plugin_manager(), root) as controller:
            await controller.build(options, progress=stream)
        seen: dict[str, bool] = {}
        for e in reader.read_nowait():
            if isinstance(e, VertexEvent) and e.completed is not None:
                assert not e.error, e.error
                seen[e.name] = e.cached
        return seen

    return asyncio.run(main())


def test_copy_from_local_context_is_cached_by_content(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("first\n")
    (context / "b.txt").write_text("other\n")
    out = tmp_path / "out"
    local = (OutputSpec("local", {"dest": str(out)}),)
    root = tmp_path / "state"

    first = _build(root, context, local)
    assert first["copy a.txt"] is False
    assert (out / "out" / "a.txt").read_text() == "first\n"
    assert first["exporting to client directory"] is False

    (context / "b.txt").write_text("edited, but not copied\n")
    (context / "x.tmp").write_text("excluded\n")
    second = _build(root, context, local)
    assert second["copy a.txt"] is True  # content key of /a.txt unchanged
    local_vertex = next(name for name in second if name.startswith("local://"))
    assert second[local_vertex] is False  # the source itself always syncs

    (context / "a.txt").write_text("second\n")
    tar_path = tmp_path / "result.tar"
    third = _build(root, context, (OutputSpec("tar", {"dest": str(tar_path)}),))
    assert third["copy a.txt"] is False
    with tarfile.open(tar_path) as tf:
        assert [m.name for m in tf.getmembers()] == ["out", "out/a.txt"]
        member = tf.extractfile("out/a.txt")
        assert member is not None and member.read() == b"second\n"
    assert (out / "out" / "a.txt").read_text() == "first\n"  # the other output is untouched


def test_two_projects_with_same_name_size_and_mtime_keep_their_own_content(
    tmp_path: Path,
) -> None:
    # BuildKit (empty shared key) syncs both into one directory and its metadata differ then
    # skips the second project's file: the second build exports the first one's content.
    root = tmp_path / "state"
    projects = []
    for i, text in enumerate(["project one\n", "project two\n"]):
        ctx = tmp_path / f"p{i}"
        ctx.mkdir()
        (ctx / "a.txt").write_text(text)
        os.utime(ctx / "a.txt", ns=(0, 1_600_000_000 * 10**9))
        projects.append(ctx)
    for ctx in projects:
        out = tmp_path / f"out-{ctx.name}"
        _build(root, ctx, (OutputSpec("local", {"dest": str(out)}),))
    assert (tmp_path / "out-p0" / "out" / "a.txt").read_text() == "project one\n"
    assert (tmp_path / "out-p1" / "out" / "a.txt").read_text() == "project two\n"
    copies = [p for p in (root / "local").iterdir() if p.name != "content"]
    assert len(copies) == 2  # one synced copy per project (shared key = its directory)
