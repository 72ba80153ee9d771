"""Exec op cache maps (spec/solver.md §2.1): the keyed JSON, selectors and content-key flags."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from bkcore.errors import SolveError
from bkcore.llb import pb
from bkcore.llb.digest import marshal, present
from bkcore.llb.platforms import Platform
from bkcore.ops.cachejson import exec_document
from bkcore.ops.exec import (
    ExecOpAdapter,
    _checksum_selection,
    content_keyed,
    dedupe_paths,
    exec_cache_digest,
    input_selectors,
    keyed_exec_op,
    selector_digest,
)
from bkcore.progress import SharedProgress, VertexEvent
from bkcore.solver.types import JobInfo, OpContext, Vertex

AMD64 = Platform("linux", "amd64")
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def wire(op: pb.ExecOp) -> pb.ExecOp:
    """The op as the adapter sees it: parsed from its bytes."""
    return pb.ExecOp().parse(marshal(op))


def run_op(*mounts: pb.Mount, **meta: object) -> pb.ExecOp:
    m = pb.Meta(
        args=["/bin/sh", "-c", "echo e18"], env=[PATH], cwd="/", remove_mount_stubs_recursive=True
    )
    for key, value in meta.items():
        setattr(m, key, value)
    return wire(pb.ExecOp(meta=m, mounts=list(mounts)))


def doc(op: pb.ExecOp) -> str:
    return exec_document(keyed_exec_op(op), "linux", "amd64")


def test_plain_run_matches_the_verified_buildkit_document() -> None:
    op = run_op(pb.Mount(input=0, dest="/", output=0))
    expected = (
        '{"Type":"buildkit.exec.v0","Exec":{"meta":{"args":["/bin/sh","-c","echo e18"],'
        f'"env":["{PATH}"],"cwd":"/","removeMountStubsRecursive":true}}}},'
        '"OS":"linux","Arch":"amd64"}'
    )
    assert doc(op) == expected
    assert exec_cache_digest(op, AMD64) == "sha256:" + hashlib.sha256(expected.encode()).hexdigest()
    # the op itself is not changed by keying
    assert len(op.mounts) == 1


def test_root_selector_is_cleared_and_mount_still_dropped() -> None:
    with_sel = run_op(pb.Mount(input=0, dest="/", output=0, selector="/sub"))
    plain = run_op(pb.Mount(input=0, dest="/", output=0))
    assert doc(with_sel) == doc(plain)
    assert with_sel.mounts[0].selector == "/sub"


def test_mounts_kept_when_not_a_lone_plain_root() -> None:
    readonly_root = run_op(pb.Mount(input=0, dest="/", output=-1, readonly=True))
    assert '"mounts":[{"input":0,"dest":"/","output":-1,"readonly":true}]' in doc(readonly_root)
    two = run_op(
        pb.Mount(input=0, dest="/", output=0),
        pb.Mount(input=1, dest="/src", output=-1, readonly=True, selector="a/b"),
    )
    text = doc(two)
    assert '{"input":1,"dest":"/src","output":-1,"readonly":true}' in text
    assert "a/b" not in text
    cache = run_op(
        pb.Mount(input=0, dest="/", output=0, cache_opt=present(pb.CacheOpt())),
    )
    assert '"mounts"' in doc(cache)


def test_proxy_env_and_extra_host_ip_do_not_count() -> None:
    base = run_op(
        pb.Mount(input=0, dest="/", output=0),
        extra_hosts=[pb.HostIp(host="db", ip="10.0.0.1")],
    )
    other = run_op(
        pb.Mount(input=0, dest="/", output=0),
        extra_hosts=[pb.HostIp(host="db", ip="10.9.9.9")],
        proxy_env=pb.ProxyEnv(http_proxy="http://proxy:3128"),
    )
    assert exec_cache_digest(base, AMD64) == exec_cache_digest(other, AMD64)
    assert '"extraHosts":[{"Host":"db"}]' in doc(base)
    renamed = run_op(
        pb.Mount(input=0, dest="/", output=0),
        extra_hosts=[pb.HostIp(host="cache", ip="10.0.0.1")],
    )
    assert exec_cache_digest(renamed, AMD64) != exec_cache_digest(base, AMD64)


def test_platform_and_env_order_count() -> None:
    op = run_op(pb.Mount(input=0, dest="/", output=0))
    arm = exec_cache_digest(op, Platform("linux", "arm", "v7"))
    assert arm != exec_cache_digest(op, AMD64)
    assert '"Variant":"v7"' in exec_document(keyed_exec_op(op), "linux", "arm", "v7")
    a = run_op(pb.Mount(input=0, dest="/", output=0), env=["A=1", "B=2"])
    b = run_op(pb.Mount(input=0, dest="/", output=0), env=["B=2", "A=1"])
    assert exec_cache_digest(a, AMD64) != exec_cache_digest(b, AMD64)


def test_html_characters_are_escaped() -> None:
    op = run_op(pb.Mount(input=0, dest="/", output=0), args=["/bin/sh", "-c", "a && b > /x"])
    assert "a \\u0026\\u0026 b \\u003e /x" in doc(op)


def test_selectors_per_input_in_mount_order_with_duplicates() -> None:
    op = run_op(
        pb.Mount(input=0, dest="/", output=0),
        pb.Mount(input=1, dest="/a", output=-1, readonly=True, selector="x/../y"),
        pb.Mount(input=1, dest="/b", output=-1, readonly=True, selector="/y"),
        pb.Mount(input=2, dest="/c", output=-1, readonly=True),
    )
    paths = input_selectors(op, 3)
    assert paths == [[], ["/y", "/y"], []]
    assert selector_digest(paths[1]) == "sha256:" + hashlib.sha256(b"/y\0/y").hexdigest()
    assert selector_digest([]) == ""


def test_content_key_only_for_inputs_not_feeding_outputs() -> None:
    op = run_op(
        pb.Mount(input=0, dest="/", output=0),
        pb.Mount(input=1, dest="/ro", output=-1, readonly=True),
        pb.Mount(input=2, dest="/rw-no-output", output=-1),
        pb.Mount(input=3, dest="/rw-output", output=1),
        pb.Mount(input=4, dest="/ro2", output=-1, readonly=True),
        pb.Mount(input=4, dest="/rw2", output=2),
    )
    assert [content_keyed(op, i) for i in range(5)] == [False, True, True, False, False]
    readonly_root = run_op(pb.Mount(input=0, dest="/", output=0, readonly=True))
    assert not content_keyed(readonly_root, 0)
    no_output_root = run_op(pb.Mount(input=0, dest="/", output=-1, readonly=True))
    assert content_keyed(no_output_root, 0)


def test_dedupe_paths_drops_nested_and_repeats() -> None:
    assert dedupe_paths(["/b/c", "/a", "/b", "/a", "/ab"]) == ["/a", "/ab", "/b"]
    assert dedupe_paths(["/"]) == ["/"]
    assert dedupe_paths(["/x", "/"]) == ["/"]


def test_content_key_covers_selected_paths_only(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"one")
    (tmp_path / "other").write_bytes(b"x")
    os.chmod(tmp_path / "d" / "f", 0o644)
    selected = _checksum_selection(str(tmp_path), ["/d", "/d/f"])
    whole = _checksum_selection(str(tmp_path), [])
    (tmp_path / "other").write_bytes(b"changed")
    assert _checksum_selection(str(tmp_path), ["/d"]) == selected
    assert _checksum_selection(str(tmp_path), []) != whole
    (tmp_path / "d" / "f").write_bytes(b"two")
    assert _checksum_selection(str(tmp_path), ["/d"]) != selected


def _adapter(exec_op: pb.ExecOp, platform: object = None) -> ExecOpAdapter:
    op = pb.Op().parse(marshal(pb.Op(inputs=[pb.Input(digest="sha256:" + "a" * 64)], exec=exec_op)))
    engine = SimpleNamespace(platform="linux/arm64")
    return ExecOpAdapter(op, "sha256:" + "d" * 64, engine, platform)  # type: ignore[arg-type]


def _ctx(adapter: ExecOpAdapter, values: dict[str, object]) -> OpContext:
    vertex = Vertex(adapter.digest, adapter, name="RUN x")
    progress = SharedProgress(VertexEvent(adapter.digest, "RUN x"))
    jobs = [JobInfo("j", values)]
    return OpContext(vertex, progress, lambda: jobs)


def test_outputs_worker_and_platform_choice() -> None:
    op = run_op(
        pb.Mount(input=0, dest="/", output=0),
        pb.Mount(input=-1, dest="/a", output=-1, readonly=True),
        pb.Mount(input=-1, dest="/b", output=2),
    )
    adapter = _adapter(op)
    assert adapter.num_outputs == 3
    assert adapter.worker == "runc"
    assert str(adapter.platform) == "linux/arm64"
    assert str(_adapter(op, Platform("linux", "amd64")).platform) == "linux/amd64"
    assert str(_adapter(op, "linux/arm/v7").platform) == "linux/arm/v7"


def test_host_network_and_insecure_need_entitlements() -> None:
    host = _adapter(
        pb.ExecOp(
            meta=pb.Meta(args=["true"]),
            mounts=[pb.Mount(input=0, dest="/", output=0)],
            network=pb.NetMode.HOST,
        )
    )
    with pytest.raises(SolveError, match=r"network\.host is not allowed") as info:
        asyncio.run(host.exec(_ctx(host, {"session": "s"}), []))
    assert info.value.digest == host.digest
    insecure = _adapter(
        pb.ExecOp(
            meta=pb.Meta(args=["true"]),
            mounts=[pb.Mount(input=0, dest="/", output=0)],
            security=pb.SecurityMode.INSECURE,
        )
    )
    with pytest.raises(SolveError, match=r"security\.insecure is not allowed"):
        asyncio.run(insecure.exec(_ctx(insecure, {"entitlements": ["network.host"]}), []))
