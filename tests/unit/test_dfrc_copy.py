"""COPY and ADD of the Dockerfile frontend: the FileOps dispatch_copy builds (BuildKit v0.11)."""

from __future__ import annotations

from typing import Any

import betterproto
import pytest

from bkcore import llb
from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile import instructions as ins
from bkcore.frontends.dockerfile.convert import add
from bkcore.frontends.dockerfile.convert.dispatch import dispatch
from bkcore.frontends.dockerfile.convert.state import DispatchOptions, DispatchState
from bkcore.frontends.dockerfile.parser import parse
from bkcore.frontends.dockerfile.shell import Lexer
from bkcore.llb import pb

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def stage(base: llb.State | None = None, *, name: str = "", total: int = 3) -> DispatchState:
    st = base if base is not None else llb.image("busybox").with_env("PATH", PATH)
    return DispatchState(
        stage=None,
        base_name="busybox",
        stage_name=name,
        state=st,
        image={"os": "linux", "architecture": "amd64", "config": {}},
        cmd_total=total,
        cmd_index=1,
        lexer=Lexer(),
    )


def options(**kw: Any) -> DispatchOptions:
    kw.setdefault("all_states", {})
    kw.setdefault("build_context", llb.local("context"))
    return DispatchOptions(lexer=Lexer(), **kw)


def do(d: DispatchState, text: str, opts: DispatchOptions | None = None) -> None:
    stages, _ = ins.parse_dockerfile(parse("FROM busybox\n" + text).ast)
    for cmd in stages[0].commands:
        dispatch(d, cmd, opts or options())


class Op:
    def __init__(self, digest: str, op: pb.Op, md: pb.OpMetadata) -> None:
        self.digest = digest
        self.op = op
        self.kind, self.body = betterproto.which_one_of(op, "op")
        self.md = md
        self.name = md.description.get(llb.CUSTOM_NAME, "")


def graph(st: llb.State) -> list[Op]:
    defn = st.marshal(platform="linux/amd64", local_unique_id="u")
    return [
        Op(dg, pb.Op().parse(raw), defn.metadata.get(dg, pb.OpMetadata()))
        for dg, raw in zip(defn.digests, defn.ops, strict=True)
    ]


def head(d: DispatchState) -> Op:
    """The op producing the stage's current state."""
    defn = d.state.marshal(platform="linux/amd64", local_unique_id="u")
    for o in graph(d.state):
        if o.digest == defn.head:
            return o
    raise AssertionError("no head")


def copies(o: Op) -> list[pb.FileActionCopy]:
    return [a.copy for a in o.body.actions if betterproto.which_one_of(a, "action")[0] == "copy"]


def source_of(o: Op, action_index: int, all_ops: list[Op]) -> Op:
    """The op feeding the secondary input of file action ``action_index`` of ``o``."""
    inp = o.op.inputs[o.body.actions[action_index].secondary_input]
    return next(x for x in all_ops if x.digest == inp.digest)


# ------------------------------------------------------------------------ COPY from the context
def test_copy_flags_destinations_and_followpaths() -> None:
    d = stage()
    d.state = d.state.with_cwd("/app")
    do(
        d,
        "COPY a.txt b/ rel/dir/\nCOPY c.txt .\nCOPY d.txt /abs/file\nCOPY e.txt sub\n"
        "COPY f* g?.txt [h]*.cfg /w/\n",
    )
    ops = graph(d.state)
    files = [o for o in ops if o.kind == "file"]
    assert [o.name for o in files] == [
        "[2/3] COPY a.txt b/ rel/dir/",
        "[3/3] COPY c.txt .",
        "[4/3] COPY d.txt /abs/file",
        "[5/3] COPY e.txt sub",
        "[6/3] COPY f* g?.txt [h]*.cfg /w/",
    ]
    first = copies(files[0])
    assert [(c.src, c.dest) for c in first] == [
        ("/a.txt", "/app/rel/dir/"),
        ("/b", "/app/rel/dir/"),
    ]
    c = first[0]
    assert c.follow_symlink and c.dir_copy_contents and c.create_dest_path
    assert c.allow_wildcard and c.allow_empty_wildcard
    assert not c.attempt_unpack_docker_compatibility
    assert c.mode == -1 and c.timestamp == -1
    # the second action of one FileOp chains onto the first (relative input index)
    acts = files[0].body.actions
    assert acts[0].output == -1 and acts[1].output == 0 and acts[1].input == len(files[0].op.inputs)
    assert [c.dest for c in (copies(files[1]) + copies(files[2]) + copies(files[3]))] == [
        "/app/",
        "/abs/file",
        "/app/sub",
    ]
    assert [c.src for c in copies(files[4])] == ["/f*", "/g?.txt", "/[h]*.cfg"]
    assert d.paths == {"/a.txt", "/b", "/c.txt", "/d.txt", "/e.txt", "/f*", "/g?.txt", "/[h]*.cfg"}
    hist = [h["created_by"] for h in d.image["history"]]
    assert hist[0] == "COPY a.txt b/ rel/dir/ # buildkit"
    assert all("empty_layer" not in h for h in d.image["history"])


def test_dot_dot_paths_stay_inside_the_context_and_the_image() -> None:
    """Sources are cleaned against the context root, destinations against the image root."""
    d = stage()
    d.state = d.state.with_cwd("/app")
    do(d, "COPY ../../etc/shadow ../../../../x/\nRUN --mount=source=../..,target=../../m true\n")
    f = next(o for o in graph(d.state) if o.kind == "file")
    (c,) = copies(f)
    assert (c.src, c.dest) == ("/etc/shadow", "/x/")
    ex = [o for o in graph(d.state) if o.kind == "exec"][-1].body
    (m,) = [m for m in ex.mounts if m.dest != "/"]
    assert (m.dest, m.selector) == ("/m", "")  # source "/" = the whole context, no selector
    assert d.paths == {"/etc/shadow", "/"}


def test_copy_sources_and_dest_are_expanded() -> None:
    d = stage()
    d.state = d.state.with_env("SRC", "report final.txt").with_env("DST", "/env dest/")
    do(d, "COPY ${SRC} ${DST}\n")
    (c,) = copies(head(d))
    assert (c.src, c.dest) == ("/report final.txt", "/env dest/")
    # COPY names are expanded with quote removal (processCmdEnv with the stage lexer)
    assert head(d).name == "[2/3] COPY report final.txt /env dest/"


@pytest.mark.parametrize(
    ("flag", "user", "group"),
    [
        ("--chown=app", ("name", "app"), None),
        ("--chown=app:staff", ("name", "app"), ("name", "staff")),
        ("--chown=1000", ("id", 1000), None),
        ("--chown=4242:4343", ("id", 4242), ("id", 4343)),
        ("--chown=root:extra", ("id", 0), ("name", "extra")),
        ("--chown=:extra", ("name", ""), ("name", "extra")),
    ],
)
def test_chown_forms(flag: str, user: tuple[str, Any], group: tuple[str, Any] | None) -> None:
    d = stage()
    do(d, f"COPY {flag} c.txt /o/\n")
    (c,) = copies(head(d))

    def ref(u: pb.UserOpt) -> tuple[str, Any]:
        kind, val = betterproto.which_one_of(u, "user")
        return ("id", val) if kind == "by_id" else ("name", val.name)

    assert ref(c.owner.user) == user
    if group is None:
        assert betterproto.which_one_of(c.owner.group, "user")[0] == ""
    else:
        assert ref(c.owner.group) == group
    # names are looked up in the destination's /etc/passwd: input 0 = the stage itself
    if user[0] == "name":
        assert c.owner.user.by_name.input == 0


def test_chown_from_arg_is_expanded() -> None:
    d = stage()
    do(d, "ARG OWNER=app\nCOPY --chown=${OWNER}:${OWNER} c.txt /o/\n")
    (c,) = copies(head(d))
    assert c.owner.user.by_name.name == "app" and c.owner.group.by_name.name == "app"


def test_chown_root_works_on_scratch() -> None:
    d = stage(llb.scratch())
    do(d, "COPY --chown=root:0 c.txt /o/\n")
    (c,) = copies(head(d))
    assert c.owner.user.by_id == 0 and c.owner.group.by_id == 0


@pytest.mark.parametrize(
    ("flag", "mode"),
    [("0750", 0o750), ("600", 0o600), ("u+x", -1), ("0o755", -1), ("+755", -1), ("7_5_5", -1)],
)
def test_chmod_octal_or_ignored(flag: str, mode: int) -> None:
    d = stage()
    do(d, f"COPY --chmod={flag} tree /t/\n")
    (c,) = copies(head(d))
    assert c.mode == mode


def test_exclude_and_parents_become_copy_patterns() -> None:
    d = stage()
    do(
        d,
        "COPY --exclude=*.tmp --exclude=cache/ src/ /dst/\n"
        "COPY --parents a/b/*.txt /keep/\n"
        "COPY --parents ./base/./x/y.cfg /piv/\n",
    )
    ops = [o for o in graph(d.state) if o.kind == "file"]
    (ex,) = copies(ops[0])
    assert list(ex.exclude_patterns) == ["*.tmp", "cache/"]
    assert "file.copy.includeexcludepatterns" in ops[0].md.caps
    (p1,) = copies(ops[1])
    assert (p1.src, list(p1.include_patterns), p1.dest) == ("/", ["a/b/*.txt"], "/keep/")
    (p2,) = copies(ops[2])
    assert (p2.src, list(p2.include_patterns)) == ("/base", ["x/y.cfg"])
    assert "COPY --parents a/b/*.txt /keep/ # buildkit" in [
        h["created_by"] for h in d.image["history"]
    ]


# ------------------------------------------------------------------------ --from
def test_copy_from_stage_by_name_and_index_and_image() -> None:
    producer = stage(name="producer")
    do(producer, "RUN mkdir /out\n")
    opts = options(all_states={"producer": producer, "0": producer})
    d = stage()
    do(
        d,
        "COPY --from=producer /out/ /p1/\nCOPY --from=0 /out/x /p2\n"
        "COPY --from=alpine /etc/os-release /p3\n",
        opts,
    )
    ops = graph(d.state)
    files = [o for o in ops if o.kind == "file"]
    produced = producer.state.marshal(platform="linux/amd64").head
    for f in files[:2]:
        assert source_of(f, 0, ops).digest == produced
    assert source_of(files[2], 0, ops).body.identifier == (
        "docker-image://docker.io/library/alpine:latest"
    )
    assert [c.src for f in files for c in copies(f)] == ["/out", "/out/x", "/etc/os-release"]
    assert d.paths == set()  # --from never reads the build context


def test_copy_from_a_bad_index_fails_with_the_line() -> None:
    d = stage()
    with pytest.raises(FrontendError) as err:
        do(d, "COPY --from=5 /only.txt /\n")
    assert "invalid stage index 5" in str(err.value)
    assert err.value.line == 2


def test_copy_from_named_context() -> None:
    ctx = llb.local("mytools")
    d = stage()
    do(d, "COPY --from=tools /bin/x /x\n", options(named_contexts={"tools": ctx}))
    ops = graph(d.state)
    (f,) = [o for o in ops if o.kind == "file"]
    assert source_of(f, 0, ops).body.identifier == "local://mytools"


# ------------------------------------------------------------------------ heredocs
def test_heredoc_sources_are_files_on_scratch() -> None:
    d = stage()
    d.state = d.state.with_env("VERSION", "3.2.1")
    do(
        d,
        "COPY <<info.txt <<'raw.txt' /meta/\nversion=$VERSION \"q\"\ninfo.txt\n"
        "version=$VERSION\nraw.txt\n"
        "COPY --chmod=0755 <<EOF /bin/run\n#!/bin/sh\nEOF\n",
    )
    ops = graph(d.state)
    files = [o for o in ops if o.kind == "file" and copies(o)]
    first, second = files
    inline = [source_of(first, i, ops) for i in range(2)]
    mk = [x.body.actions[0].mkfile for x in inline]
    assert [(m.path, m.mode) for m in mk] == [("/info.txt", 0o664), ("/raw.txt", 0o664)]
    assert mk[0].data == b'version=3.2.1 "q"\n'  # expanded, quotes kept (ExpandRaw)
    assert mk[1].data == b"version=$VERSION\n"  # quoted delimiter: not expanded
    assert all(x.name == "[internal] preparing inline document" for x in inline)
    c = copies(first)
    assert [(x.src, x.dest) for x in c] == [("/info.txt", "/meta/"), ("/raw.txt", "/meta/")]
    assert not c[0].follow_symlink and not c[0].allow_wildcard and c[0].create_dest_path
    (run,) = copies(second)
    assert (run.src, run.dest, run.mode) == ("/EOF", "/bin/run", 0o755)
    hist = [h["created_by"] for h in d.image["history"]]
    assert hist == ["COPY <<info.txt <<raw.txt /meta/ # buildkit", "COPY <<EOF /bin/run # buildkit"]
    assert d.paths == set()


# ------------------------------------------------------------------------ --link
def test_link_copies_onto_scratch_and_merges() -> None:
    d = stage()
    base = d.state.marshal(platform="linux/amd64").head
    do(d, "COPY --link --chown=1000:1000 lk2.txt /linked/new/\n")
    ops = graph(d.state)
    merge = head(d)
    assert merge.kind == "merge"
    assert [i.input for i in merge.body.inputs] == [0, 1]
    assert merge.op.inputs[0].digest == base
    layer = next(o for o in ops if o.digest == merge.op.inputs[1].digest)
    assert layer.kind == "file"
    assert layer.body.actions[0].input == -1  # onto scratch
    (c,) = copies(layer)
    assert (c.src, c.dest, c.owner.user.by_id) == ("/lk2.txt", "/linked/new/", 1000)
    assert merge.name == "[2/3] LINK COPY --link --chown=1000:1000 lk2.txt /linked/new/"
    pg_copy, pg_merge = layer.md.progress_group, merge.md.progress_group
    assert pg_copy.id == pg_merge.id and pg_copy.weak and not pg_merge.weak
    assert pg_copy.name == "[2/3] COPY --link --chown=1000:1000 lk2.txt /linked/new/"
    assert layer.name == pg_copy.name
    assert d.image["history"][-1]["created_by"] == "COPY lk2.txt /linked/new/ # buildkit"
    assert d.cmd_index == 2


def test_link_ops_carry_the_source_location_and_ignore_cache() -> None:
    text = "FROM busybox\nCOPY --link f /x\n"
    sm = llb.SourceMap("Dockerfile", text.encode())
    d = stage()
    d.ignore_cache = True
    do(d, "COPY --link f /x\n", options(source_map=sm))
    defn = d.state.marshal(platform="linux/amd64", local_unique_id="u")
    src = defn.to_pb().source
    located = set(src.locations)
    ops = graph(d.state)
    merge = head(d)
    layer = next(o for o in ops if o.digest == merge.op.inputs[1].digest)
    assert {merge.digest, layer.digest} <= located
    for o in (merge, layer):
        (loc,) = src.locations[o.digest].locations
        assert loc.ranges[0].start.line == 2
        assert o.md.ignore_cache


def test_link_with_chown_by_name_fails_with_the_line() -> None:
    d = stage()
    with pytest.raises(FrontendError) as err:
        do(d, "COPY --link --chown=app:1 f /x\n")
    assert "invalid user index: -1" in str(err.value) and "--chown=app:1" in str(err.value)
    assert err.value.line == 2
    do(d, "COPY --link --chown=root:0 f /x\n")  # root and ids are fine


def test_link_with_chmod_is_a_plain_copy() -> None:
    d = stage()
    do(d, "COPY --link --chmod=0600 f /x\n")
    assert head(d).kind == "file"


def test_link_onto_scratch_is_just_the_copy() -> None:
    d = stage(llb.scratch())
    do(d, "COPY --link f /x\n")
    assert head(d).kind == "file"


# ------------------------------------------------------------------------ ADD
def test_add_unpacks_local_archives_but_not_urls() -> None:
    d = stage()
    do(d, "ADD bundle.tar https://example.com/dl/tool.tar.gz?x=1 /x/\n")
    ops = graph(d.state)
    f = head(d)
    local_copy, url_copy = copies(f)
    assert local_copy.attempt_unpack_docker_compatibility
    assert (url_copy.src, url_copy.dest) == ("/tool.tar.gz", "/x/")
    assert not url_copy.attempt_unpack_docker_compatibility and not url_copy.follow_symlink
    http = source_of(f, 1, ops)
    assert http.body.identifier == "https://example.com/dl/tool.tar.gz?x=1"
    assert http.body.attrs == {"http.filename": "tool.tar.gz"}
    assert d.paths == {"/bundle.tar"}
    assert d.image["history"][-1]["created_by"] == (
        "ADD bundle.tar https://example.com/dl/tool.tar.gz?x=1 /x/ # buildkit"
    )


def test_add_checksum_and_url_without_a_name() -> None:
    sha = "sha256:" + "ab" * 32
    d = stage()
    do(d, f"ADD --checksum={sha} --chown=app https://example.com/ /dl/\n")
    ops = graph(d.state)
    f = head(d)
    (c,) = copies(f)
    assert c.src == "/__unnamed__" and c.owner.user.by_name.name == "app"
    assert source_of(f, 0, ops).body.attrs == {"http.checksum": sha, "http.filename": "__unnamed__"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ADD --checksum=sha256:abc a b /x/", "checksum can't be specified for multiple sources"),
        ("ADD --checksum=sha256:abc local.txt /x", "checksum can't be specified for non-HTTP"),
        ("ADD --checksum=md5:00 https://e.com/f /x", "unsupported digest algorithm"),
        ("ADD --checksum=sha256:zz https://e.com/f /x", "invalid checksum digest"),
        ("COPY https://e.com/f /x", "source can't be a URL for COPY"),
        ("COPY https://github.com/a/b.git /x", "source can't be a git ref for COPY"),
    ],
)
def test_add_and_copy_errors_name_the_line(line: str, message: str) -> None:
    d = stage()
    with pytest.raises(FrontendError) as err:
        do(d, "\n" + line + "\n")
    assert message in str(err.value)
    assert str(err.value).startswith("Dockerfile:3: ")


def test_add_git_repositories() -> None:
    d = stage()
    do(
        d,
        "ADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.11.6:docs /src/\n"
        "ADD git@github.com:moby/buildkit.git /ssh/\n",
    )
    ops = graph(d.state)
    files = [o for o in ops if o.kind == "file"]
    g1 = source_of(files[0], 0, ops)
    assert g1.body.identifier == "git://github.com/moby/buildkit.git#v0.11.6:docs"
    assert g1.body.attrs["git.keepgitdir"] == "true"
    assert g1.body.attrs["git.fullurl"] == "https://github.com/moby/buildkit.git"
    (c,) = copies(files[0])
    assert (c.src, c.dest, c.create_dest_path, c.follow_symlink) == ("/", "/src/", True, False)
    g2 = source_of(files[1], 0, ops)
    assert g2.body.identifier == "git://github.com/moby/buildkit.git"
    assert "git.keepgitdir" not in g2.body.attrs
    assert d.paths == {"/git@github.com:moby/buildkit.git"}  # BuildKit records it too


# ------------------------------------------------------------------------ add.py helpers
@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("https://github.com/a/b.git", ("https://github.com/a/b.git", "", "")),
        (
            "https://github.com/a/b.git#main:sub/dir",
            ("https://github.com/a/b.git", "main", "sub/dir"),
        ),
        ("git://host/x#v1", ("git://host/x", "v1", "")),
        ("git@github.com:a/b.git#dev", ("git@github.com:a/b.git", "dev", "")),
        ("ssh://git@host/x.git", ("ssh://git@host/x.git", "", "")),
        ("https://example.com/file.tar.gz", None),
        ("local/dir", None),
    ],
)
def test_parse_git_ref(ref: str, want: tuple[str, str, str] | None) -> None:
    got = add.parse_git_ref(ref)
    assert (None if got is None else (got.remote, got.commit, got.subdir)) == want


def test_github_shorthand_is_a_local_path() -> None:
    ref = add.parse_git_ref("github.com/a/b")
    assert ref is not None and ref.indistinguishable_from_local
    assert not add.is_git_source("github.com/a/b") and not add.is_http_source("github.com/a/b")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://e.com/a/b.txt", "b.txt"),
        ("https://e.com/a/b/", "b"),
        ("https://e.com", "__unnamed__"),
        ("https://e.com/", "__unnamed__"),
        ("http://e.com/x.tgz?sig=1#frag", "x.tgz"),
    ],
)
def test_url_filename(url: str, name: str) -> None:
    assert add.url_filename(url) == name
