"""local:// sources end to end with `bkcore build` (runc containers): a busybox rootfs and a
context sent by the client, read in a container through a read-only bind mount, exported
with the local and tar exporters."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb

REPO = Path(__file__).resolve().parents[2]
BUSYBOX = "/bin/busybox"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc binary not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="runc containers and overlay mounts need root"),
]

SCRIPT = "cat /ctx/a.txt > /work/result.txt && ls -ln /ctx | tail -n +2 > /work/owners.txt"


def _definition() -> bytes:
    base = llb.local("base", shared_key_hint="base")
    context = llb.local("context", shared_key_hint="context")
    work = base.sh(
        SCRIPT,
        mounts=[
            llb.bind("/ctx", context, readonly=True),
            llb.bind("/work", llb.scratch()),
        ],
        custom_name="read the context",
    )
    return work.get_mount("/work").marshal(platform="linux/amd64").to_bytes()


def _build(
    bkcli: Any, tmp: Path, context: Path, *output: str
) -> subprocess.CompletedProcess[bytes]:
    cmd = [
        *bkcli(tmp / "state"),
        "build",
        "--progress",
        "plain",
        "--local",
        f"base={tmp / 'rootfs'}",
        "--local",
        f"context={context}",
        "--output",
        ",".join(output),
    ]
    done = subprocess.run(cmd, input=_definition(), capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    made = subprocess.run(
        [str(REPO / "scripts" / "make-rootfs"), str(tmp_path / "rootfs")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return tmp_path


def test_context_reaches_the_container_and_the_client_output(bkcli: Any, tmp: Path) -> None:
    context = tmp / "ctx"
    context.mkdir()
    (context / "a.txt").write_text("hello from the client\n")
    os.chown(context / "a.txt", 1234, 5678)
    out = tmp / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier build")

    _build(bkcli, tmp, context, "type=local", f"dest={out}")
    assert sorted(os.listdir(out)) == ["owners.txt", "result.txt"]  # replaced, not merged
    assert (out / "result.txt").read_text() == "hello from the client\n"
    # the client sends owners as 0/0 (like buildctl), so builds never depend on them
    owners = (out / "owners.txt").read_text().split()
    assert owners[2:4] == ["0", "0"]

    # Same size, mtime restored: BuildKit's metadata differ keeps the old file; bkcore's
    # change tokens see the new content.
    st = os.stat(context / "a.txt")
    (context / "a.txt").write_text("HELLO FROM THE CLIENT\n")
    os.utime(context / "a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    done = _build(bkcli, tmp, context, "type=tar", "dest=-")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tf:
        member = tf.extractfile("result.txt")
        assert member is not None and member.read() == b"HELLO FROM THE CLIENT\n"
        assert [m.name for m in tf.getmembers()] == ["owners.txt", "result.txt"]
    assert b"sending tarball" in done.stderr
    assert (out / "result.txt").read_text() == "hello from the client\n"


def test_failed_build_leaves_the_output_directory_alone(bkcli: Any, tmp: Path) -> None:
    context = tmp / "ctx"
    context.mkdir()  # no a.txt: `cat` fails in the container
    out = tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous")
    cmd = [
        *bkcli(tmp / "state"),
        "build",
        "--progress",
        "plain",
        "--local",
        f"base={tmp / 'rootfs'}",
        "--local",
        f"context={context}",
        "--output",
        f"type=local,dest={out}",
    ]
    done = subprocess.run(cmd, input=_definition(), capture_output=True, check=False)
    assert done.returncode == 1
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert sorted(os.listdir(tmp)) == sorted(["ctx", "out", "rootfs", "state"])
