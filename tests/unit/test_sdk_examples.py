"""The examples print a valid Definition that dump-llb reads, with the intended shape."""

from __future__ import annotations

import json
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


def _run(name: str, **env: str) -> bytes:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--platform", "linux/amd64"],
        check=True,
        capture_output=True,
        env={**os.environ, **env},
    )
    return proc.stdout


def _ops(defn: llb.Definition) -> list[pb.Op]:
    return [defn.op(d) for d in defn.digests]


def _kind(op: pb.Op) -> str:
    return betterproto.which_one_of(op, "op")[0]


def _sources(defn: llb.Definition) -> list[pb.SourceOp]:
    return [op.source for op in _ops(defn) if _kind(op) == "source"]


@pytest.mark.parametrize("name", NAMES)
def test_example_output_loads_and_dumps(name: str) -> None:
    data = _run(name)
    defn = llb.Definition.from_bytes(data, name)  # strict load
    assert defn.to_bytes() == data
    proc = subprocess.run(
        [sys.executable, "-m", "bkcore", "debug", "dump-llb"],
        input=data,
        capture_output=True,
        check=True,
    )
    lines = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert [x["Digest"] for x in lines] == list(defn.digests)
    assert lines[-1]["Op"]["Op"] is None


def test_examples_take_the_base_image_from_the_environment() -> None:
    defn = llb.Definition.from_bytes(_run("merge_diff", BKCORE_BASE_IMAGE="alpine:3.17"))
    idents = [src.identifier for src in _sources(defn)]
    assert idents == ["docker-image://docker.io/library/alpine:3.17"]


def test_multistage_shape() -> None:
    defn = llb.Definition.from_bytes(_run("multistage"))
    ops = _ops(defn)
    execs = [op for op in ops if _kind(op) == "exec"]
    assert len(execs) == 2
    pack = execs[1]
    mounts = {m.dest: m for m in pack.exec.mounts}
    assert mounts["/src"].readonly and mounts["/src"].selector == "/src"
    assert (mounts["/out"].input, mounts["/out"].output) == (-1, 1)
    assert mounts["/tmp"].mount_type == pb.MountType.TMPFS
    final = defn.op(defn.head or "")
    # the final stage starts from scratch and copies the /out mount result (output 1)
    assert final.file.actions[0].input == -1
    assert [i.index for i in final.inputs] == [1]
    assert final.inputs[0].digest in defn.digests


def test_git_and_local_examples_sources() -> None:
    git_defn = llb.Definition.from_bytes(
        _run("git_source", BKCORE_GIT_REPO="https://example.com/r.git", BKCORE_GIT_REF="v1")
    )
    idents = {src.identifier for src in _sources(git_defn)}
    assert "git://example.com/r.git#v1" in idents
    local_defn = llb.Definition.from_bytes(_run("local_source"))
    (loc,) = [s for s in _sources(local_defn) if s.identifier.startswith("local")]
    assert loc.identifier == "local://context"
    assert loc.attrs["local.excludepatterns"] == '["*.tmp",".git"]'
    assert "local.unique" in loc.attrs
