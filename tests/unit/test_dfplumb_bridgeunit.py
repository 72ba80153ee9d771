"""LLBBridge parts that need no solver: nested frontends, image config resolution, warnings."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from bkcore.bridge import MAX_FRONTEND_DEPTH, WARNINGS_VERTEX, LLBBridge, go_mode
from bkcore.errors import FrontendError, PluginError, SourceError
from bkcore.frontend import BuildResult, FrontendRequest
from bkcore.llb import pb
from bkcore.progress import ProgressStream, VertexEvent, WarningEvent


class FakeRegistry:
    def __init__(self, targets: Mapping[str, Any]) -> None:
        self.targets = dict(targets)

    def __contains__(self, key: object) -> bool:
        return key in self.targets

    def keys(self) -> list[str]:
        return list(self.targets)

    def load(self, key: str) -> Any:
        return self.targets[key]


class FakePlugins:
    def __init__(self, **families: Mapping[str, Any]) -> None:
        self.families = {k: FakeRegistry(v) for k, v in families.items()}

    def registry(self, family: str) -> FakeRegistry:
        return self.families.get(family, FakeRegistry({}))


def bridge(progress: ProgressStream | None = None, **families: Mapping[str, Any]) -> LLBBridge:
    engine: Any = SimpleNamespace(plugins=FakePlugins(**families), platform="linux/arm64")
    return LLBBridge(engine, None, None, session_id="sess", progress=progress)  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_empty_definition_is_an_empty_result() -> None:
    assert run(bridge().solve(pb.Definition())).ref is None
    assert run(bridge().solve()).ref is None


def test_nested_frontend_gets_the_request_and_a_bridge() -> None:
    seen: list[FrontendRequest] = []

    class Echo:
        async def solve(self, b: Any, request: FrontendRequest) -> BuildResult:
            seen.append(request)
            return BuildResult(metadata={"k": request.opts["x"].encode()})

    class Outer:
        async def solve(self, b: Any, request: FrontendRequest) -> BuildResult:
            return await b.solve(frontend="echo.v0", frontend_opts={"x": "1"})

    got = run(bridge(frontends={"echo.v0": Echo, "outer.v0": Outer()}).solve(frontend="outer.v0"))
    assert got.metadata == {"k": b"1"}
    assert seen[0].session_id == "sess" and seen[0].worker_platforms == ("linux/arm64",)
    assert dict(seen[0].inputs) == {}


def test_unknown_frontend_names_the_known_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown frontend 'x\.v0' \(known: a\.v0\)"):
        run(bridge(frontends={"a.v0": object()}).solve(frontend="x.v0"))


def test_frontends_nest_only_so_deep() -> None:
    depth: list[int] = []

    class Loop:
        async def solve(self, b: Any, request: FrontendRequest) -> BuildResult:
            depth.append(1)
            result: BuildResult = await b.solve(frontend="loop.v0")
            return result

    with pytest.raises(FrontendError, match=f"nested more than {MAX_FRONTEND_DEPTH} deep"):
        run(bridge(frontends={"loop.v0": Loop}).solve(frontend="loop.v0"))
    assert len(depth) == MAX_FRONTEND_DEPTH


def test_definition_and_frontend_together_are_refused() -> None:
    definition = pb.Definition(def_=[b"x"])
    with pytest.raises(FrontendError, match="not both"):
        run(bridge().solve(definition, frontend="a.v0"))


def test_resolve_image_config_asks_the_image_source_with_the_session() -> None:
    calls: list[dict[str, Any]] = []

    class Source:
        async def resolve_image_config(self, ref: str, **kwargs: Any) -> tuple[str, bytes]:
            calls.append({"ref": ref, **kwargs})
            return "sha256:abc", b"{}"

    stream = ProgressStream()
    reader = stream.subscribe()
    b = bridge(stream, sources={"docker-image": Source})
    assert run(b.resolve_image_config("busybox", resolve_mode="pull")) == ("sha256:abc", b"{}")
    assert calls[0]["platform"] == "linux/arm64" and calls[0]["resolve_mode"] == "pull"
    assert calls[0]["session_id"] == "sess" and calls[0]["engine"] is not None
    events = [e for e in reader.read_nowait() if isinstance(e, VertexEvent)]
    assert events[-1].name == "[internal] load metadata for busybox"
    assert events[-1].completed is not None and not events[-1].error


def test_resolve_errors_become_source_errors_and_mark_the_vertex() -> None:
    class Broken:
        async def resolve_image_config(self, ref: str, **kwargs: Any) -> tuple[str, bytes]:
            raise RuntimeError("boom")

    stream = ProgressStream()
    reader = stream.subscribe()
    with pytest.raises(SourceError, match="busybox: failed to resolve image config: boom"):
        run(bridge(stream, sources={"docker-image": Broken()}).resolve_image_config("busybox"))
    events = [e for e in reader.read_nowait() if isinstance(e, VertexEvent)]
    assert events[-1].error == "boom"
    with pytest.raises(PluginError, match="no docker-image source"):
        run(bridge().resolve_image_config("busybox"))
    with pytest.raises(PluginError, match="cannot resolve image configs"):
        run(bridge(sources={"docker-image": object()}).resolve_image_config("busybox"))


def test_warnings_without_a_vertex_hang_on_one_internal_vertex() -> None:
    stream = ProgressStream()
    reader = stream.subscribe()
    b = bridge(stream)
    b.warn("", "first", detail=["d"], line=4)
    b.warn("sha256:op", "second")
    events = reader.read_nowait()
    vertices = [e for e in events if isinstance(e, VertexEvent)]
    warnings = [e for e in events if isinstance(e, WarningEvent)]
    assert [v.digest for v in vertices] == [WARNINGS_VERTEX]
    assert [(w.vertex, w.short, w.detail) for w in warnings] == [
        (WARNINGS_VERTEX, "line 4: first", ("d",)),
        ("sha256:op", "second", ()),
    ]
    assert b.warnings == warnings


def test_go_mode_bits() -> None:
    assert go_mode(0o040755) == (1 << 31) | 0o755
    assert go_mode(0o120777) == (1 << 27) | 0o777
    assert go_mode(0o104755) == (1 << 23) | 0o755
    assert go_mode(0o010644) == (1 << 25) | 0o644


def test_resolve_oci_layout_config_asks_the_oci_layout_source() -> None:
    calls: list[tuple[Any, ...]] = []

    class Layouts:
        async def resolve_layout_config(self, engine: Any, ref: str, **kwargs: Any) -> Any:
            calls.append((engine.platform, ref, kwargs))
            return "sha256:def", b'{"os":"linux"}'

    b = bridge(sources={"oci-layout": Layouts})
    got = run(b.resolve_oci_layout_config("app@sha256:aa", store_id="store"))
    assert got == ("sha256:def", b'{"os":"linux"}')
    assert calls == [
        (
            "linux/arm64",
            "app@sha256:aa",
            {"store_id": "store", "session_ids": ["sess"], "platform": "linux/arm64"},
        )
    ]
    other = run(
        b.resolve_oci_layout_config(
            "app@sha256:aa", store_id="s2", session_id="other", platform="linux/amd64"
        )
    )
    assert other[0] == "sha256:def"
    assert calls[-1][2] == {"store_id": "s2", "session_ids": ["other"], "platform": "linux/amd64"}
