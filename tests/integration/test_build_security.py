"""Untrusted graphs and contexts stay inside their roots; secrets never persist.

* A secret used by a step is in no output, no progress line and no file of the state root
  (the whole store, SQLite metadata included, is searched byte for byte).
* Symlinks in a build context or made by a step cannot make COPY, mkfile or mkdir read or
  write outside the snapshot: host paths named by the links stay untouched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb

pytestmark = pytest.mark.integration

SECRET = b"bkcore-secret-7f3a9c1e5d"


def files_containing(root: Path, needle: bytes) -> list[str]:
    """Regular files below ``root`` whose bytes contain ``needle`` (symlinks not followed)."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as fh:
                if needle in fh.read():
                    found.append(path)
    return found


def test_secret_is_never_stored_exported_or_logged(bk: Any, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_bytes(SECRET)
    step = bk.base().sh(
        'set -e; test "$(cat /run/secrets/token)" = "$TOKEN";'
        " cat /run/secrets/token | sha256sum > /proof.txt;"
        " cp /run/secrets/token /tmp/copy 2>/dev/null && rm /tmp/copy; echo used the secret",
        mounts=[llb.secret("/run/secrets/token", id="token")],
        secret_env=[llb.secret_env("TOKEN", id="token")],
        custom_name="use secret",
    )
    out = tmp_path / "out"
    tar = tmp_path / "rootfs.tar"
    run = bk.build(step.root(), secrets=[f"id=token,src={secret_file}"], out=out)
    bk.build(step.root(), secrets=[f"id=token,src={secret_file}"], tar=tar)

    import hashlib

    assert (out / "proof.txt").read_text().split()[0] == hashlib.sha256(SECRET).hexdigest()
    assert b"used the secret" in run.logs("use secret")
    assert not (out / "run" / "secrets" / "token").exists()
    assert files_containing(out, SECRET) == []
    assert SECRET not in tar.read_bytes()
    assert SECRET not in run.stderr.encode() and SECRET not in run.stdout
    assert files_containing(bk.root, SECRET) == []


def test_copy_from_a_context_does_not_follow_symlinks_out_of_it(bk: Any, tmp_path: Path) -> None:
    host = tmp_path / "host-secret-dir"
    host.mkdir()
    (host / "private.txt").write_text("host-only content\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "abs").symlink_to(host)  # absolute link to a host dir
    (ctx / "rel").symlink_to("../../../../../../../../.." + str(host))
    (ctx / "ok.txt").write_text("inside\n")
    src = llb.local("ctx", shared_key_hint="ctx", custom_name="ctx")
    for link in ("abs", "rel"):
        graph = llb.scratch().file(
            llb.copy(src, f"/{link}/private.txt", "/got.txt"), custom_name=f"copy via {link}"
        )
        run = bk.build(graph, locals={"ctx": ctx}, out=tmp_path / f"out-{link}", check=False)
        # The link resolves inside the context, where there is no such file.
        assert run.returncode == 1, run.stderr
        assert "private.txt" in run.error_line()
        assert not (tmp_path / f"out-{link}").exists()

    # Copying the links themselves keeps them as links; nothing of the host comes along.
    out = tmp_path / "out"
    bk.build(
        llb.scratch().file(llb.copy(src, "/", "/", dir_contents_only=True)),
        locals={"ctx": ctx},
        out=out,
    )
    assert os.readlink(out / "abs") == str(host)
    assert (out / "ok.txt").read_text() == "inside\n"
    assert files_containing(out, b"host-only content") == []


@pytest.mark.parametrize("style", ["absolute", "relative"])
def test_file_actions_through_symlinks_stay_in_the_snapshot(
    bk: Any, tmp_path: Path, style: str
) -> None:
    host = tmp_path / "host-target"
    host.mkdir()
    (host / "keep.txt").write_text("host file\n")
    target = str(host) if style == "absolute" else "../../../../../../../.." + str(host)
    links = bk.base().sh(
        # The same absolute path exists inside the snapshot: the links resolve to it there.
        f"mkdir -p /work {host} && ln -s {target} /work/link && ln -s {target}/keep.txt /work/file",
        custom_name="make links",
    )
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "payload.txt").write_text("payload\n")
    src = llb.local("ctx", shared_key_hint="ctx", custom_name="ctx")
    written = links.root().file(
        llb.mkfile("/work/link/pwned-mkfile", 0o644, b"mkfile\n")
        .mkdir("/work/link/pwned-dir", 0o755, parents=True)
        .copy(src, "/payload.txt", "/work/link/pwned-copy", create_dest_path=True)
        .mkfile("/work/file", 0o644, b"overwritten through a link\n"),
        custom_name="write through links",
    )
    result = llb.scratch().file(
        llb.copy(written, str(host), "/seen/", dir_contents_only=True, create_dest_path=True)
    )
    out = tmp_path / "out"
    bk.build(result, locals={"ctx": ctx}, out=out)
    # The host directory is untouched ...
    assert sorted(os.listdir(host)) == ["keep.txt"]
    assert (host / "keep.txt").read_text() == "host file\n"
    # ... the links were followed inside the snapshot, where the writes landed.
    assert sorted(os.listdir(out / "seen")) == [
        "keep.txt",
        "pwned-copy",
        "pwned-dir",
        "pwned-mkfile",
    ]
    assert (out / "seen" / "pwned-mkfile").read_text() == "mkfile\n"
    assert (out / "seen" / "pwned-copy").read_text() == "payload\n"
    assert (out / "seen" / "keep.txt").read_text() == "overwritten through a link\n"
