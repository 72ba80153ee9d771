"""Marshal scaling of the LLB SDK: same bytes as before the fast encoder, no repeated walks.

``CHAIN_2000_SHA256`` was computed once with the SDK before the marshal path was rewritten
(betterproto constructors + the attribute-reading encoder, commit b212aa5) and is written
here: the fast path must give the same Definition byte for byte.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bkcore import llb
from bkcore.llb import execop, fileop, mergediff, pb, sourceop
from bkcore.llb.digest import op_digest

CHAIN_2000_SHA256 = "07d24ec01ba20c19838ece2abffe424f3db238e582bc2fffc5bb2d39f217e5c7"
CHAIN_2000_TERMINAL = "sha256:956172ab61020941f609a889e584f8d4a8117b327f5399b27f3a4867da355186"
PLATFORM = "linux/amd64"
UNIQUE = "sdkperfuniqueid0000000000"


def chain(n: int) -> llb.State:
    """``n`` ops after two sources, cycling through most options of every op kind."""
    dockerfile = llb.SourceMap("Dockerfile", b"FROM busybox\nRUN make\nCOPY . /src\n")
    ctx = llb.local("context", include_patterns=["src/"], shared_key_hint="ctx")
    st = llb.image("docker.io/library/busybox:1.36").with_env("A", "1").with_cwd("/w")
    group = llb.ProgressGroup("g1", "stage one")
    stamp = dt.datetime(2023, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    for i in range(n):
        k = i % 10
        if k == 0:
            st = st.run(
                ["sh", "-c", f"echo {i} > /f{i}"],
                mounts=[llb.cache("/root/.cache", "c", sharing=llb.CacheSharing.LOCKED)],
                meta=llb.OpMeta(source_locations=(dockerfile.location(llb.Range(2)),)),
            ).root()
        elif k == 1:
            st = st.file(
                llb.mkdir(f"d{i}", 0o700, parents=True, owner="app:app", created=stamp).mkfile(
                    f"d{i}/x", 0o600, f"data {i}", owner=1000
                ),
                custom_name=f"step {i}",
            )
        elif k == 2:
            st = st.file(
                llb.copy(
                    ctx,
                    "src/",
                    f"/app{i}/",
                    owner="1000:1000",
                    include_patterns=["*.py"],
                    exclude_patterns=["test_*"],
                    create_dest_path=True,
                    allow_wildcard=True,
                ),
                meta=llb.OpMeta(
                    source_locations=(dockerfile.location(llb.Range(3, 0, 3, 12)),),
                    progress_group=group,
                ),
            )
        elif k == 3:
            st = st.run(
                f"touch /t{i}",
                ignore_cache=(i % 7 == 0),
                mounts=[
                    llb.tmpfs("/tmp", size=1 << 20),
                    llb.secret("/run/secrets/s", id="s", mode=0o440),
                    llb.ssh(id="default"),
                    llb.bind("/ctx", ctx, readonly=True, selector="/src"),
                ],
                secret_env=[llb.secret_env("TOKEN", id="tok", optional=True)],
            ).root()
        elif k == 4:
            st = st.file(llb.rm(f"/f{i - 4}", allow_not_found=True, allow_wildcard=True))
        elif k == 5:
            st = (
                st.with_extra_host("reg", "10.0.0.1")
                .with_ulimit("nofile", 1024, 2048)
                .with_network(llb.NetMode.HOST)
                .run(
                    ["make", f"t{i}"],
                    proxy_env=llb.ProxyEnv(http_proxy="http://proxy:3128"),
                    user="1000",
                    meta=llb.OpMeta(export_cache=False, worker_filters=("w1",)),
                )
                .root()
                .with_network(llb.NetMode.SANDBOX)
            )
        elif k == 6:
            other = st.run(["sh", "-c", f"side {i}"]).root()
            st = llb.merge([st, other, llb.scratch().file(llb.mkfile("/m", data=b"m"))])
        elif k == 7:
            st = llb.diff(st, st.file(llb.mkdir(f"/diff{i}")))
        elif k == 8:
            run = st.run(["sh", "-c", f"build {i}"], mounts=[llb.bind("/out", llb.scratch())])
            st = st.file(llb.copy(run.get_mount("/out"), "/", f"/o{i}", mode=0o755))
        else:
            st = st.run(["true"], readonly_rootfs=False, custom_name=f"no-op {i}").root()
    return st


def test_chain_2000_marshals_to_the_recorded_bytes() -> None:
    defn = chain(2000).marshal(platform=PLATFORM, local_unique_id=UNIQUE)
    assert hashlib.sha256(bytes(defn)).hexdigest() == CHAIN_2000_SHA256
    assert defn.terminal == CHAIN_2000_TERMINAL
    # decodes back to the same bytes (the Definition is well formed)
    assert bytes(llb.Definition.from_bytes(bytes(defn))) == bytes(defn)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts ``marshal``/``inputs`` calls per vertex class while marshalling."""
    counter: Counter[str] = Counter()

    def counted(cls: type, name: str) -> None:
        orig: Callable[..., Any] = getattr(cls, name)

        def wrapper(self: Any, *args: Any) -> Any:
            counter[f"{cls.__name__}.{name}"] += 1
            counter[f"{name}:{id(self)}"] += 1
            return orig(self, *args)

        monkeypatch.setattr(cls, name, wrapper)

    for cls in (execop.ExecOp, fileop.FileOp, mergediff.MergeOp, sourceop.SourceOp):
        counted(cls, "marshal")
        counted(cls, "inputs")
    yield counter


def diamond(depth: int) -> llb.State:
    st = llb.image("busybox")
    for i in range(depth):
        left = st.run(["sh", "-c", f"left {i}"]).root()
        right = st.file(llb.mkfile(f"/right{i}", data=b"r"))
        st = llb.merge([left, right])
    return st


def test_diamond_of_depth_40_visits_each_vertex_once(calls: Counter[str]) -> None:
    st = diamond(40)
    calls.clear()
    defn = st.marshal(platform=PLATFORM)
    # 1 image + 40 x (exec, file, merge) ops + the terminal
    assert len(defn) == 1 + 40 * 3 + 1
    assert calls["ExecOp.marshal"] == calls["FileOp.marshal"] == calls["MergeOp.marshal"] == 40
    assert calls["SourceOp.marshal"] == 1
    # no vertex is marshalled, or has its inputs listed, more than once (2^40 paths)
    per_vertex = [n for key, n in calls.items() if ":" in key]
    assert per_vertex and max(per_vertex) == 1


def test_a_shared_subgraph_is_marshalled_once_however_many_parents(
    calls: Counter[str],
) -> None:
    base = llb.image("busybox").run(["sh", "-c", "shared"]).root()
    parts = [base.file(llb.mkfile(f"/p{i}", data=b"")) for i in range(300)]
    act = llb.mkdir("/out")
    for i, p in enumerate(parts):
        act = act.copy(p, f"/p{i}", f"/out/p{i}")
    calls.clear()
    defn = llb.scratch().file(act).marshal(platform=PLATFORM)
    assert len(defn) == 1 + 1 + 300 + 1 + 1
    assert calls["ExecOp.marshal"] == 1
    assert calls["FileOp.marshal"] == 301
    op = defn.op(defn.head or "")
    assert len(op.inputs) == 300  # each part once


def test_ops_taken_from_a_definition_are_written_as_received() -> None:
    # an unknown field (15, varint) before the known ones: a decode + re-encode would move it
    # to the end and change the op's digest, and with it every cache key built on it
    source = chain(3).marshal(platform=PLATFORM, local_unique_id=UNIQUE)
    first = b"\x78\x01" + source.ops[0]
    base = pb.Definition(
        def_=[first, bytes(pb.Op(inputs=[pb.Input(digest=op_digest(first), index=0)]))]
    )
    state = llb.from_definition(bytes(base)).file(llb.mkdir("/on-top"))
    defn = state.marshal(platform=PLATFORM)
    assert defn.ops[0] == first
    assert defn.digests[0] == op_digest(first)
    assert defn.op(defn.digests[1]).inputs[0].digest == op_digest(first)
