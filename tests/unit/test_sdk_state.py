"""State semantics: immutability, env/cwd rules, merge/diff shortcuts, platform, imports."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from bkcore import llb
from bkcore.errors import DefinitionError

BUSYBOX = "127.0.0.1:5000/busybox:latest"


def test_states_are_immutable() -> None:
    st = llb.image(BUSYBOX)
    st2 = st.with_env("A", "1").with_cwd("/x").with_user("u")
    assert st.env == () and st.cwd == "/" and st.get_user() == ""
    assert st2.env == ("A=1",) and st2.cwd == "/x" and st2.get_user() == "u"
    with pytest.raises(dataclasses.FrozenInstanceError):
        st._cwd = "/y"  # type: ignore[misc]
    es = st.run("true")
    with pytest.raises(dataclasses.FrozenInstanceError):
        es._exec = None  # type: ignore[misc]


def test_env_replace_moves_to_end_and_delete() -> None:
    st = llb.scratch().add_env("A", "1").add_env("B", "2").add_env("A", "3")
    assert st.env == ("B=2", "A=3")
    assert st.without_env("B").env == ("A=3",)
    assert st.get_env("Z") is None
    with pytest.raises(DefinitionError):
        st.with_env("A=B", "x")


@pytest.mark.parametrize(
    ("steps", "want"),
    [
        (["a"], "/a"),
        (["/a", "b", "../c"], "/a/c"),
        (["/a/", "b/"], "/a/b"),
        (["/abs//kept/"], "/abs//kept/"),  # absolute values are kept as given (Go)
    ],
)
def test_dir_joins_relative_paths(steps: list[str], want: str) -> None:
    st = llb.scratch()
    for s in steps:
        st = st.dir(s)
    assert st.get_dir() == want


def test_go_style_aliases() -> None:
    st = llb.scratch().user("1:2").dir("w").add_env("K", "v")
    assert (st.get_user(), st.get_dir(), st.get_env("K")) == ("1:2", "/w", "v")


def test_platform_parse_and_normalise() -> None:
    assert llb.Platform.parse("linux/x86_64") == llb.LINUX_AMD64
    assert llb.Platform.parse("linux/aarch64/v8") == llb.LINUX_ARM64
    assert llb.Platform.parse("linux/arm") == llb.LINUX_ARMHF
    assert str(llb.LINUX_ARMHF) == "linux/arm/v7"
    with pytest.raises(DefinitionError):
        llb.Platform.parse("linux")
    assert llb.scratch().with_platform("linux/arm64").platform == llb.LINUX_ARM64


def test_default_platform_is_the_host() -> None:
    d = llb.image(BUSYBOX).marshal()
    op = d.op(d.head or "")
    assert op.platform.os == "linux"
    assert op.platform.architecture == llb.Platform.host().architecture


def test_merge_and_diff_shortcuts() -> None:
    a = llb.image(BUSYBOX)
    b = llb.scratch().file(llb.mkdir("/b"))
    assert llb.merge([]).is_scratch
    assert llb.merge([llb.scratch(), a, llb.scratch()]) is a
    assert llb.diff(llb.scratch(), a) is a
    assert llb.diff(llb.scratch(), llb.scratch()).is_scratch
    m = llb.merge([a.with_env("K", "v"), b])
    assert m.env == () and m.cwd == "/"  # a merge starts fresh
    d = llb.diff(a.with_env("K", "v"), b)
    assert d.get_env("K") == "v"  # a diff keeps lower's settings
    dd = d.marshal(platform="linux/amd64")
    op = dd.op(dd.head or "")
    assert (op.diff.lower.input, op.diff.upper.input) == (0, 1)
    assert not op.platform.architecture
    md = dd.metadata[dd.head or ""]
    assert dict(md.caps) == {"diffop": True}


def test_diff_against_scratch_upper_writes_minus_one() -> None:
    d = llb.diff(llb.image(BUSYBOX), llb.scratch()).marshal(platform="linux/amd64")
    op = d.op(d.head or "")
    assert (op.diff.lower.input, op.diff.upper.input) == (0, -1)
    raw = d.ops[-2]
    assert raw.endswith(bytes.fromhex("3a0f0a00120b08ffffffffffffffffff015a00"))


def test_long_chain_marshals_without_recursion() -> None:
    st = llb.image(BUSYBOX)
    for i in range(1500):
        st = st.file(llb.mkfile(f"/f{i}", 0o644, b""))
    d = st.marshal(platform="linux/amd64")
    assert len(d) == 1502


def test_import_is_cheap_and_imports_no_daemon_code() -> None:
    code = (
        "import sys, bkcore.llb; "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('bkcore'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    allowed = {"bkcore", "bkcore.errors", "bkcore.llb"}
    assert all(m in allowed or m.startswith("bkcore.llb.") for m in out), out
    assert not any(m.startswith(("bkcore.solver", "bkcore.cache", "bkcore.api")) for m in out)


@pytest.mark.parametrize(
    ("machine", "want"),
    [("x86_64", "linux/amd64"), ("aarch64", "linux/arm64"), ("armv7l", "linux/arm/v7")],
)
def test_host_platform_from_machine(machine: str, want: str) -> None:
    from unittest import mock

    with mock.patch("platform.machine", return_value=machine):
        assert str(llb.Platform.host()) == want


def test_sh_passes_run_options() -> None:
    es = llb.image(BUSYBOX).sh("echo $X", env={"X": "1"}, mounts=[llb.tmpfs("/t")], cwd="/w")
    d = es.marshal(platform="linux/amd64")
    op = d.op(d.head or "")
    assert op.exec.meta.args == ["/bin/sh", "-c", "echo $X"]
    assert op.exec.meta.env == ["X=1"] and op.exec.meta.cwd == "/w"
    assert [m.dest for m in op.exec.mounts] == ["/", "/t"]


def test_with_image_config() -> None:
    config = (
        b'{"architecture":"arm64","os":"linux","variant":"v8",'
        b'"config":{"Env":["PATH=/usr/bin:/bin","KEEP=image","EMPTY="],"WorkingDir":"/srv"}}'
    )
    st = llb.image(BUSYBOX).with_env("KEEP", "mine").with_image_config(config)
    assert st.env == ("KEEP=mine", "PATH=/usr/bin:/bin", "EMPTY=")
    assert st.cwd == "/srv"
    assert st.platform == llb.LINUX_ARM64
    d = st.sh("true").marshal(platform="linux/amd64")
    op = d.op(d.head or "")
    assert op.exec.meta.env == ["KEEP=mine", "PATH=/usr/bin:/bin", "EMPTY="]
    assert op.platform.architecture == "arm64"
    with pytest.raises(DefinitionError):
        st.with_image_config(b"[1]")
    with pytest.raises(DefinitionError):
        st.with_image_config(b"{")


def test_deriving_from_an_exec_state_gives_a_plain_state() -> None:
    es = llb.image(BUSYBOX).run("true", mounts=[llb.bind("/o", llb.scratch())])
    for derived in (es.with_env("A", "1"), es.file(llb.mkdir("/d")), es.with_output(None)):
        assert type(derived) is llb.State
        assert not hasattr(derived, "get_mount")
    assert es.with_env("A", "1").output is es.output
