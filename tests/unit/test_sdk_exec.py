"""ExecOp encoding: args, process settings, mounts and their order, caps."""

from __future__ import annotations

import pytest

from bkcore import llb
from bkcore.errors import DefinitionError
from bkcore.llb import pb

BUSYBOX = "127.0.0.1:5000/busybox:latest"


def _marshal(st: llb.State) -> llb.Definition:
    return st.marshal(platform="linux/amd64", local_unique_id="u")


def _exec_of(st: llb.State) -> tuple[pb.Op, pb.OpMetadata]:
    d = _marshal(st)
    assert d.head is not None
    op = d.op(d.head)
    assert op.exec is not None and op.exec.meta.args
    return op, d.metadata[d.head]


def test_string_command_is_split_like_a_shell() -> None:
    op, md = _exec_of(llb.image(BUSYBOX).run("sh -c 'echo \"a b\" > /x'  --flag"))
    assert op.exec.meta.args == ["sh", "-c", 'echo "a b" > /x', "--flag"]
    assert op.exec.meta.cwd == "/"
    assert op.exec.meta.remove_mount_stubs_recursive is True
    assert set(md.caps) == {"exec.meta.base", "exec.mount.bind"}


def test_list_command_kept_verbatim_and_sh_helper() -> None:
    op, _ = _exec_of(llb.image(BUSYBOX).run(["echo", "$HOME", "'q'"]))
    assert op.exec.meta.args == ["echo", "$HOME", "'q'"]
    op, _ = _exec_of(llb.image(BUSYBOX).sh("a && b"))
    assert op.exec.meta.args == ["/bin/sh", "-c", "a && b"]


def test_empty_command_rejected() -> None:
    with pytest.raises(DefinitionError):
        llb.image(BUSYBOX).run("   ")


def test_process_settings_from_state_and_run_arguments() -> None:
    st = (
        llb.image(BUSYBOX)
        .with_env("A", "1")
        .with_env("B", "2")
        .with_user("app")
        .with_hostname("box")
        .with_cwd("/src")
        .with_extra_host("db", "10.0.0.2")
        .with_ulimit("nofile", 1024, 2048)
        .with_cgroup_parent("/bk")
    )
    es = st.run("true", env={"A": "9", "C": "3"}, cwd="sub", user="root")
    op, md = _exec_of(es)
    meta = op.exec.meta
    assert meta.env == ["B=2", "A=9", "C=3"]  # replaced key moves to the end
    assert meta.cwd == "/src/sub"
    assert meta.user == "root"
    assert meta.hostname == "box"
    assert [(h.host, h.ip) for h in meta.extra_hosts] == [("db", "10.0.0.2")]
    assert [(u.name, u.soft, u.hard) for u in meta.ulimit] == [("nofile", 1024, 2048)]
    assert meta.cgroup_parent == "/bk"
    assert {"exec.meta.ulimit", "exec.meta.cgroup.parent"} <= set(md.caps)
    # run arguments apply to that process only
    assert es.get_env("A") == "1" and es.get_env("C") is None
    assert es.cwd == "/src" and es.get_user() == "app"


def test_network_security_and_proxy() -> None:
    es = llb.image(BUSYBOX).run(
        "true",
        network=llb.NetMode.HOST,
        security=llb.SecurityMode.INSECURE,
        proxy_env=llb.ProxyEnv(http_proxy="http://p:3128", no_proxy="localhost"),
    )
    op, md = _exec_of(es)
    assert op.exec.network == pb.NetMode.HOST
    assert op.exec.security == pb.SecurityMode.INSECURE
    assert op.exec.meta.proxy_env.http_proxy == "http://p:3128"
    assert op.exec.meta.proxy_env.no_proxy == "localhost"
    assert {"exec.meta.network", "exec.meta.security", "exec.meta.proxyenv"} <= set(md.caps)
    op, _ = _exec_of(llb.image(BUSYBOX).with_network(llb.NetMode.NONE).run("true"))
    assert op.exec.network == pb.NetMode.NONE


def test_mount_order_outputs_and_input_dedup() -> None:
    base = llb.image(BUSYBOX)
    data = llb.scratch().file(llb.mkfile("/f", 0o644, b"d"))
    es = base.run(
        "true",
        mounts=[
            llb.ssh(id="agent"),
            llb.bind("/z-out", llb.scratch()),
            llb.secret("/run/secrets/tok", id="tok", uid=5, gid=6, mode=0o440, optional=True),
            llb.bind("/data", data, selector="/f", readonly=True),
            llb.bind("/again", base),  # same input as the root: one input position
            llb.cache("/cache", "c1", sharing=llb.CacheSharing.PRIVATE, source=data),
            llb.tmpfs("/tmp"),
            llb.bind("/nout", data, no_output=True),
        ],
    )
    op, md = _exec_of(es)
    mounts = op.exec.mounts
    assert [m.dest for m in mounts] == [
        "/",
        "/again",
        "/cache",
        "/data",
        "/nout",
        "/tmp",
        "/z-out",
        "/run/secrets/tok",
        "/run/buildkit/ssh_agent.0",
    ]
    by = {m.dest: m for m in mounts}
    assert len(op.inputs) == 2
    assert (by["/"].input, by["/"].output) == (0, 0)
    assert (by["/again"].input, by["/again"].output) == (0, 1)
    assert (by["/cache"].input, by["/cache"].output) == (1, -1)
    assert by["/cache"].mount_type == pb.MountType.CACHE
    assert (by["/cache"].cache_opt.id, by["/cache"].cache_opt.sharing) == (
        "c1",
        pb.CacheSharingOpt.PRIVATE,
    )
    assert (by["/data"].input, by["/data"].output, by["/data"].readonly) == (1, -1, True)
    assert by["/data"].selector == "/f"
    assert (by["/nout"].output, by["/nout"].readonly) == (-1, False)
    assert (by["/tmp"].input, by["/tmp"].output, by["/tmp"].mount_type) == (
        -1,
        -1,
        pb.MountType.TMPFS,
    )
    assert (by["/z-out"].input, by["/z-out"].output) == (-1, 2)
    sec = by["/run/secrets/tok"]
    assert sec.mount_type == pb.MountType.SECRET
    assert (sec.secret_opt.id, sec.secret_opt.uid, sec.secret_opt.gid) == ("tok", 5, 6)
    assert (sec.secret_opt.mode, sec.secret_opt.optional) == (0o440, True)
    sock = by["/run/buildkit/ssh_agent.0"]
    assert (sock.mount_type, sock.ssh_opt.id, sock.ssh_opt.mode) == (
        pb.MountType.SSH,
        "agent",
        0o600,
    )
    assert "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0" in op.exec.meta.env
    assert set(md.caps) == {
        "exec.meta.base",
        "exec.mount.bind",
        "exec.mount.selector",
        "exec.mount.cache",
        "exec.mount.cache.sharing",
        "exec.mount.tmpfs",
        "exec.mount.secret",
        "exec.mount.ssh",
    }


def test_tmpfs_size_is_written_and_capped() -> None:
    op, md = _exec_of(llb.image(BUSYBOX).run("true", mounts=[llb.tmpfs("/t", size=4096)]))
    (t,) = [m for m in op.exec.mounts if m.dest == "/t"]
    assert t.tmpfs_opt.size == 4096
    assert "exec.mount.tmpfs.size" in md.caps
    _, md = _exec_of(llb.image(BUSYBOX).run("true", mounts=[llb.tmpfs("/t")]))
    assert "exec.mount.tmpfs.size" not in md.caps


def test_ssh_auth_sock_not_overridden_and_custom_dest() -> None:
    st = llb.image(BUSYBOX).with_env("SSH_AUTH_SOCK", "/mine")
    op, _ = _exec_of(st.run("true", mounts=[llb.ssh(dest="/s1"), llb.ssh()]))
    assert op.exec.meta.env == ["SSH_AUTH_SOCK=/mine"]
    assert [m.dest for m in op.exec.mounts][1:] == ["/s1", "/run/buildkit/ssh_agent.1"]


def test_secret_env() -> None:
    op, md = _exec_of(
        llb.image(BUSYBOX).run("true", secret_env=[llb.secret_env("TOKEN", id="tok")])
    )
    assert [(s.id, s.name, s.optional) for s in op.exec.secretenv] == [("tok", "TOKEN", False)]
    assert "exec.secretenv" in md.caps


def test_get_mount_results() -> None:
    base = llb.image(BUSYBOX).with_cwd("/w")
    src = llb.image(BUSYBOX).with_env("K", "v")
    es = base.run(
        "true",
        mounts=[llb.bind("/out", src), llb.bind("/ro", src, readonly=True), llb.cache("/c", "x")],
    )
    out = es.get_mount("/out")
    assert out.output is not None and out.output.index == 1
    assert out.output.vertex is es.output.vertex  # type: ignore[union-attr]
    assert out.get_env("K") == "v"  # keeps the mounted state's settings
    assert es.get_mount("/ro").output is src.output
    assert es.root().output is es.output and es.root().cwd == "/w"
    with pytest.raises(DefinitionError):
        es.get_mount("/c")
    with pytest.raises(DefinitionError):
        es.get_mount("/nope")
    d = _marshal(out)
    assert d.head_index == 1


def test_readonly_rootfs_root_is_the_input() -> None:
    base = llb.image(BUSYBOX)
    es = base.run("true", readonly_rootfs=True, mounts=[llb.bind("/o", llb.scratch())])
    assert es.root().output is base.output
    op, _ = _exec_of(es.get_mount("/o"))
    root = op.exec.mounts[0]
    assert (root.dest, root.readonly, root.output) == ("/", True, -1)
    assert op.exec.mounts[1].output == 0


def test_scratch_root_has_no_input() -> None:
    op, md = _exec_of(llb.scratch().run("/bin/true"))
    assert not op.inputs
    assert (op.exec.mounts[0].input, op.exec.mounts[0].output) == (-1, 0)
    assert "exec.mount.bind" not in md.caps


def test_duplicate_mount_dest_rejected() -> None:
    with pytest.raises(DefinitionError, match="/x"):
        llb.image(BUSYBOX).run("true", mounts=[llb.tmpfs("/x"), llb.cache("/x", "c")])
    with pytest.raises(DefinitionError):
        llb.image(BUSYBOX).run("true", mounts=[llb.tmpfs("/")])


def test_platform_from_state() -> None:
    st = llb.image(BUSYBOX, platform="linux/arm64").run("true").root()
    d = st.marshal(platform="linux/amd64")
    ops = [d.op(x) for x in d.digests[:-1]]
    assert [(o.platform.os, o.platform.architecture) for o in ops] == [
        ("linux", "arm64"),
        ("linux", "arm64"),
    ]
    st2 = llb.image(BUSYBOX).with_platform(llb.Platform("linux", "arm", "v7")).run("true")
    op, _ = _exec_of(st2)
    assert (op.platform.architecture, op.platform.variant) == ("arm", "v7")


def test_cache_mount_seeded_with_selector() -> None:
    seed = llb.image(BUSYBOX)
    op, md = _exec_of(
        llb.scratch().run("/bin/true", mounts=[llb.cache("/c", "id", source=seed, selector="/etc")])
    )
    (c,) = [m for m in op.exec.mounts if m.dest == "/c"]
    assert (c.input, c.output, c.selector, c.cache_opt.id) == (0, -1, "/etc", "id")
    assert "exec.mount.selector" in md.caps and "exec.mount.bind" not in md.caps


def test_definitions_compare_by_bytes() -> None:
    a = llb.image(BUSYBOX).marshal(platform="linux/amd64")
    b = llb.image(BUSYBOX).marshal(platform="linux/amd64")
    c = llb.image(BUSYBOX).marshal(platform="linux/arm64")
    assert a == b and hash(a) == hash(b) and a != c


def test_shlex_comments_and_extra_host_normalisation() -> None:
    op, _ = _exec_of(llb.image(BUSYBOX).run("echo a#b 'c # d' # trailing comment"))
    assert op.exec.meta.args == ["echo", "a#b", "c # d"]
    st = (
        llb.image(BUSYBOX)
        .with_extra_host("v4", "::ffff:10.0.0.1")
        .with_extra_host("v6", "2001:0db8:0000::0001")
    )
    op, _ = _exec_of(st.run("true"))
    assert [(h.host, h.ip) for h in op.exec.meta.extra_hosts] == [
        ("v4", "10.0.0.1"),
        ("v6", "2001:db8::1"),
    ]
    with pytest.raises(DefinitionError):
        st.with_extra_host("bad", "10.0.0.300")


def test_secret_id_defaults_to_dest_and_empty_dest_rejected() -> None:
    op, _ = _exec_of(llb.image(BUSYBOX).run("true", mounts=[llb.Secret("/run/s/x")]))
    assert op.exec.mounts[-1].secret_opt.id == "/run/s/x"
    assert llb.secret("/run/s/y").id == "/run/s/y"
    with pytest.raises(DefinitionError):
        llb.image(BUSYBOX).run("true", mounts=[llb.tmpfs("")])
