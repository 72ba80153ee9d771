"""BKCORE_BASE picks the examples' base: a local source (a rootfs sent by the client) or an
image; the rest of each graph stays the same."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import betterproto
import pytest

from bkcore import llb
from bkcore.llb import pb

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ["multistage", "git_source", "local_source", "merge_diff"]


def _run(name: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BKCORE_")}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--platform", "linux/amd64"],
        capture_output=True,
        env={**clean, **env},
        check=False,
    )


def _defn(name: str, **env: str) -> llb.Definition:
    proc = _run(name, **env)
    assert proc.returncode == 0, proc.stderr.decode()
    return llb.Definition.from_bytes(proc.stdout, name)


def _sources(defn: llb.Definition) -> list[pb.SourceOp]:
    ops = [defn.op(d) for d in defn.digests]
    return [op.source for op in ops if betterproto.which_one_of(op, "op")[0] == "source"]


def _kind(op: pb.Op) -> str:
    return betterproto.which_one_of(op, "op")[0]


def _kinds(defn: llb.Definition) -> list[str]:
    return sorted(_kind(defn.op(d)) for d in defn.digests)


@pytest.mark.parametrize("name", NAMES)
def test_local_base_replaces_the_image(name: str) -> None:
    image = _defn(name)
    local = _defn(name, BKCORE_BASE="local")
    image_ids = [s.identifier for s in _sources(image)]
    local_srcs = _sources(local)
    assert "docker-image://127.0.0.1:5000/busybox:latest" in image_ids
    assert not any(s.identifier.startswith("docker-image://") for s in local_srcs)
    (base,) = [s for s in local_srcs if s.identifier == "local://base"]
    assert base.attrs["local.sharedkeyhint"] == "base"
    # only the base changed: the image became a local source copied onto scratch
    assert sorted([*_kinds(image), "file"]) == _kinds(local)
    base_digest = next(
        d
        for d in local.digests
        if _kind(local.op(d)) == "source" and local.op(d).source.identifier == "local://base"
    )
    (copy,) = [
        op.file.actions[0].copy
        for op in (local.op(d) for d in local.digests)
        if _kind(op) == "file" and [i.digest for i in op.inputs] == [base_digest]
    ]
    assert (copy.src, copy.dest, copy.dir_copy_contents) == ("/", "/", True)


def test_local_base_with_a_name_and_an_explicit_image() -> None:
    named = _sources(_defn("merge_diff", BKCORE_BASE="local:rootfs"))
    assert [s.identifier for s in named] == ["local://rootfs"]
    assert named[0].attrs["local.sharedkeyhint"] == "rootfs"
    image = _sources(_defn("merge_diff", BKCORE_BASE="image:busybox:1.36"))
    assert [s.identifier for s in image] == ["docker-image://docker.io/library/busybox:1.36"]
    # BKCORE_BASE_IMAGE still works when BKCORE_BASE is unset or just "image"
    legacy = _sources(_defn("merge_diff", BKCORE_BASE="image", BKCORE_BASE_IMAGE="alpine:3.17"))
    assert [s.identifier for s in legacy] == ["docker-image://docker.io/library/alpine:3.17"]


def test_unknown_base_kind_is_one_clear_error() -> None:
    proc = _run("multistage", BKCORE_BASE="oci:/tmp/x")
    assert proc.returncode != 0
    assert proc.stdout == b""
    assert b"BKCORE_BASE='oci:/tmp/x': expected local[:NAME] or image[:REF]" in proc.stderr


def test_git_example_defaults_to_a_loopback_daemon() -> None:
    (git,) = [s for s in _sources(_defn("git_source")) if s.identifier.startswith("git://")]
    assert git.identifier == "git://127.0.0.1:9418/example.git#main"
    assert git.attrs["git.fullurl"] == "git://127.0.0.1:9418/example.git"


def test_examples_refuse_to_write_to_a_terminal() -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, str(EXAMPLES / "multistage.py")],
            stdout=follower,
            stderr=subprocess.PIPE,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2
    assert b"refusing to write binary LLB to a terminal" in proc.stderr
