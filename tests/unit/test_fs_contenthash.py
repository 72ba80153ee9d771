"""bkcore.fs.contenthash: BuildKit's content checksum (solver.md section 4)."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from bkcore.fs.contenthash import (
    EMPTY_DIGEST,
    ContentHasher,
    checksum,
    combine_selectors,
    kept_xattr,
)
from bkcore.fs.errors import PathNotFoundError


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def header(mode: int, size: int, typeflag: str, uid: int = 0, gid: int = 0,
           linkname: str = "", xattrs: bytes = b"") -> bytes:  # fmt: skip
    """The tar-sum header exactly as the spec's table lists it (no mtime, empty names)."""
    return (
        f"namemode{mode}uid{uid}gid{gid}size{size}typeflag{typeflag}linkname{linkname}"
        f"unamegnamedevmajor0devminor0"
    ).encode() + xattrs


def write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def cs(root: Path, path: str, **kw: object) -> str:
    kw.setdefault("follow_links", True)
    return checksum(str(root), path, **kw)  # type: ignore[arg-type]


def test_file_record_matches_the_spec_header(tmp_path: Path) -> None:
    write(tmp_path / "hello.txt", b"hello-e17\n", 0o644)
    got = cs(tmp_path, "/hello.txt")
    assert got == sha(header(0o644, 10, "0") + b"hello-e17\n")
    assert got == "sha256:58636f71d756bc562b30707efc94bad24e97316fd12dfe97ba4d53d991fd98ea"
    # one selector: the content key is sha256 of the digest text
    assert combine_selectors([got]) == sha(got.encode())
    assert combine_selectors([got, EMPTY_DIGEST]) == sha(f"{got}\0{EMPTY_DIGEST}".encode())


def test_mtime_is_ignored_but_mode_owner_and_xattrs_count(tmp_path: Path) -> None:
    f = write(tmp_path / "f", b"data")
    base = cs(tmp_path, "/f")
    os.utime(f, ns=(1, 2))
    assert cs(tmp_path, "/f") == base
    os.chmod(f, 0o755)
    assert cs(tmp_path, "/f") == sha(header(0o755, 4, "0") + b"data") != base
    os.chmod(f, 0o644)
    assert cs(tmp_path, "/f") == base
    os.chmod(f, 0o4755)
    assert cs(tmp_path, "/f") == sha(header(0o4755, 4, "0") + b"data")
    os.chmod(f, 0o644)
    os.chown(f, 1000, 2000)
    assert cs(tmp_path, "/f") == sha(header(0o644, 4, "0", 1000, 2000) + b"data")
    os.chown(f, 0, 0)
    os.setxattr(f, "user.b", b"2")
    os.setxattr(f, "user.a", b"1")
    os.setxattr(f, "trusted.t", b"3")
    assert cs(tmp_path, "/f") == sha(
        header(0o644, 4, "0", xattrs=b"trusted.t3user.a1user.b2") + b"data"
    )


def test_symlinks_followed_or_not(tmp_path: Path) -> None:
    write(tmp_path / "d" / "target", b"t")
    os.symlink("/d/target", tmp_path / "abs")
    os.symlink("d", tmp_path / "dlink")
    assert cs(tmp_path, "/abs") == cs(tmp_path, "/d/target")
    assert cs(tmp_path, "/abs", follow_links=False) == sha(
        header(0o777, 0, "2", linkname="/d/target")
    )
    # a symlink in a parent component is always resolved
    assert cs(tmp_path, "/dlink/target", follow_links=False) == cs(tmp_path, "/d/target")


def test_hardlink_takes_its_targets_digest(tmp_path: Path) -> None:
    f = write(tmp_path / "a", b"same")
    os.link(f, tmp_path / "b")
    hasher = ContentHasher(str(tmp_path))
    assert hasher.checksum("/b", follow_links=True) == hasher.checksum("/a", follow_links=True)


def test_directory_contents_digest(tmp_path: Path) -> None:
    write(tmp_path / "d" / "s" / "x.txt", b"x")
    write(tmp_path / "d" / "y.txt", b"yy")
    for p in ("d", "d/s"):
        os.chmod(tmp_path / p, 0o755)
    dir_hdr = sha(header(0o755, 0, "5"))
    x = sha(header(0o644, 1, "0") + b"x")
    y = sha(header(0o644, 2, "0") + b"yy")
    s_contents = sha(b"\0" + dir_hdr.encode() + b"\0x.txt" + x.encode())
    d_contents = sha(
        b"\0" + dir_hdr.encode() + b"\0s" + s_contents.encode() + b"\0y.txt" + y.encode()
    )
    assert cs(tmp_path, "/d") == d_contents
    assert cs(tmp_path, "/d/s") == s_contents
    # a change below changes every enclosing contents digest; the header counts too
    write(tmp_path / "d" / "s" / "x.txt", b"X")
    assert cs(tmp_path, "/d") != d_contents
    write(tmp_path / "d" / "s" / "x.txt", b"x")
    os.chmod(tmp_path / "d" / "s", 0o700)
    assert cs(tmp_path, "/d") != d_contents
    os.chmod(tmp_path / "d" / "s", 0o755)
    assert cs(tmp_path, "/d") == d_contents


def test_root_header_empty_for_local_sources(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    write(root / "hello.txt", b"hello-e17\n")
    os.chmod(root, 0o755)
    f = sha(header(0o644, 10, "0") + b"hello-e17\n")
    local = cs(root, "/", empty_root_header=True)
    assert local == sha(b"\0" + EMPTY_DIGEST.encode() + b"\0hello.txt" + f.encode())
    os.chmod(root, 0o700)
    os.chown(root, 5, 5)
    assert cs(root, "/", empty_root_header=True) == local
    assert cs(root, "/") != local  # snapshots count their root header


def test_wildcard_selectors(tmp_path: Path) -> None:
    a1 = write(tmp_path / "a1.txt", b"1")
    write(tmp_path / "a2.txt", b"2")
    write(tmp_path / "b.txt", b"b")
    write(tmp_path / "ad" / "in", b"i")
    os.chmod(tmp_path / "ad", 0o755)
    d1, d2 = cs(tmp_path, "/a1.txt"), cs(tmp_path, "/a2.txt")
    dad = sha(header(0o755, 0, "5"))
    din = cs(tmp_path, "/ad/in")
    got = cs(tmp_path, "/a*", wildcard=True)
    assert got == sha(b"\0".join([b"a1.txt" + d1.encode(), b"a2.txt" + d2.encode(),
                                  b"ad" + dad.encode(), b"in" + din.encode()]))  # fmt: skip
    assert cs(tmp_path, "/a1.tx?", wildcard=True) == sha(b"a1.txt" + d1.encode())
    assert cs(tmp_path, "/a1.txt", wildcard=True) == d1  # no wildcard characters
    assert cs(tmp_path, "/[a]1.txt", wildcard=True) == sha(b"a1.txt" + d1.encode())
    assert cs(tmp_path, "/z*", wildcard=True) == EMPTY_DIGEST
    os.chmod(a1, 0o600)
    assert cs(tmp_path, "/a*", wildcard=True) != got
    assert cs(tmp_path, "/b*", wildcard=True) == sha(b"b.txt" + cs(tmp_path, "/b.txt").encode())


def test_include_exclude_selectors(tmp_path: Path) -> None:
    write(tmp_path / "src" / "main.c", b"int main;")
    write(tmp_path / "src" / "gen" / "x.o", b"obj")
    write(tmp_path / "src" / "notes.md", b"notes")
    base = cs(tmp_path, "/src", excludes=["**/*.o", "*.md"])
    write(tmp_path / "src" / "gen" / "x.o", b"changed object")
    write(tmp_path / "src" / "notes.md", b"changed notes")
    assert cs(tmp_path, "/src", excludes=["**/*.o", "*.md"]) == base
    write(tmp_path / "src" / "main.c", b"int main2;")
    assert cs(tmp_path, "/src", excludes=["**/*.o", "*.md"]) != base
    inc = cs(tmp_path, "/src", includes=["gen"])
    write(tmp_path / "src" / "main.c", b"int main3;")
    assert cs(tmp_path, "/src", includes=["gen"]) == inc
    assert cs(tmp_path, "/src", includes=["nothing"]) == EMPTY_DIGEST


def test_records_are_cached_until_invalidated(tmp_path: Path) -> None:
    write(tmp_path / "d" / "f", b"one")
    write(tmp_path / "other", b"o")
    hasher = ContentHasher(str(tmp_path))
    first = hasher.checksum("/d", follow_links=True)
    other = hasher.checksum("/other", follow_links=True)
    write(tmp_path / "d" / "f", b"two")
    assert hasher.checksum("/d", follow_links=True) == first  # served from the cache
    hasher.invalidate("//d/f")  # any spelling of the path
    second = hasher.checksum("/d", follow_links=True)
    assert second != first
    assert second == ContentHasher(str(tmp_path)).checksum("/d", follow_links=True)
    assert hasher.checksum("/other", follow_links=True) == other


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match=r"^checksum /nope: not found$"):
        cs(tmp_path, "/nope")
    os.symlink("/nope", tmp_path / "dangling")
    with pytest.raises(PathNotFoundError):
        cs(tmp_path, "/dangling")
    assert cs(tmp_path, "/dangling", follow_links=False) == sha(
        header(0o777, 0, "2", linkname="/nope")
    )


def test_escaping_links_hash_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(tmp_path / "outside", b"host file")
    write(root / "outside", b"inside file")
    os.symlink(str(tmp_path / "outside"), root / "abs")
    os.symlink("../../../../../../outside", root / "rel")
    inside = cs(root, "/outside")
    root_abs = root / str(tmp_path / "outside").lstrip("/")
    write(root_abs, b"rerooted")
    assert cs(root, "/abs") == cs(root, str(tmp_path / "outside"))
    assert cs(root, "/rel") == inside
    assert cs(root, "/../outside") == inside


def test_xattr_filter() -> None:
    assert kept_xattr("user.x") and kept_xattr("trusted.x") and kept_xattr("security.capability")
    assert not kept_xattr("security.selinux") and not kept_xattr("security.ima")
    assert not kept_xattr("system.posix_acl_access")


def test_file_capability_counts_but_acls_do_not(tmp_path: Path) -> None:
    f = write(tmp_path / "ping", b"bin", 0o755)
    # vfs_cap_data revision 2, effective, CAP_NET_RAW (13) permitted
    cap = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    os.setxattr(f, "security.capability", cap)
    assert cs(tmp_path, "/ping") == sha(
        header(0o755, 3, "0", xattrs=b"security.capability" + cap) + b"bin"
    )
    g = write(tmp_path / "acl", b"a", 0o640)
    before = cs(tmp_path, "/acl")
    # POSIX ACL: user::rw- user:1000:r-- group::r-- mask::r-- other::--- (mode stays 0640)
    entries = ((1, 6, 0xFFFFFFFF), (2, 4, 1000), (4, 4, 0xFFFFFFFF), (16, 4, 0xFFFFFFFF),
               (32, 0, 0xFFFFFFFF))  # fmt: skip
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    os.setxattr(g, "system.posix_acl_access", acl)
    assert os.getxattr(g, "system.posix_acl_access")
    assert cs(tmp_path, "/acl") == before
