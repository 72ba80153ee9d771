"""Hostile layer tars: nothing is written, changed or removed outside the root."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from bkcore.errors import SourceError
from bkcore.layers.apply import apply_layer

DIGEST = "sha256:" + "ab" * 32


def make_tar(entries: list[tuple[str, str, str]]) -> bytes:
    """entries: (name, kind, payload) with kind file/dir/sym/link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_000_000_000
            if kind == "file":
                data = payload.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, payload
            tf.addfile(info)
    return buf.getvalue()


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """A root inside tmp_path/a/b/root and an outside directory with a sentinel."""
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("untouched")
    return root, outside


def outside_state(outside: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in outside.iterdir()}


def refused(data: bytes, root: Path, outside: Path, match: str) -> None:
    before = outside_state(outside)
    with pytest.raises(SourceError, match=match) as info:
        apply_layer(io.BytesIO(data), root, digest=DIGEST)
    assert DIGEST in str(info.value)
    assert outside_state(outside) == before == {"sentinel": "untouched"}


def test_dotdot_traversal_refused(world: tuple[Path, Path]) -> None:
    root, outside = world
    data = make_tar([("../../../outside/sentinel", "file", "pwned")])
    refused(data, root, outside, "points outside the root")


def test_dotdot_inside_a_name_refused(world: tuple[Path, Path]) -> None:
    root, outside = world
    data = make_tar([("x/../../../../outside/new", "file", "pwned")])
    refused(data, root, outside, "points outside the root")


def test_absolute_symlink_parent_refused(world: tuple[Path, Path]) -> None:
    root, outside = world
    data = make_tar([("evil", "sym", str(outside)), ("evil/sentinel", "file", "pwned")])
    refused(data, root, outside, "goes through symlink /evil")


def test_relative_symlink_escape_refused(world: tuple[Path, Path]) -> None:
    root, outside = world
    data = make_tar(
        [("d/", "dir", ""), ("d/up", "sym", "../../../../outside"), ("d/up/new", "file", "x")]
    )
    refused(data, root, outside, "goes through symlink /d/up")


def test_whiteout_through_symlink_refused(world: tuple[Path, Path]) -> None:
    root, outside = world
    data = make_tar([("evil", "sym", str(outside)), ("evil/.wh.sentinel", "file", "")])
    refused(data, root, outside, "goes through symlink")


def test_hardlink_to_outside_refused(world: tuple[Path, Path]) -> None:
    root, outside = world
    data = make_tar([("h", "link", "../../../outside/sentinel")])
    refused(data, root, outside, "points outside the root")


def test_hardlink_through_symlink_refused(world: tuple[Path, Path]) -> None:
    root, outside = world
    data = make_tar([("evil", "sym", str(outside)), ("h", "link", "evil/sentinel")])
    refused(data, root, outside, "goes through symlink")
    assert os.stat(outside / "sentinel").st_nlink == 1


def test_absolute_names_are_kept_inside_the_root(world: tuple[Path, Path]) -> None:
    root, outside = world
    data = make_tar(
        [(f"{outside}/sentinel", "file", "inside"), ("/h", "link", f"/{outside}/sentinel")]
    )
    apply_layer(io.BytesIO(data), root, digest=DIGEST)
    inner = root / str(outside).lstrip("/") / "sentinel"
    assert inner.read_text() == "inside"
    assert os.path.samefile(root / "h", inner)
    assert outside_state(outside) == {"sentinel": "untouched"}


def test_in_root_symlink_parent_is_followed(world: tuple[Path, Path]) -> None:
    root, _ = world
    data = make_tar(
        [("usr/lib/", "dir", ""), ("lib", "sym", "usr/lib"), ("lib/libx.so", "file", "elf")]
    )
    apply_layer(io.BytesIO(data), root, digest=DIGEST)
    assert (root / "usr" / "lib" / "libx.so").read_text() == "elf"
    assert (root / "lib").is_symlink()


def test_existing_symlink_is_replaced_not_followed(world: tuple[Path, Path]) -> None:
    root, outside = world
    os.symlink(outside / "sentinel", root / "f")
    apply_layer(io.BytesIO(make_tar([("f", "file", "new")])), root, digest=DIGEST)
    assert not (root / "f").is_symlink() and (root / "f").read_text() == "new"
    assert outside_state(outside) == {"sentinel": "untouched"}


def test_garbage_is_a_clear_error(world: tuple[Path, Path]) -> None:
    root, _ = world
    with pytest.raises(SourceError, match="not a valid layer archive"):
        apply_layer(io.BytesIO(b"\x1f\x8b\x08\x00garbage" * 10), root, digest=DIGEST)
    with pytest.raises(SourceError, match="diff ID mismatch"):
        apply_layer(io.BytesIO(make_tar([("a", "file", "x")])), root, digest=DIGEST, diff_id=DIGEST)


def test_overlay_xattrs_from_a_layer_are_dropped(world: tuple[Path, Path]) -> None:
    root, _ = world
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("d")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {
            "SCHILY.xattr.trusted.overlay.redirect": "/elsewhere",
            "SCHILY.xattr.user.kept": "yes",
        }
        tf.addfile(info)
    apply_layer(io.BytesIO(buf.getvalue()), root, digest=DIGEST)
    assert os.listxattr(root / "d") == ["user.kept"]
