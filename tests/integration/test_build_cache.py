"""Caching across ``bkcore build`` processes on one state root: a second run is all cache
hits, keys follow content (not timestamps or unselected files), ``--no-cache`` reruns.

Whether a step really ran is read from a counter in a cache mount (each run appends a line)
as well as from the progress (``cached`` on the vertex).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from bkcore import llb

pytestmark = pytest.mark.integration

EXPORTER = "exporting to client directory"


def counting_step(base: Any, name: str, script: str, **kwargs: Any) -> Any:
    """``script`` run on ``base``, appending a line to /runs/<name> in a cache mount first."""
    return base.sh(
        f"echo run >> /runs/{name}; echo RUNNING {name}; {script}",
        mounts=[llb.cache("/runs", "run-counter"), *kwargs.pop("mounts", [])],
        custom_name=name,
        **kwargs,
    )


def counters(bk: Any, tmp_path: Path) -> dict[str, int]:
    """How often each counting step ran (read through a never-cached step)."""
    # A new command each time, so never cached (ignore_cache would start the mount afresh).
    step = bk.base().sh(
        f"mkdir -p /out && for f in /runs/*; do wc -l < $f > /out/${{f##*/}}; done # {uuid4()}",
        mounts=[llb.cache("/runs", "run-counter")],
        custom_name="read counters",
    )
    out = tmp_path / "counters"
    bk.build(
        llb.scratch().file(llb.copy(step.root(), "/out", "/", dir_contents_only=True)), out=out
    )
    return {p.name: int(p.read_text()) for p in out.iterdir()}


def chain(bk: Any) -> Any:
    first = counting_step(bk.base(), "first", "echo one > /one.txt").root()
    second = counting_step(first, "second", "cat /one.txt > /two.txt; echo two >> /two.txt").root()
    return llb.scratch().file(llb.copy(second, "/two.txt", "/two.txt"), custom_name="collect")


def test_second_process_hits_the_cache_for_every_vertex(bk: Any, tmp_path: Path) -> None:
    graph = chain(bk)
    run1 = bk.build(graph, out=tmp_path / "out1")
    assert (tmp_path / "out1" / "two.txt").read_text() == "one\ntwo\n"
    assert not any(run1.cached().values())

    run2 = bk.build(graph, out=tmp_path / "out2")
    assert (tmp_path / "out2" / "two.txt").read_text() == "one\ntwo\n"
    cached = run2.cached()
    # The local source is transferred again (its key is random per session, §2.3), the
    # exporter always runs; every op vertex is a cache hit.
    assert cached.pop("rootfs") is False
    assert cached.pop(EXPORTER) is False
    assert cached == {"copy rootfs": True, "first": True, "second": True, "collect": True}
    assert run2.logs() == b""
    assert counters(bk, tmp_path) == {"first": 1, "second": 1}


def test_no_cache_runs_every_step_again(bk: Any, tmp_path: Path) -> None:
    graph = chain(bk)
    bk.build(graph, out=tmp_path / "out1")
    run = bk.build(graph, out=tmp_path / "out2", no_cache=True)
    assert not any(run.cached().values())
    # --no-cache also starts its cache mounts afresh (§3.3): the steps' output shows they ran.
    assert run.logs("first") == b"RUNNING first\n"
    assert run.logs("second") == b"RUNNING second\n"
    assert (tmp_path / "out2" / "two.txt").read_text() == "one\ntwo\n"
    # A normal build right after is fully cached again.
    run = bk.build(graph, out=tmp_path / "out3")
    assert run.cached()["first"] and run.cached()["second"]


def test_changed_command_reruns_only_from_that_step(bk: Any, tmp_path: Path) -> None:
    first = counting_step(bk.base(), "first", "echo one > /one.txt").root()
    bk.build(counting_step(first, "second", "true").root(), out=tmp_path / "o1")
    run = bk.build(counting_step(first, "second", "true; true").root(), out=tmp_path / "o2")
    assert run.cached()["first"] is True
    assert run.cached()["second"] is False
    assert counters(bk, tmp_path) == {"first": 1, "second": 2}


def copy_graph(bk: Any) -> Any:
    """COPY only a.txt from the context, then a step that uses it."""
    ctx = llb.local("ctx", shared_key_hint="ctx", custom_name="ctx")
    copied = bk.base().file(
        llb.copy(ctx, "/a.txt", "/app/a.txt", create_dest_path=True), custom_name="copy a.txt"
    )
    step = counting_step(copied, "use-a", "cat /app/a.txt > /result.txt")
    return llb.scratch().file(llb.copy(step.root(), "/result.txt", "/result.txt"))


def test_content_keys_ignore_files_outside_the_copy_selection(bk: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("A1\n")
    (ctx / "b.txt").write_text("B1\n")
    graph = copy_graph(bk)
    bk.build(graph, locals={"ctx": ctx}, out=tmp_path / "out1")

    # b.txt changes, a new file appears: a.txt is the same, so the copy and the step hit.
    (ctx / "b.txt").write_text("B2, much longer than before\n")
    (ctx / "c.txt").write_text("new\n")
    run = bk.build(graph, locals={"ctx": ctx}, out=tmp_path / "out2")
    assert run.cached()["copy a.txt"] is True
    assert run.cached()["use-a"] is True
    assert (tmp_path / "out2" / "result.txt").read_text() == "A1\n"

    # a.txt changes: the copy and everything after it run again.
    (ctx / "a.txt").write_text("A2\n")
    run = bk.build(graph, locals={"ctx": ctx}, out=tmp_path / "out3")
    assert run.cached()["copy a.txt"] is False
    assert run.cached()["use-a"] is False
    assert (tmp_path / "out3" / "result.txt").read_text() == "A2\n"
    assert counters(bk, tmp_path) == {"use-a": 2}


def test_same_content_from_another_directory_hits_the_cache(bk: Any, tmp_path: Path) -> None:
    """Content keys do not depend on where the client keeps its files."""
    graph = copy_graph(bk)
    for n in (1, 2):
        ctx = tmp_path / f"ctx{n}"
        ctx.mkdir()
        (ctx / "a.txt").write_text("same\n")
        (ctx / "other").write_text(f"differs {n}\n")
        run = bk.build(graph, locals={"ctx": ctx}, out=tmp_path / f"out{n}")
    assert run.cached()["copy a.txt"] is True
    assert run.cached()["use-a"] is True
    assert counters(bk, tmp_path) == {"use-a": 1}


def test_read_only_bind_of_a_subdirectory_is_keyed_by_its_content(bk: Any, tmp_path: Path) -> None:
    """An exec's read-only input is content keyed over its selector only."""
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "sub" / "in.txt").write_text("in\n")
    (ctx / "outside.txt").write_text("1\n")
    src = llb.local("ctx", shared_key_hint="ctx", custom_name="ctx")
    step = counting_step(
        bk.base(),
        "read-sub",
        "cat /src/in.txt > /r.txt",
        mounts=[llb.bind("/src", src, selector="sub", readonly=True)],
    )
    graph = llb.scratch().file(llb.copy(step.root(), "/r.txt", "/r.txt"))
    bk.build(graph, locals={"ctx": ctx}, out=tmp_path / "o1")
    (ctx / "outside.txt").write_text("2\n")
    assert bk.build(graph, locals={"ctx": ctx}, out=tmp_path / "o2").cached()["read-sub"] is True
    (ctx / "sub" / "in.txt").write_text("changed\n")
    assert bk.build(graph, locals={"ctx": ctx}, out=tmp_path / "o3").cached()["read-sub"] is False
    assert (tmp_path / "o3" / "r.txt").read_text() == "changed\n"
    assert counters(bk, tmp_path) == {"read-sub": 2}
