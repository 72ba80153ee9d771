"""The SDK rebuilds the golden vectors' graphs byte for byte (Go client v0.11.6 output)."""

from __future__ import annotations

import json
from pathlib import Path

from bkcore import llb

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
PLATFORM = "linux/amd64"
UNIQUE = "vectorsuniqueid0000000000"
BUSYBOX = "127.0.0.1:5000/busybox:latest"


def _vector(name: str) -> tuple[bytes, dict[str, object]]:
    data = (VECTORS / f"{name}.llb").read_bytes()
    side = json.loads((VECTORS / f"{name}.json").read_text())
    return data, side


def _assert_same(name: str, defn: llb.Definition) -> None:
    data, side = _vector(name)
    ops = side["ops"]
    assert isinstance(ops, list)
    # every op: same bytes and digest, same order
    assert [op.hex() for op in defn.ops] == [o["hex"] for o in ops]
    assert list(defn.digests) == [o["digest"] for o in ops]
    assert defn.terminal == side["terminal_digest"]
    head = side["head"]
    assert isinstance(head, dict)
    assert defn.head == head["digest"]
    assert defn.head_index == head["index"]
    # and the whole Definition (metadata, Source) byte for byte
    assert defn.to_bytes() == data
    assert bytes(defn) == data
    assert defn.marshal() == data


def v1_graph() -> llb.State:
    return llb.scratch().file(llb.mkfile("/hello.txt", 0o644, b"hello\n"))


def test_v1_scratch_mkfile() -> None:
    _assert_same("v1_scratch_mkfile", v1_graph().marshal(platform=PLATFORM))


def test_v2_image_exec() -> None:
    st = (
        llb.image(BUSYBOX)
        .with_env("FOO", "bar")
        .with_cwd("/work")
        .run(
            [
                "/bin/sh",
                "-c",
                "cat /run/secrets/s > /out.txt; echo $FOO >> /out.txt; date > /cache/stamp",
            ],
            mounts=[
                llb.secret("/run/secrets/s", id="s"),
                llb.tmpfs("/tmp", size=1 << 20),
                llb.cache("/cache", "vec-cache", sharing=llb.CacheSharing.LOCKED),
            ],
        )
        .root()
    )
    _assert_same("v2_image_exec", st.marshal(platform=PLATFORM))


def test_v3_fileop_chain() -> None:
    ctx = llb.local("ctx", include_patterns=["hello.txt"], shared_key_hint="ctx")
    actions = (
        llb.mkdir("/a/b", 0o755, parents=True)
        .copy(ctx, "/hello.txt", "/a/b/", create_dest_path=True)
        .mkfile("/a/f", 0o600, b"x", owner="1000:1000")
        .rm("/a/f", allow_not_found=True)
    )
    st = llb.scratch().file(actions)
    _assert_same("v3_fileop_chain", st.marshal(platform=PLATFORM, local_unique_id=UNIQUE))


def test_v3_unique_id_given_on_the_source() -> None:
    ctx = llb.local("ctx", include_patterns=["hello.txt"], shared_key_hint="ctx", unique_id=UNIQUE)
    actions = (
        llb.mkdir("/a/b", 0o755, parents=True)
        .copy(ctx, "hello.txt", "/a/b/", create_dest_path=True)
        .mkfile("/a/f", 0o600, "x", owner=llb.Chown(llb.UserRef(id=1000), llb.UserRef(id=1000)))
        .rm("/a/f", allow_not_found=True)
    )
    # the marshal-time id is not used when the source carries one
    defn = llb.scratch().file(actions).marshal(platform=PLATFORM, local_unique_id="other")
    _assert_same("v3_fileop_chain", defn)


def test_v4_merge_diff() -> None:
    busybox = llb.image(BUSYBOX)
    upper = busybox.run(["/bin/sh", "-c", "echo diffed > /diffed.txt"]).root()
    st = llb.merge([v1_graph(), llb.diff(busybox, upper)])
    _assert_same("v4_merge_diff", st.marshal(platform=PLATFORM))


def test_v4_with_separately_built_but_equal_sources() -> None:
    # two image() calls give identical ops: deduplicated by digest like the Go client
    upper = llb.image(BUSYBOX).sh("echo diffed > /diffed.txt").root()
    st = llb.merge([llb.scratch(), v1_graph(), llb.diff(llb.image(BUSYBOX), upper)])
    _assert_same("v4_merge_diff", st.marshal(platform=PLATFORM))


def test_v5_sources() -> None:
    g = llb.git("github.com/moby/buildkit.git", "v0.11.6", keep_git_dir=True)
    h = llb.http(
        "https://example.com/file.tar",
        checksum="sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881",
        filename="f.tar",
        perm=0o640,
        uid=1,
        gid=2,
    )
    o = llb.oci_layout(
        "127.0.0.1:5000/busybox@sha256:"
        "19d8ea11e2406270ad7f026c84d875d4178da57f645543ed5617232693aec620",
        session_id="sess",
        store_id="store",
    )
    loc = llb.local(
        "context",
        session_id="sessid",
        exclude_patterns=["*.tmp"],
        follow_paths=["Dockerfile"],
        differ="none",
    )
    e = (
        llb.image("alpine:3.17", resolve_mode="pull")
        .run(
            "true",
            mounts=[llb.ssh()],
            network=llb.NetMode.NONE,
            security=llb.SecurityMode.INSECURE,
        )
        .root()
    )
    _assert_same("v5_sources", llb.merge([g, h, o, loc, e]).marshal(platform=PLATFORM))


def test_v6_dockerfile() -> None:
    """v6 came from the Dockerfile converter: descriptions, a source map with line ranges
    and the ``exec.meta.setsdefaultpath`` cap (the converter knows the daemon's caps)."""
    dockerfile = (
        b"FROM 127.0.0.1:5000/busybox:latest\nWORKDIR /app\nCOPY hello.txt .\n"
        b"RUN --mount=type=cache,target=/cache echo built > /app/built.txt\n"
    )
    sm = llb.SourceMap("Dockerfile", dockerfile)
    cmd = "com.docker.dockerfile.v1.command"

    def at(line: int, name: str, command: str | None = None) -> llb.OpMeta:
        desc = {llb.CUSTOM_NAME: name, **({cmd: command} if command else {})}
        return llb.OpMeta(description=desc, source_locations=(sm.location(llb.Range(line)),))

    ref = f"{BUSYBOX}@sha256:19d8ea11e2406270ad7f026c84d875d4178da57f645543ed5617232693aec620"
    base = llb.image(ref, meta=at(1, f"[stage-0 1/4] FROM {ref}", f"FROM {BUSYBOX}"))
    work = base.file(
        llb.mkdir("/app", 0o755, parents=True), meta=at(2, "[stage-0 2/4] WORKDIR /app")
    ).with_cwd("/app")
    ctx = llb.local(
        "context",
        session_id="vectorsession00000000000000",
        follow_paths=["hello.txt"],
        shared_key_hint="context",
        custom_name="[internal] load build context",
    )
    copied = work.file(
        llb.copy(
            ctx,
            "/hello.txt",
            "./",
            follow_symlinks=True,
            dir_contents_only=True,
            create_dest_path=True,
            allow_wildcard=True,
            allow_empty_wildcard=True,
        ),
        meta=at(3, "[stage-0 3/4] COPY hello.txt ."),
    )
    run_cmd = "RUN --mount=type=cache,target=/cache echo built > /app/built.txt"
    run = copied.with_env(
        "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ).sh(
        "echo built > /app/built.txt",
        mounts=[llb.cache("/cache", "//cache")],
        meta=at(4, "[stage-0 4/4] " + run_cmd, run_cmd),
    )
    defn = run.marshal(platform=PLATFORM, daemon_caps={"exec.meta.setsdefaultpath"})
    _assert_same("v6_dockerfile", defn)


def test_daemon_caps_without_default_path_support_adds_path() -> None:
    st = llb.image(BUSYBOX).sh("true")
    plain = st.marshal(platform=PLATFORM)
    old = st.marshal(platform=PLATFORM, daemon_caps=set())
    new = st.marshal(platform=PLATFORM, daemon_caps={"exec.meta.setsdefaultpath"})
    assert plain.op(plain.head or "").exec.meta.env == []
    assert old.op(old.head or "").exec.meta.env == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ]
    assert new.op(new.head or "").exec.meta.env == []
    assert "exec.meta.setsdefaultpath" in new.metadata[new.head or ""].caps


def test_source_map_with_its_own_graph() -> None:
    src = llb.local("dockerfile", unique_id="u1")
    sm = llb.SourceMap("build.py", b"x = 1\n", state=src)
    other = llb.SourceMap("other.txt", b"")
    st = llb.image(BUSYBOX, meta=llb.OpMeta(source_locations=(sm.location(llb.Range(1, 2, 3, 4)),)))
    st = st.sh(
        "true",
        meta=llb.OpMeta(source_locations=(other.location(llb.Range(5)), sm.location(llb.Range(6)))),
    )
    defn = st.marshal(platform=PLATFORM)
    source = defn.to_pb().source
    assert [i.filename for i in source.infos] == ["build.py", "other.txt"]
    sub = llb.Definition.from_bytes(bytes(source.infos[0].definition))
    assert sub.op(sub.head or "").source.identifier == "local://dockerfile"
    image_locs = source.locations[defn.digests[0]].locations
    assert [(loc.source_index, loc.ranges[0].start.line) for loc in image_locs] == [(0, 1)]
    r = image_locs[0].ranges[0]
    assert (r.start.character, r.end.line, r.end.character) == (2, 3, 4)
    exec_locs = source.locations[defn.digests[1]].locations
    assert [(loc.source_index, loc.ranges[0].start.line) for loc in exec_locs] == [(1, 5), (0, 6)]


def test_marshal_is_repeatable_and_order_is_dependency_first() -> None:
    busybox = llb.image(BUSYBOX)
    st = llb.merge([v1_graph(), llb.diff(busybox, busybox.sh("true").root())])
    first = st.marshal(platform=PLATFORM)
    assert first.to_bytes() == st.marshal(platform=PLATFORM).to_bytes()
    seen: set[str] = set()
    for raw, dgst in zip(first.ops, first.digests, strict=True):
        op = first.op(dgst)
        assert raw
        assert all(i.digest in seen for i in op.inputs)
        seen.add(dgst)


def test_definition_round_trips_through_bytes() -> None:
    data, _ = _vector("v2_image_exec")
    defn = llb.Definition.from_bytes(data)
    assert defn.to_bytes() == data
    assert defn.to_pb().def_ == list(defn.ops)
