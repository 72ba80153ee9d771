"""SourceOpAdapter: plugin lookup by scheme, cache-map digests, fetching, errors."""

from __future__ import annotations

import asyncio
import hashlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bkcore.engine import Engine
from bkcore.errors import DefinitionError, SourceError
from bkcore.llb import pb
from bkcore.llb.digest import marshal, op_digest, present
from bkcore.llb.platforms import Platform
from bkcore.ops.load import build_graph
from bkcore.ops.source import SourceOpAdapter, scheme_of
from bkcore.progress import SharedProgress, VertexEvent
from bkcore.registry import Registry
from bkcore.solver.types import JobInfo, OpContext, Vertex

FAKE_MODULE = """
from dataclasses import dataclass, field


@dataclass
class Snap:
    id: str

    def clone(self):
        return Snap(self.id)

    async def release(self):
        pass


@dataclass
class Instance:
    identifier: str
    attrs: dict
    platform: str
    seen: list = field(default_factory=list)

    async def cache_key(self, ctx, index):
        self.seen.append(("key", index, ctx.engine, ctx.progress, list(ctx.jobs())))
        if self.identifier.startswith("fake://session"):
            return "session:ctx:sha256:11", True
        if self.identifier.startswith("fake://bad"):
            raise RuntimeError("resolve failed")
        return f"key{index}-" + self.identifier, index == 1

    async def snapshot(self, ctx):
        self.seen.append(("snapshot", ctx.engine, list(ctx.jobs())))
        return Snap("snap-" + self.identifier)


class FakeSource:
    def identify(self, identifier, attrs, platform):
        if "invalid" in identifier:
            from bkcore.errors import SourceError
            raise SourceError(f"invalid fake reference {identifier!r}")
        return Instance(identifier, attrs, platform)


SOURCE = FakeSource()
"""


@pytest.fixture
def fake_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = "bkcore_test_fake_source_" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FAKE_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _engine(module: str, *, as_class: bool = False) -> Engine:
    registry = Registry("sources")
    registry.add("fake", f"{module}:{'FakeSource' if as_class else 'SOURCE'}")
    registry.add("other", f"{module}:SOURCE")
    plugins = SimpleNamespace(registry=lambda family: {"sources": registry}[family])
    return cast(Engine, SimpleNamespace(platform="linux/amd64", plugins=plugins))


def _op(identifier: str, **attrs: str) -> pb.Op:
    return pb.Op(
        source=pb.SourceOp(identifier=identifier, attrs=dict(sorted(attrs.items()))),
        constraints=present(pb.WorkerConstraints()),
    )


def _ctx(adapter: SourceOpAdapter) -> OpContext:
    vertex = Vertex(digest=adapter.digest, op=adapter, name=adapter.identifier)
    progress = SharedProgress(VertexEvent(adapter.digest, adapter.identifier))
    jobs = [JobInfo("job1", {"session": "s1"})]
    return OpContext(vertex=vertex, progress=progress, jobs=lambda: jobs)


def _adapter(engine: Engine, identifier: str, **attrs: str) -> SourceOpAdapter:
    op = _op(identifier, **attrs)
    return SourceOpAdapter(op, op_digest(marshal(op)), engine, Platform("linux", "arm64"))


def test_identify_gets_identifier_attrs_and_platform(fake_module: str) -> None:
    adapter = _adapter(_engine(fake_module), "fake://img", **{"a.b": "1"})
    inst = cast(Any, adapter.instance)
    assert (inst.identifier, inst.attrs, inst.platform) == (
        "fake://img",
        {"a.b": "1"},
        "linux/arm64",
    )
    assert adapter.num_outputs == 1 and adapter.worker == "local"


def test_cache_maps_hash_key_strings_and_stop_at_last(fake_module: str) -> None:
    engine = _engine(fake_module)
    adapter = _adapter(engine, "fake://img")
    ctx = _ctx(adapter)

    async def go() -> list[tuple[str, bool]]:
        out = []
        for index in (0, 1):
            cmap, last = await adapter.cache_map(ctx, index)
            assert cmap.deps == ()
            out.append((cmap.digest, last))
        return out

    maps = asyncio.run(go())
    expected = [
        "sha256:" + hashlib.sha256(f"buildkit.source.v0:key{i}-fake://img".encode()).hexdigest()
        for i in (0, 1)
    ]
    assert maps == [(expected[0], False), (expected[1], True)]
    seen = cast(Any, adapter.instance).seen
    assert seen[0][2] is engine and seen[0][3] is ctx.progress
    assert seen[0][4] == [JobInfo("job1", {"session": "s1"})]


def test_session_keys_give_random_digests(fake_module: str) -> None:
    adapter = _adapter(_engine(fake_module), "fake://session")
    cmap, last = asyncio.run(adapter.cache_map(_ctx(adapter), 0))
    digest = hashlib.sha256(b"buildkit.source.v0:session:ctx:sha256:11").hexdigest()
    assert cmap.digest == "random:" + digest and last


def test_exec_returns_the_snapshot(fake_module: str) -> None:
    adapter = _adapter(_engine(fake_module), "fake://img")
    (result,) = asyncio.run(adapter.exec(_ctx(adapter), []))
    assert result.id == "snap-fake://img"
    assert cast(Any, adapter.instance).seen[-1][0] == "snapshot"


def test_source_errors_while_keying_propagate(fake_module: str) -> None:
    adapter = _adapter(_engine(fake_module), "fake://bad")
    with pytest.raises(RuntimeError, match="resolve failed"):
        asyncio.run(adapter.cache_map(_ctx(adapter), 0))


def test_registered_class_is_instantiated(fake_module: str) -> None:
    adapter = _adapter(_engine(fake_module, as_class=True), "fake://img")
    assert cast(Any, adapter.instance).identifier == "fake://img"


def test_unknown_scheme_names_known_schemes(fake_module: str) -> None:
    with pytest.raises(DefinitionError, match=r"no source plugin for scheme 'git'.*fake, other"):
        _adapter(_engine(fake_module), "git://example.com/repo.git")


def test_identifier_without_scheme_is_rejected(fake_module: str) -> None:
    with pytest.raises(DefinitionError, match="expected scheme://"):
        _adapter(_engine(fake_module), "busybox:latest")
    with pytest.raises(ValueError):
        scheme_of("://x")
    assert scheme_of("docker-image://busybox") == "docker-image"


def test_build_graph_uses_source_adapter_by_default(fake_module: str) -> None:
    src = _op("fake://img")
    raw = marshal(src)
    terminal = pb.Op(inputs=[pb.Input(digest=op_digest(raw))])
    defn = pb.Definition(def_=[raw, marshal(terminal)])
    head = build_graph(defn, _engine(fake_module))
    assert isinstance(head.vertex.op, SourceOpAdapter)
    assert head.vertex.name == "fake://img" and head.output == 0
    assert cast(Any, head.vertex.op.instance).platform == "linux/amd64"


def test_identify_errors_surface_from_build_graph(fake_module: str) -> None:
    src = _op("fake://invalid")
    raw = marshal(src)
    defn = pb.Definition(def_=[raw, marshal(pb.Op(inputs=[pb.Input(digest=op_digest(raw))]))])
    with pytest.raises(SourceError, match="invalid fake reference"):
        build_graph(defn, _engine(fake_module))
