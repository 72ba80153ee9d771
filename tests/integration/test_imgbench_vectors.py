"""Golden vectors v2 and v4 (BuildKit v0.11.6 Definitions, byte for byte) built by
``bkcore build`` against the fixture's busybox image pushed as the name they reference,
``127.0.0.1:5000/busybox:latest`` (the ``vector_registry`` fixture fails, not skips, when
port 5000 is taken).

v4 is MergeOp(v1's ``/hello.txt`` on scratch, DiffOp(busybox, busybox + ``echo diffed >
/diffed.txt``)): BuildKit's result held exactly ``hello.txt`` and ``diffed.txt``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
VECTOR_IMAGE = "busybox:latest"


def _vector(name: str) -> bytes:
    data = (VECTORS / f"{name}.llb").read_bytes()
    meta = json.loads((VECTORS / f"{name}.json").read_text())
    assert hashlib.sha256(data).hexdigest() == meta["definition_sha256"]  # the recorded bytes
    return data


@pytest.fixture
def vector_image(vector_registry: Any, images: Any) -> Any:
    if platform.machine() not in ("x86_64", "amd64"):
        pytest.skip("the vectors are linux/amd64 Definitions (their exec runs amd64 busybox)")
    image = images.busybox_image("linux/amd64")
    ref = images.push(vector_registry, VECTOR_IMAGE, image)
    assert ref == "127.0.0.1:5000/busybox:latest"
    return image


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            out[rel] = "dir" if path.is_dir() and not path.is_symlink() else path.read_text()
    return out


def test_vector_v4_merge_diff(bk: Any, vector_image: Any) -> None:
    out = bk.tmp / "out"
    run = bk.build(_vector("v4_merge_diff"), out=out)
    assert _tree(out) == {"hello.txt": "hello\n", "diffed.txt": "diffed\n"}
    assert (out / "hello.txt").stat().st_mode & 0o777 == 0o644
    names = {v["name"] for v in run.vertices().values()}
    assert "docker-image://127.0.0.1:5000/busybox:latest" in names
    # a second process: the whole graph is answered from the cache
    again = bk.build(_vector("v4_merge_diff"), out=bk.tmp / "again")
    assert _tree(bk.tmp / "again") == _tree(out)
    cached = again.cached()
    assert cached["/bin/sh -c echo diffed > /diffed.txt"], cached  # the exec ran once


def test_vector_v2_image_exec_with_secret(bk: Any, vector_image: Any) -> None:
    secret = bk.tmp / "secret.txt"
    secret.write_text("vector-secret\n")
    out = bk.tmp / "out"
    bk.build(_vector("v2_image_exec"), out=out, secrets=[f"id=s,src={secret}"])
    assert (out / "out.txt").read_text() == "vector-secret\nbar\n"
    assert (out / "bin/busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert (out / "work").is_dir()
    assert not (out / "run/secrets/s").exists() or (out / "run/secrets/s").stat().st_size == 0
