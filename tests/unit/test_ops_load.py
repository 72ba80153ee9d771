"""build_graph: op kinds to adapters, names, platforms, ignore_cache, load checks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bkcore.engine import Engine
from bkcore.errors import DefinitionError, SourceError
from bkcore.llb import pb
from bkcore.llb.digest import marshal, op_digest, present
from bkcore.llb.dump import load_definition
from bkcore.llb.platforms import Platform
from bkcore.ops import load
from bkcore.ops.load import GraphHead, build_graph, default_name
from bkcore.solver.types import CacheMap, OpContext, Result, Vertex

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"


class FakeAdapter:
    """Records what build_graph passed; never run here."""

    created: list[FakeAdapter] = []

    def __init__(self, op: pb.Op, digest: str, engine: Engine, platform: Platform) -> None:
        self.op, self.digest, self.engine, self.platform = op, digest, engine, platform
        FakeAdapter.created.append(self)

    @property
    def num_outputs(self) -> int:
        kind = load._kind(self.op)[0]
        if kind == "exec":
            return sum(1 for m in self.op.exec.mounts if m.output >= 0)
        if kind == "file":
            return sum(1 for a in self.op.file.actions if a.output >= 0)
        return 1

    @property
    def worker(self) -> str:
        return "fake"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        raise AssertionError("not run")

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        raise AssertionError("not run")


FAKES: dict[str, load.AdapterFactory] = {
    k: FakeAdapter for k in ("exec", "file", "source", "merge", "diff")
}


def _engine(platform: str = "linux/amd64") -> Engine:
    return cast(Engine, SimpleNamespace(platform=platform, plugins=None))


def _vector(name: str) -> pb.Definition:
    return load_definition((VECTORS / f"{name}.llb").read_bytes(), name)


def _walk(head: Vertex) -> dict[str, Vertex]:
    seen: dict[str, Vertex] = {}
    stack = [head]
    while stack:
        v = stack.pop()
        if v.digest not in seen:
            seen[v.digest] = v
            stack.extend(i for i, _ in v.inputs)
    return seen


def _defn(ops: list[pb.Op], meta: dict[int, pb.OpMetadata] | None = None) -> pb.Definition:
    raws = [marshal(op) for op in ops]
    metadata = {op_digest(raws[i]): m for i, m in (meta or {}).items()}
    return pb.Definition(def_=raws, metadata=metadata)


def _terminal(op: pb.Op, index: int = 0) -> pb.Op:
    return pb.Op(inputs=[pb.Input(digest=op_digest(marshal(op)), index=index)])


def _mkfile(path: str) -> pb.Op:
    action = pb.FileAction(
        input=-1,
        secondary_input=-1,
        output=0,
        mkfile=pb.FileActionMkFile(path=path, mode=0o644, data=b"x", timestamp=-1),
    )
    return pb.Op(file=pb.FileOp(actions=[action]), constraints=present(pb.WorkerConstraints()))


def test_vector_v4_graph_names_platforms_and_head() -> None:
    FakeAdapter.created.clear()
    head = build_graph(_vector("v4_merge_diff"), _engine("linux/arm64"), adapters=FAKES)
    assert isinstance(head, GraphHead) and head.output == 0
    vertices = _walk(head.vertex)
    assert len(vertices) == 5 and len(FakeAdapter.created) == 5
    by_kind = {load._kind(cast(FakeAdapter, v.op).op)[0]: v for v in vertices.values()}
    image = "docker-image://127.0.0.1:5000/busybox:latest"
    run = "/bin/sh -c echo diffed > /diffed.txt"
    assert by_kind["file"].name == "mkfile /hello.txt"
    assert by_kind["source"].name == image
    assert by_kind["exec"].name == run
    diff_name = f'diff "{image}" -> "{run}"'
    assert by_kind["diff"].name == diff_name
    assert (
        by_kind["merge"].name
        == 'merge "mkfile /hello.txt" + "diff \\"' + image + '\\" -> \\"' + run + '\\""'
    )
    assert head.vertex is by_kind["merge"]
    # ops with a platform keep it; merge/diff (no platform) get the engine default
    plats = {k: cast(FakeAdapter, v.op).platform for k, v in by_kind.items()}
    assert plats["exec"] == Platform("linux", "amd64")
    assert plats["merge"] == plats["diff"] == Platform("linux", "arm64")
    # edges follow op.inputs
    assert [(v.digest, i) for v, i in by_kind["diff"].inputs] == [
        (by_kind["source"].digest, 0),
        (by_kind["exec"].digest, 0),
    ]
    assert all(not v.ignore_cache for v in vertices.values())
    assert all(cast(FakeAdapter, v.op).digest == d for d, v in vertices.items())


def test_customname_from_metadata_vector_v6() -> None:
    head = build_graph(_vector("v6_dockerfile"), _engine(), adapters=FAKES)
    names = sorted(v.name for v in _walk(head.vertex).values())
    assert names[0] == "[internal] load build context"
    assert "[stage-0 3/4] COPY hello.txt ." in names
    assert head.vertex.name.startswith("[stage-0 4/4] RUN --mount=type=cache")


def test_local_source_single_include_pattern_in_name_vector_v3() -> None:
    head = build_graph(_vector("v3_fileop_chain"), _engine(), adapters=FAKES)
    ((src, _),) = head.vertex.inputs
    op = cast(FakeAdapter, src.op).op
    assert src.name.startswith("local://ctx (")
    assert src.name == default_name(op, [])


def test_ignore_cache_from_metadata_and_flag() -> None:
    a, b = _mkfile("/a"), _mkfile("/b")
    merge = pb.Op(
        inputs=[pb.Input(digest=op_digest(marshal(x))) for x in (a, b)],
        merge=pb.MergeOp(inputs=[pb.MergeInput(input=0), pb.MergeInput(input=1)]),
    )
    defn = _defn([a, b, merge, _terminal(merge)], {1: pb.OpMetadata(ignore_cache=True)})
    head = build_graph(defn, _engine(), adapters=FAKES)
    flags = {v.name: v.ignore_cache for v in _walk(head.vertex).values()}
    assert flags == {
        "mkfile /a": False,
        "mkfile /b": True,
        'merge "mkfile /a" + "mkfile /b"': False,
    }
    head = build_graph(defn, _engine(), ignore_cache_all=True, adapters=FAKES)
    assert all(v.ignore_cache for v in _walk(head.vertex).values())


def test_head_output_index_and_duplicate_ops_build_one_adapter() -> None:
    FakeAdapter.created.clear()
    a = _mkfile("/a")
    mounts = [
        pb.Mount(input=0, dest="/", output=0),
        pb.Mount(input=-1, dest="/out", output=1),
    ]
    run = pb.Op(
        inputs=[pb.Input(digest=op_digest(marshal(a)))],
        exec=pb.ExecOp(meta=pb.Meta(args=["true"], cwd="/"), mounts=mounts),
        platform=pb.Platform(architecture="x86_64", os="Linux"),
    )
    head = build_graph(_defn([a, a, run, _terminal(run, 1)]), _engine(), adapters=FAKES)
    assert head.output == 1 and head.vertex.name == "true"
    assert len(FakeAdapter.created) == 2
    assert cast(FakeAdapter, head.vertex.op).platform == Platform("linux", "amd64")


def test_output_index_beyond_adapter_outputs_is_rejected() -> None:
    a = _mkfile("/a")
    with pytest.raises(DefinitionError, match="invalid output index 1"):
        build_graph(_defn([a, _terminal(a, 1)]), _engine(), adapters=FAKES)


def test_missing_input_is_rejected_with_digest() -> None:
    ghost = "sha256:" + hashlib.sha256(b"ghost").hexdigest()
    run = pb.Op(inputs=[pb.Input(digest=ghost)], exec=pb.ExecOp(meta=pb.Meta(args=["x"])))
    defn = _defn([run, _terminal(run)])
    with pytest.raises(DefinitionError, match="missing input") as info:
        build_graph(defn, _engine(), adapters=FAKES)
    assert info.value.digest == op_digest(defn.def_[0])


def test_build_op_is_unsupported() -> None:
    build = pb.Op(build=pb.BuildOp(builder=-1))
    defn = _defn([build, _terminal(build)])
    with pytest.raises(DefinitionError, match="build ops are not supported") as info:
        build_graph(defn, _engine(), adapters=FAKES)
    assert info.value.digest == op_digest(defn.def_[0])


def test_unimportable_adapter_names_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cast(dict[str, str], load.ADAPTERS), "file", "bkcore.ops.nosuch:Adapter")
    a = _mkfile("/a")
    with pytest.raises(DefinitionError, match=r"file ops are not available.*bkcore\.ops\.nosuch"):
        build_graph(_defn([a, _terminal(a)]), _engine())


def test_adapter_errors_wrapped_or_passed_through() -> None:
    def bad(op: pb.Op, digest: str, engine: Engine, platform: Platform) -> Any:
        raise ValueError("mode out of range")

    def refusing(op: pb.Op, digest: str, engine: Engine, platform: Platform) -> Any:
        raise SourceError("bad image reference")

    a = _mkfile("/a")
    defn = _defn([a, _terminal(a)])
    with pytest.raises(DefinitionError, match="invalid file op: ValueError: mode out of range"):
        build_graph(defn, _engine(), adapters={"file": bad})
    with pytest.raises(SourceError, match="bad image reference"):
        build_graph(defn, _engine(), adapters={"file": refusing})


def test_invalid_op_platform_is_rejected() -> None:
    a = _mkfile("/a")
    a.platform = pb.Platform(os="linux")
    defn = _defn([a, _terminal(a)])
    with pytest.raises(DefinitionError, match="invalid platform") as info:
        build_graph(defn, _engine(), adapters=FAKES)
    assert info.value.digest == op_digest(defn.def_[0])


def test_default_names_of_file_actions_and_scratch_diff() -> None:
    copy = pb.FileAction(copy=pb.FileActionCopy(src="/a", dest="/b/"), input=0, secondary_input=1)
    rm = pb.FileAction(rm=pb.FileActionRm(path="/x"), input=2, secondary_input=-1)
    mkdir = pb.FileAction(mkdir=pb.FileActionMkDir(path="/d"), input=3, secondary_input=-1)
    op = pb.Op(file=pb.FileOp(actions=[copy, rm, mkdir]))
    assert default_name(op, []) == "copy /a /b/, rm /x, mkdir /d"
    diff = pb.Op(
        diff=pb.DiffOp(lower=pb.LowerDiffInput(input=-1), upper=pb.UpperDiffInput(input=0))
    )
    assert default_name(diff, ["up"]) == 'diff scratch -> "up"'
