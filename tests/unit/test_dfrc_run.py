"""RUN of the Dockerfile frontend: the exec ops dispatch_run builds (BuildKit v0.11 shapes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import betterproto
import pytest

from bkcore import llb
from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile import instructions as ins
from bkcore.frontends.dockerfile.convert.copy import dispatch_copy
from bkcore.frontends.dockerfile.convert.dispatch import dispatch
from bkcore.frontends.dockerfile.convert.run import dispatch_run
from bkcore.frontends.dockerfile.convert.state import DispatchOptions, DispatchState
from bkcore.frontends.dockerfile.parser import parse
from bkcore.frontends.dockerfile.shell import Lexer
from bkcore.llb import pb

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX = "127.0.0.1:5000/busybox:latest"


def commands(dockerfile: str) -> list[Any]:
    """Typed commands of a one-stage Dockerfile (FROM excluded)."""
    stages, _ = ins.parse_dockerfile(parse(dockerfile).ast)
    return list(stages[0].commands)


def stage(
    base: llb.State | None = None,
    *,
    total: int = 3,
    name: str = "",
    config: dict[str, Any] | None = None,
    build_args: list[tuple[str, str | None]] | None = None,
) -> DispatchState:
    st = base if base is not None else llb.image("busybox").with_env("PATH", PATH)
    for k, v in build_args or ():
        if v is not None:
            st = st.with_env(k, v)
    d = DispatchState(
        stage=None,
        base_name="busybox",
        stage_name=name,
        state=st,
        image={"os": "linux", "architecture": "amd64", "config": dict(config or {})},
        cmd_total=total,
        cmd_index=1,
        lexer=Lexer(),
        build_args=list(build_args or ()),
    )
    return d


def options(**kw: Any) -> DispatchOptions:
    kw.setdefault("all_states", {})
    kw.setdefault("build_context", llb.local("context"))
    return DispatchOptions(lexer=Lexer(), **kw)


def run(d: DispatchState, line: str, opts: DispatchOptions | None = None) -> None:
    """Dispatch the instructions of ``line`` as the converter does (expand, then dispatch)."""
    for cmd in commands("FROM busybox\n" + line):
        dispatch(d, cmd, opts or options())


class Op:
    """One decoded op: ``kind`` (exec, file, source, merge, ...), its body and metadata."""

    def __init__(self, digest: str, op: pb.Op, md: pb.OpMetadata) -> None:
        self.digest = digest
        self.op = op
        self.kind, self.body = betterproto.which_one_of(op, "op")
        self.md = md
        self.name = md.description.get(llb.CUSTOM_NAME, "")


def graph(d: DispatchState) -> list[Op]:
    defn = d.state.marshal(platform="linux/amd64")
    return [
        Op(dg, pb.Op().parse(raw), defn.metadata.get(dg, pb.OpMetadata()))
        for dg, raw in zip(defn.digests, defn.ops, strict=True)
    ]


def of_kind(d: DispatchState, kind: str) -> list[Op]:
    return [o for o in graph(d) if o.kind == kind]


def last_exec(d: DispatchState) -> tuple[pb.ExecOp, pb.OpMetadata]:
    o = of_kind(d, "exec")[-1]
    return o.body, o.md


def by_dest(ex: pb.ExecOp) -> dict[str, pb.Mount]:
    return {m.dest: m for m in ex.mounts}


# ------------------------------------------------------------------------ golden vector
def test_v6_vector_copy_and_run_are_byte_identical_to_buildkit() -> None:
    """The COPY and RUN of vector v6 (dockerfile2llb v0.11.6 output) come out byte for byte:
    copy flags, dest ``/app/``, cache mount id ``//cache``, names, locations, descriptions."""
    dockerfile = (
        b"FROM 127.0.0.1:5000/busybox:latest\nWORKDIR /app\nCOPY hello.txt .\n"
        b"RUN --mount=type=cache,target=/cache echo built > /app/built.txt\n"
    )
    sm = llb.SourceMap("Dockerfile", dockerfile)
    ref = f"{BUSYBOX}@sha256:19d8ea11e2406270ad7f026c84d875d4178da57f645543ed5617232693aec620"
    desc = {
        llb.CUSTOM_NAME: f"[stage-0 1/4] FROM {ref}",
        "com.docker.dockerfile.v1.command": f"FROM {BUSYBOX}",
    }
    base = llb.image(
        ref, meta=llb.OpMeta(description=desc, source_locations=(sm.location(llb.Range(1)),))
    )
    work = base.file(
        llb.mkdir("/app", 0o755, parents=True),
        meta=llb.OpMeta(
            description={llb.CUSTOM_NAME: "[stage-0 2/4] WORKDIR /app"},
            source_locations=(sm.location(llb.Range(2)),),
        ),
    ).with_cwd("/app")
    ctx = llb.local(
        "context",
        session_id="vectorsession00000000000000",
        follow_paths=["hello.txt"],
        shared_key_hint="context",
        custom_name="[internal] load build context",
    )
    d = stage(work.with_env("PATH", PATH), total=4, name="stage-0")
    d.cmd_index = 2
    opts = options(build_context=ctx, source_map=sm)
    cmds = commands(dockerfile.decode())
    for cmd in cmds[1:]:
        cmd.expand(d.expander())
    dispatch_copy(d, cmds[1], opts)
    dispatch_run(d, cmds[2], opts)
    defn = d.state.marshal(platform="linux/amd64", daemon_caps={"exec.meta.setsdefaultpath"})
    want = json.loads((VECTORS / "v6_dockerfile.json").read_text())
    assert [o["digest"] for o in want["ops"]] == list(defn.digests)
    assert defn.to_bytes() == (VECTORS / "v6_dockerfile.llb").read_bytes()
    assert d.paths == {"/hello.txt"}
    assert [h["created_by"] for h in d.image["history"]] == [
        "COPY hello.txt . # buildkit",
        "RUN /bin/sh -c echo built > /app/built.txt # buildkit",
    ]
    assert all(h.get("empty_layer") is None for h in d.image["history"])


# ------------------------------------------------------------------------ command forms
def test_shell_form_uses_the_stage_shell_and_json_form_runs_as_written() -> None:
    d = stage(config={"Shell": ["/bin/bash", "-eu", "-c"]})
    run(d, 'RUN echo "a  b" $HOME')
    ex, md = last_exec(d)
    assert ex.meta.args == ["/bin/bash", "-eu", "-c", 'echo "a  b" $HOME']
    assert md.description["com.docker.dockerfile.v1.command"] == 'RUN echo "a  b" $HOME'
    d2 = stage()
    run(d2, 'RUN ["/bin/echo", "x y"]')
    ex2, _ = last_exec(d2)
    assert ex2.meta.args == ["/bin/echo", "x y"]
    assert d2.image["history"][-1]["created_by"] == "RUN /bin/echo x y # buildkit"


def test_env_cwd_user_come_from_the_stage_and_args_are_in_env_and_history() -> None:
    d = stage(build_args=[("VERSION", "1.2"), ("EMPTY", None)])
    d.state = d.state.with_cwd("/src").with_user("app").with_env("MODE", "prod")
    run(d, "RUN make $VERSION")
    ex, md = last_exec(d)
    assert ex.meta.env == [f"PATH={PATH}", "VERSION=1.2", "MODE=prod"]
    assert ex.meta.cwd == "/src"
    assert ex.meta.user == "app"
    # the RUN name keeps unset variables and quotes as written (RawQuotes/SkipUnsetEnv)
    assert md.description[llb.CUSTOM_NAME] == "[2/3] RUN make 1.2"
    assert d.image["history"][-1]["created_by"] == (
        "RUN |2 VERSION=1.2 EMPTY= /bin/sh -c make $VERSION # buildkit"
    )
    # the process settings stay on the stage state, not in the image config
    assert "Env" not in d.image["config"]


def test_run_name_keeps_quotes_and_unset_variables() -> None:
    d = stage()
    run(d, "RUN echo \"$UNSET\" 'q' $PATH")
    _, md = last_exec(d)
    assert md.description[llb.CUSTOM_NAME] == f"[2/3] RUN echo \"$UNSET\" 'q' {PATH}"


def test_ignore_cache_marks_the_exec() -> None:
    d = stage()
    d.ignore_cache = True
    run(d, "RUN true")
    _, md = last_exec(d)
    assert md.ignore_cache is True


# ------------------------------------------------------------------------ heredocs
def test_heredoc_alone_is_the_shell_script() -> None:
    d = stage()
    run(d, "RUN <<EOF\necho one\necho two\nEOF\n")
    ex, md = last_exec(d)
    assert ex.meta.args == ["/bin/sh", "-c", "echo one\necho two\n"]
    assert md.description[llb.CUSTOM_NAME] == "[2/3] RUN <<EOF (echo one...)"


def test_heredoc_chomp_strips_leading_tabs() -> None:
    d = stage()
    run(d, "RUN <<-EOF\n\techo one\n\t\techo two\nEOF\n")
    ex, _ = last_exec(d)
    assert ex.meta.args == ["/bin/sh", "-c", "echo one\necho two\n"]


def test_heredoc_with_shebang_runs_a_mounted_file() -> None:
    d = stage()
    run(d, "RUN <<EOT\n#!/bin/busybox sh\necho hi\nEOT\n")
    ex, _ = last_exec(d)
    assert ex.meta.args == ["/bin/sh", "-c", "/dev/pipes/EOT"]
    pipes = by_dest(ex)["/dev/pipes/"]
    assert pipes.readonly and pipes.selector == "/" and pipes.output == -1
    (mk,) = of_kind(d, "file")
    act = mk.body.actions[0].mkfile
    assert (act.path, act.mode, act.data) == ("/EOT", 0o755, b"#!/bin/busybox sh\necho hi\n")
    assert mk.name == "[internal] preparing inline document"


def test_heredoc_inside_a_command_is_handed_to_the_shell() -> None:
    d = stage()
    run(d, "RUN cat <<EOF > /out\nline $X\nEOF\n")
    ex, _ = last_exec(d)
    assert ex.meta.args == ["/bin/sh", "-c", "cat <<EOF > /out\nline $X\nEOF"]


def test_heredoc_followed_by_a_command_is_not_a_script() -> None:
    """``RUN <<EOF awk ...``: the marker is not a whole word, so the shell gets it all."""
    d = stage()
    run(d, "RUN <<EOF awk '{print $1}' > /m/upper.txt\nmake me loud\nEOF\n")
    ex, _ = last_exec(d)
    assert ex.meta.args == [
        "/bin/sh",
        "-c",
        "<<EOF awk '{print $1}' > /m/upper.txt\nmake me loud\nEOF",
    ]


def test_several_heredocs_are_all_appended() -> None:
    d = stage()
    run(d, "RUN cat <<A <<B > /x\na\nA\nb\nB\n")
    ex, _ = last_exec(d)
    assert ex.meta.args == ["/bin/sh", "-c", "cat <<A <<B > /x\na\nA\nb\nB"]


# ------------------------------------------------------------------------ mounts
def test_bind_mounts_from_context_stage_and_image() -> None:
    assets = stage(name="assets")
    run(assets, "RUN mkdir /assets")
    opts = options(all_states={"assets": assets, "0": assets})
    d = stage()
    d.state = d.state.with_cwd("/work")
    run(
        d,
        "RUN --mount=type=bind,from=assets,source=/assets,target=/mnt/a,rw "
        "--mount=source=cfg/app.conf,target=rel/app.conf "
        "--mount=from=alpine,target=/img true",
        opts,
    )
    ex, _ = last_exec(d)
    m = by_dest(ex)
    assert m["/mnt/a"].selector == "/assets"
    assert m["/mnt/a"].readonly is False and m["/mnt/a"].output == -1  # rw: no output
    assert m["/work/rel/app.conf"].readonly is True
    assert m["/work/rel/app.conf"].selector == "/cfg/app.conf"
    assert m["/img"].readonly is True
    idents = [o.body.identifier for o in of_kind(d, "source")]
    assert "local://context" in idents
    assert "docker-image://docker.io/library/alpine:latest" in idents
    # the stage's output is the input of the /mnt/a mount
    exec_op = of_kind(d, "exec")[-1].op
    src = exec_op.inputs[m["/mnt/a"].input]
    assert src.digest == assets.state.marshal(platform="linux/amd64").head
    assert d.paths == {"/cfg/app.conf"}


def test_context_bind_without_source_asks_for_the_whole_context() -> None:
    d = stage()
    run(d, "RUN --mount=target=/ctx ls /ctx")
    assert d.paths == {"/"}


def test_cache_mounts_id_namespace_sharing_and_permissions() -> None:
    d = stage()
    opts = options(cache_mount_ns="ns1")
    run(
        d,
        "RUN --mount=type=cache,target=/root/.cache "
        "--mount=type=cache,id=k7,target=/var/cc,sharing=locked "
        "--mount=type=cache,target=/home/app/c,uid=1000,gid=1001,mode=0750,sharing=private true",
        opts,
    )
    ex, _ = last_exec(d)
    m = by_dest(ex)
    assert m["/root/.cache"].cache_opt.id == "ns1//root/.cache"
    assert m["/root/.cache"].mount_type == pb.MountType.CACHE
    assert m["/root/.cache"].input == -1
    assert m["/var/cc"].cache_opt.id == "ns1/k7"
    assert m["/var/cc"].cache_opt.sharing == pb.CacheSharingOpt.LOCKED
    perm = m["/home/app/c"]
    assert perm.cache_opt.sharing == pb.CacheSharingOpt.PRIVATE
    assert perm.selector == "/cache" and perm.input >= 0
    (seed,) = of_kind(d, "file")
    mk = seed.body.actions[0].mkdir
    assert (mk.path, mk.mode) == ("/cache", 0o750)
    assert (mk.owner.user.by_id, mk.owner.group.by_id) == (1000, 1001)
    assert seed.name == "[internal] settings cache mount permissions"
    assert d.paths == set()  # cache mounts never read the context


def test_cache_mount_seeded_from_a_stage_path() -> None:
    seed = stage(name="seed")
    run(seed, "RUN mkdir -p /deps\n")
    opts = options(all_states={"seed": seed})
    d = stage()
    run(d, "RUN --mount=type=cache,from=seed,source=/deps,target=/cache/deps true", opts)
    ex, _ = last_exec(d)
    m = by_dest(ex)["/cache/deps"]
    assert m.mount_type == pb.MountType.CACHE and m.selector == "/deps"
    exec_op = of_kind(d, "exec")[-1].op
    assert exec_op.inputs[m.input].digest == seed.state.marshal(platform="linux/amd64").head
    assert m.cache_opt.id == "//cache/deps"


def test_dispatch_run_parses_mounts_itself_when_not_expanded() -> None:
    """Without the converter's expand() pass, dispatch_run parses --mount with the stage env."""
    d = stage(build_args=[("T", "/t")])
    (cmd,) = commands("FROM busybox\nRUN --mount=type=tmpfs,target=$T true\n")
    assert cmd.mount_specs == []
    dispatch_run(d, cmd, options())
    ex, _ = last_exec(d)
    assert by_dest(ex)["/t"].mount_type == pb.MountType.TMPFS


def test_tmpfs_secret_and_ssh_mounts() -> None:
    d = stage()
    run(
        d,
        "RUN --mount=type=tmpfs,target=/scratch,size=1m "
        "--mount=type=secret,id=api_token "
        "--mount=type=secret,id=cfg,target=/etc/app.ini,mode=0440,uid=1000,gid=65534,required "
        "--mount=type=secret,target=/run/tok "
        "--mount=type=ssh "
        "--mount=type=ssh,id=gh,target=/run/gh.sock,required=true true",
    )
    ex, _ = last_exec(d)
    m = by_dest(ex)
    assert m["/scratch"].mount_type == pb.MountType.TMPFS
    assert m["/scratch"].tmpfs_opt.size == 1024 * 1024
    tok = m["/run/secrets/api_token"].secret_opt
    assert (tok.id, tok.mode, tok.uid, tok.gid, tok.optional) == ("api_token", 0o400, 0, 0, True)
    cfg = m["/etc/app.ini"].secret_opt
    assert (cfg.id, cfg.mode, cfg.uid, cfg.gid, cfg.optional) == ("cfg", 0o440, 1000, 65534, False)
    assert m["/run/tok"].secret_opt.id == "tok"  # id from the target's base name
    assert m["/run/buildkit/ssh_agent.0"].ssh_opt.optional is True
    gh = m["/run/gh.sock"].ssh_opt
    assert (gh.id, gh.optional, gh.mode) == ("gh", False, 0o600)
    assert "SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0" in ex.meta.env
    assert d.paths == {"/"}  # a tmpfs counts as a context mount of "/" (BuildKit quirk)


def test_mount_values_are_expanded_with_stage_variables() -> None:
    d = stage(build_args=[("CDIR", "/var/cache/x")])
    run(d, "RUN --mount=type=cache,target=$CDIR,id=c-${CDIR} true")
    ex, _ = last_exec(d)
    assert by_dest(ex)["/var/cache/x"].cache_opt.id == "/c-/var/cache/x"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("RUN --mount=type=tmpfs,target=/t,mode=0700 true", 'mode not allowed for "tmpfs"'),
        ("RUN --mount=type=secret,id=tok,env=TOKEN true", "unexpected key 'env' in 'env=TOKEN'"),
        ("RUN --mount=type=cache,target=/ true", 'invalid mount target "/"'),
        ("RUN --mount=type=ssh,source=x true", "ssh does not support source"),
    ],
)
def test_bad_mounts_name_the_dockerfile_line(line: str, message: str) -> None:
    d = stage()
    with pytest.raises(FrontendError) as err:
        run(d, "\n" + line)
    assert message in str(err.value)
    assert err.value.line == 3
    assert str(err.value).startswith("Dockerfile:3: ")


# ------------------------------------------------------------------------ network, security, opts
def test_network_and_security_modes() -> None:
    d = stage()
    run(d, "RUN --network=none --security=insecure true")
    ex, _ = last_exec(d)
    assert ex.network == pb.NetMode.NONE
    assert ex.security == pb.SecurityMode.INSECURE
    run(d, "RUN --network=host true")
    ex, _ = last_exec(d)
    assert ex.network == pb.NetMode.HOST and ex.security == pb.SecurityMode.SANDBOX
    run(d, "RUN --network=default true")
    ex, _ = last_exec(d)
    assert ex.network == pb.NetMode.UNSET


def test_build_wide_process_options_apply_to_this_run_only() -> None:
    opts = options(
        extra_hosts=[("db.local", "10.0.0.7")],
        ulimits=[llb.Ulimit("nofile", 1024, 2048)],
        shm_size=64 * 1024 * 1024,
        cgroup_parent="/bk",
        proxy_env=llb.ProxyEnv(http_proxy="http://proxy:3128"),
    )
    d = stage()
    run(d, "RUN true", opts)
    ex, _ = last_exec(d)
    assert [(h.host, h.ip) for h in ex.meta.extra_hosts] == [("db.local", "10.0.0.7")]
    assert [(u.name, u.soft, u.hard) for u in ex.meta.ulimit] == [("nofile", 1024, 2048)]
    assert by_dest(ex)["/dev/shm"].tmpfs_opt.size == 64 * 1024 * 1024
    assert ex.meta.cgroup_parent == "/bk"
    assert ex.meta.proxy_env.http_proxy == "http://proxy:3128"
    assert d.state._extra_hosts == ()  # not inherited by the stage state
