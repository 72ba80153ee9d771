"""FileOp encoding: each action's options, chaining indexes, paths against the cwd."""

from __future__ import annotations

import datetime as dt

import betterproto
import pytest

from bkcore import llb
from bkcore.errors import DefinitionError
from bkcore.llb import pb

BUSYBOX = "127.0.0.1:5000/busybox:latest"


def _file_op(st: llb.State) -> tuple[pb.Op, pb.OpMetadata]:
    d = st.marshal(platform="linux/amd64")
    assert d.head is not None
    op = d.op(d.head)
    assert op.file is not None and op.file.actions
    return op, d.metadata[d.head]


def test_mkdir_options() -> None:
    when = dt.datetime(2020, 1, 2, 3, 4, 5, 600_000, tzinfo=dt.UTC)
    st = llb.image(BUSYBOX).file(
        llb.mkdir("/d", 0o2750, parents=True, owner="app:staff", created=when)
    )
    op, md = _file_op(st)
    (a,) = op.file.actions
    assert (a.input, a.secondary_input, a.output) == (0, -1, 0)
    assert a.mkdir.path == "/d"
    assert a.mkdir.mode == 0o750  # permission bits only, like the Go client
    assert a.mkdir.make_parents is True
    assert a.mkdir.timestamp == 1577934245_600_000_000
    assert a.mkdir.owner.user.by_name.name == "app"
    assert a.mkdir.owner.user.by_name.input == 0
    assert a.mkdir.owner.group.by_name.name == "staff"
    assert dict(md.caps) == {"file.base": True}


def test_mkfile_owner_by_id_and_default_timestamp() -> None:
    op, _ = _file_op(llb.scratch().file(llb.mkfile("f", 0o600, "é", owner=0)))
    (a,) = op.file.actions
    assert (a.input, a.output) == (-1, 0)
    assert a.mkfile.path == "/f"
    assert a.mkfile.data == "é".encode()
    assert a.mkfile.timestamp == -1
    # uid 0 is still written (the oneof member is selected)
    assert a.mkfile.owner.user.by_id == 0
    assert bytes(a.mkfile.owner.user) == b"\x10\x00"


def test_rm_options_and_wildcard_cap() -> None:
    op, md = _file_op(
        llb.image(BUSYBOX).file(llb.rm("/tmp/*.log", allow_not_found=True, allow_wildcard=True))
    )
    (a,) = op.file.actions
    assert (a.rm.path, a.rm.allow_not_found, a.rm.allow_wildcard) == ("/tmp/*.log", True, True)
    assert "file.rm.wildcard" in md.caps


def test_copy_options() -> None:
    src = llb.image(BUSYBOX).with_cwd("/usr")
    st = llb.scratch().file(
        llb.copy(
            src,
            "bin/../lib/",
            "/out/",
            mode=0o4755,
            follow_symlinks=True,
            dir_contents_only=True,
            include_patterns=["*.so"],
            exclude_patterns=["x*"],
            attempt_unpack=True,
            create_dest_path=True,
            allow_wildcard=True,
            allow_empty_wildcard=True,
            owner="1:2",
            created=123,
        )
    )
    op, md = _file_op(st)
    (a,) = op.file.actions
    c = a.copy
    assert (a.input, a.secondary_input) == (-1, 0)
    assert c.src == "/usr/lib"  # relative to the source's cwd, cleaned
    assert c.dest == "/out/"
    assert c.mode == 0o4755
    assert c.follow_symlink and c.dir_copy_contents and c.attempt_unpack_docker_compatibility
    assert c.create_dest_path and c.allow_wildcard and c.allow_empty_wildcard
    assert c.include_patterns == ["*.so"] and c.exclude_patterns == ["x*"]
    assert (c.owner.user.by_id, c.owner.group.by_id) == (1, 2)
    assert c.timestamp == 123
    assert "file.copy.includeexcludepatterns" in md.caps


def test_copy_default_mode_is_minus_one() -> None:
    op, _ = _file_op(llb.scratch().file(llb.copy(llb.image(BUSYBOX), "/bin/sh", "/sh")))
    assert op.file.actions[0].copy.mode == -1
    assert op.file.actions[0].copy.timestamp == -1


@pytest.mark.parametrize(
    ("cwd", "dest", "want"),
    [
        ("/", "x", "/x"),
        ("/app", "x", "/app/x"),
        ("/app", "./", "/app/"),
        ("/app", ".", "/app"),
        ("/app", "sub/.", "/app/sub/."),
        ("/app", "/abs//y/", "/abs/y/"),
        ("/app", "../up", "/up"),
        ("/", "/.", "/."),
    ],
)
def test_copy_dest_resolved_against_target_cwd(cwd: str, dest: str, want: str) -> None:
    st = llb.image(BUSYBOX).with_cwd(cwd).file(llb.copy(llb.image(BUSYBOX), "/etc", dest))
    op, _ = _file_op(st)
    assert op.file.actions[0].copy.dest == want


def test_paths_resolved_against_cwd_of_the_target() -> None:
    st = llb.image(BUSYBOX).with_cwd("/w").file(llb.mkdir("a/b").mkfile("a/b/f").rm("./g"))
    op, _ = _file_op(st)
    paths = [betterproto.which_one_of(a, "action") for a in op.file.actions]
    assert [(k, getattr(v, "path", None)) for k, v in paths] == [
        ("mkdir", "/w/a/b"),
        ("mkfile", "/w/a/b/f"),
        ("rm", "/w/g"),
    ]


def test_chain_indexes_and_input_dedup() -> None:
    base = llb.image(BUSYBOX)
    other = llb.scratch().file(llb.mkfile("/o", 0o644, b"o"))
    chain = (
        llb.copy(other, "/o", "/1")
        .copy(base, "/etc/passwd", "/2")  # base again: same input position
        .copy(other, "/o", "/3")
        .mkdir("/4")
    )
    op, _ = _file_op(base.file(chain))
    assert len(op.inputs) == 2
    acts = [(a.input, a.secondary_input, a.output) for a in op.file.actions]
    assert acts == [(0, 1, -1), (2, 0, -1), (3, 1, -1), (4, -1, 0)]


def test_actions_are_immutable_and_reusable() -> None:
    head = llb.mkdir("/a")
    one = head.mkfile("/a/1")
    two = head.mkfile("/a/2")
    op1, _ = _file_op(llb.scratch().file(one))
    op2, _ = _file_op(llb.scratch().file(two))
    assert [op1.file.actions[0].mkdir.path, op1.file.actions[1].mkfile.path] == ["/a", "/a/1"]
    assert [op2.file.actions[0].mkdir.path, op2.file.actions[1].mkfile.path] == ["/a", "/a/2"]
    assert len(head.chain()) == 1
    with pytest.raises(AttributeError):
        head.prev = one  # type: ignore[misc]


def test_owner_by_name_on_scratch_rejected() -> None:
    with pytest.raises(DefinitionError, match="scratch"):
        llb.scratch().file(llb.mkdir("/x", owner="app")).marshal(platform="linux/amd64")


def test_naive_datetime_rejected() -> None:
    with pytest.raises(DefinitionError):
        llb.mkfile("/x", created=dt.datetime(2020, 1, 1))


def test_file_keeps_state_settings() -> None:
    st = llb.image(BUSYBOX).with_env("A", "b").with_cwd("/w")
    out = st.file(llb.mkdir("d"))
    assert out.get_env("A") == "b" and out.cwd == "/w"
    assert out.output is not st.output
