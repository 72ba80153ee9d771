"""bkcore.fs.fileops.copy: BuildKit COPY rules, every option, escapes.

Trees marked "case NNN" repeat what BuildKit v0.11.6 produced for the Dockerfile
conformance case of that number (the Dockerfile frontend's copy options are used).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from bkcore.fs import fileops
from bkcore.fs.errors import FileOpError, PathNotFoundError
from bkcore.fs.users import Owner

TS = 1_500_000_000_000_000_000
DOCKERFILE = {
    "follow_symlink": True,
    "dir_copy_contents": True,
    "create_dest_path": True,
    "allow_wildcard": True,
    "allow_empty_wildcard": True,
}


def dcopy(src: Path, s: str, dest: Path, d: str, **kw: Any) -> None:
    """A copy with the options the Dockerfile frontend sets on COPY."""
    fileops.copy(str(src), s, str(dest), d, **{**DOCKERFILE, **kw})


def listing(root: Path, under: str = "") -> list[tuple[str, str]]:
    """(in-root path, type letter) of everything below root/under, sorted."""
    out = []
    base = root / under.lstrip("/") if under else root
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            mode = os.lstat(p).st_mode
            kind = "l" if stat.S_ISLNK(mode) else "d" if stat.S_ISDIR(mode) else "f"
            out.append(("/" + os.path.relpath(p, root), kind))
    return sorted(out)


def write(path: Path, data: str = "", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    os.chmod(path, mode)
    return path


def state(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            data = Path(p).read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[p] = (st.st_mode, st.st_uid, st.st_mtime_ns, data)
    return out


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    return src, dest


def test_case_001_trailing_slash_rules(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    write(src / "notes.txt", "notes\n")
    write(src / "pkg" / "main.cfg", "main\n")
    write(src / "pkg" / "inner" / "deep.cfg", "deep\n")
    dcopy(src, "/notes.txt", dest, "/opt/notes-file")
    dcopy(src, "/notes.txt", dest, "/opt/notesdir/")
    dcopy(src, "/pkg", dest, "/opt/pkg-noslash")
    dcopy(src, "/pkg/", dest, "/opt/pkg-slash/")
    dcopy(src, "/pkg/inner", dest, "/opt/")
    dcopy(src, "/notes.txt", dest, "/opt/multi/")
    dcopy(src, "/pkg/main.cfg", dest, "/opt/multi/")
    dcopy(src, "/pkg/.", dest, "/opt/pkg-dot")
    dcopy(src, "/notes.txt", dest, "/opt/notes-dot")  # the frontend drops a trailing "/."
    dcopy(src, "/pkg/inner", dest, "/opt/existing/")
    dcopy(src, "/notes.txt", dest, "/opt/existing")
    dcopy(src, "/notes.txt", dest, "/opt/multi-noslash")
    dcopy(src, "/pkg/main.cfg", dest, "/opt/multi-noslash")
    assert listing(dest) == [
        ("/opt", "d"), ("/opt/deep.cfg", "f"), ("/opt/existing", "d"),
        ("/opt/existing/deep.cfg", "f"), ("/opt/existing/notes.txt", "f"), ("/opt/multi", "d"),
        ("/opt/multi-noslash", "f"), ("/opt/multi/main.cfg", "f"),
        ("/opt/multi/notes.txt", "f"), ("/opt/notes-dot", "f"), ("/opt/notes-file", "f"),
        ("/opt/notesdir", "d"), ("/opt/notesdir/notes.txt", "f"), ("/opt/pkg-dot", "d"),
        ("/opt/pkg-dot/inner", "d"), ("/opt/pkg-dot/inner/deep.cfg", "f"),
        ("/opt/pkg-dot/main.cfg", "f"), ("/opt/pkg-noslash", "d"),
        ("/opt/pkg-noslash/inner", "d"), ("/opt/pkg-noslash/inner/deep.cfg", "f"),
        ("/opt/pkg-noslash/main.cfg", "f"), ("/opt/pkg-slash", "d"),
        ("/opt/pkg-slash/inner", "d"), ("/opt/pkg-slash/inner/deep.cfg", "f"),
        ("/opt/pkg-slash/main.cfg", "f"),
    ]  # fmt: skip
    assert (dest / "opt" / "multi-noslash").read_text() == "main\n"
    assert stat.S_IMODE(os.lstat(dest / "opt" / "notesdir").st_mode) == 0o755


def test_raw_llb_dir_copy_without_contents_flag(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    write(src / "d" / "f", "x")
    fileops.copy(str(src), "/d", str(dest), "/new", create_dest_path=True)
    assert listing(dest) == [("/new", "d"), ("/new/f", "f")]  # dest missing: becomes the dir
    fileops.copy(str(src), "/d", str(dest), "/new", create_dest_path=True)
    assert ("/new/d/f", "f") in listing(dest)  # dest exists: copied into it by name
    fileops.copy(str(src), "/d", str(dest), "/slash/.", create_dest_path=True)
    assert ("/slash/d/f", "f") in listing(dest)


def test_case_002_wildcards(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    for name in ("m2.dat", "lone.cfg", "log-b.txt", "logdir/nested/y.txt", "logdir/entry.txt",
                 "m10.dat", "cfgdir/skip.txt", "cfgdir/one.cfg", "cfgdir/two.cfg", "m1.dat",
                 "log-a.txt"):  # fmt: skip
        write(src / name, name)
    dcopy(src, "/log*", dest, "/w1/")
    dcopy(src, "/m?.dat", dest, "/w2/")
    dcopy(src, "/m[1]*.dat", dest, "/w3/")
    dcopy(src, "/logdir/*", dest, "/w4/")
    dcopy(src, "/*/*.cfg", dest, "/w5/")
    dcopy(src, "/*.nomatch", dest, "/w6/")
    dcopy(src, "/lone.cfg", dest, "/w7/")
    dcopy(src, "/*.none", dest, "/w7/")
    dcopy(src, "/[l]og-?.txt", dest, "/w8/")
    assert listing(dest) == [
        ("/w1", "d"), ("/w1/entry.txt", "f"), ("/w1/log-a.txt", "f"), ("/w1/log-b.txt", "f"),
        ("/w1/nested", "d"), ("/w1/nested/y.txt", "f"), ("/w2", "d"), ("/w2/m1.dat", "f"),
        ("/w2/m2.dat", "f"), ("/w3", "d"), ("/w3/m1.dat", "f"), ("/w3/m10.dat", "f"),
        ("/w4", "d"), ("/w4/entry.txt", "f"), ("/w4/y.txt", "f"), ("/w5", "d"),
        ("/w5/one.cfg", "f"), ("/w5/two.cfg", "f"), ("/w7", "d"), ("/w7/lone.cfg", "f"),
        ("/w8", "d"), ("/w8/log-a.txt", "f"), ("/w8/log-b.txt", "f"),
    ]  # fmt: skip


def test_wildcard_errors_and_literal_names(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    write(src / "a*b", "literal")
    with pytest.raises(PathNotFoundError, match=r"^copy /x\*: no such file or directory$"):
        fileops.copy(str(src), "/x*", str(dest), "/", allow_wildcard=True)
    fileops.copy(str(src), "/a*b", str(dest), "/lit")  # no allow_wildcard: a literal name
    assert (dest / "lit").read_text() == "literal"
    with pytest.raises(PathNotFoundError, match=r"^copy /missing: no such file or directory$"):
        fileops.copy(str(src), "/missing", str(dest), "/")


def make_case_003(src: Path) -> None:
    write(src / "real.txt", "real content\n")
    write(src / "tree" / "leaf.txt", "leaf\n")
    write(src / "tree" / "sub" / "zed.txt", "zed\n")
    os.symlink("tree", src / "dirlink")
    os.symlink("/real.txt", src / "link-abs")
    os.symlink("real.txt", src / "link-rel")
    os.symlink("../real.txt", src / "tree" / "up")
    os.symlink("leaf.txt", src / "tree" / "ln")
    os.symlink("missing-target", src / "tree" / "dangling")


def test_case_003_symlink_sources(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    make_case_003(src)
    dcopy(src, "/link-rel", dest, "/s1/")
    dcopy(src, "/link-abs", dest, "/s2/")
    dcopy(src, "/tree", dest, "/s3/")
    dcopy(src, "/dirlink", dest, "/s4/")
    dcopy(src, "/link-*", dest, "/s5/")
    dcopy(src, "/tree/ln", dest, "/s6/")
    dcopy(src, "/tree/up", dest, "/s7/renamed-up")
    tree = [("/dangling", "l"), ("/leaf.txt", "f"), ("/ln", "l"), ("/sub", "d"),
            ("/sub/zed.txt", "f"), ("/up", "l")]  # fmt: skip
    assert listing(dest) == sorted(
        [("/s1", "d"), ("/s1/link-rel", "f"), ("/s2", "d"), ("/s2/link-abs", "f")]
        + [("/s3", "d")] + [("/s3" + p, k) for p, k in tree]
        + [("/s4", "d")] + [("/s4" + p, k) for p, k in tree]
        + [("/s5", "d"), ("/s5/link-abs", "f"), ("/s5/link-rel", "f"), ("/s6", "d"),
           ("/s6/ln", "f"), ("/s7", "d"), ("/s7/renamed-up", "f")]
    )  # fmt: skip
    assert (dest / "s2" / "link-abs").read_text() == "real content\n"
    assert (dest / "s7" / "renamed-up").read_text() == "real content\n"
    assert os.readlink(dest / "s3" / "up") == "../real.txt"


def test_follow_symlink_false_copies_the_link(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    make_case_003(src)
    fileops.copy(str(src), "/link-abs", str(dest), "/l", follow_symlink=False)
    assert os.readlink(dest / "l") == "/real.txt"
    fileops.copy(str(src), "/dirlink", str(dest), "/d", follow_symlink=False)
    assert os.readlink(dest / "d") == "tree"


def test_case_004_dest_symlinks(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    for n in ("first", "second", "third", "fourth", "fifth"):
        write(src / f"{n}.in", n[:2])
    (dest / "data" / "real").mkdir(parents=True)
    os.symlink("/data/real", dest / "data" / "link")
    write(dest / "data" / "target.txt", "old\n")
    os.symlink("target.txt", dest / "data" / "flink")
    os.symlink("data/real", dest / "rel-link")
    os.symlink("/nowhere", dest / "data" / "broken")
    dcopy(src, "/first.in", dest, "/data/link/")
    dcopy(src, "/second.in", dest, "/data/flink")
    dcopy(src, "/third.in", dest, "/rel-link/sub/")
    dcopy(src, "/fourth.in", dest, "/data/link/inner/renamed.txt")
    dcopy(src, "/fifth.in", dest, "/data/broken")
    assert listing(dest) == [
        ("/data", "d"), ("/data/broken", "l"), ("/data/flink", "l"), ("/data/link", "l"),
        ("/data/real", "d"), ("/data/real/first.in", "f"), ("/data/real/inner", "d"),
        ("/data/real/inner/renamed.txt", "f"), ("/data/real/sub", "d"),
        ("/data/real/sub/third.in", "f"), ("/data/target.txt", "f"), ("/nowhere", "f"),
        ("/rel-link", "l"),
    ]  # fmt: skip
    assert (dest / "data" / "target.txt").read_text() == "se"
    assert (dest / "nowhere").read_text() == "fi"


def test_metadata_is_preserved(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    f = write(src / "d" / "f", "data")
    os.chown(f, 1001, 1002)
    os.chmod(f, 0o4750)  # after chown, which clears set-id bits
    os.chown(src / "d", 1003, 1004)
    os.chmod(src / "d", 0o2711)
    os.setxattr(f, "user.note", b"kept")
    os.utime(f, ns=(TS, TS + 7))
    os.symlink("f", src / "d" / "lnk")
    os.lchown(src / "d" / "lnk", 1005, 1006)
    os.mkfifo(src / "d" / "pipe", 0o620)
    os.chmod(src / "d" / "pipe", 0o620)
    os.utime(src / "d", ns=(TS, TS + 9))
    fileops.copy(str(src), "/", str(dest), "/", dir_copy_contents=True)
    st = os.lstat(dest / "d" / "f")
    assert stat.S_IMODE(st.st_mode) == 0o4750
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (1001, 1002, TS + 7)
    assert os.getxattr(dest / "d" / "f", "user.note") == b"kept"
    dst = os.lstat(dest / "d")
    assert (stat.S_IMODE(dst.st_mode), dst.st_uid, dst.st_gid) == (0o2711, 1003, 1004)
    assert dst.st_mtime_ns == TS + 9  # set after the children were written
    lst = os.lstat(dest / "d" / "lnk")
    assert (os.readlink(dest / "d" / "lnk"), lst.st_uid, lst.st_gid) == ("f", 1005, 1006)
    pst = os.lstat(dest / "d" / "pipe")
    assert stat.S_ISFIFO(pst.st_mode) and stat.S_IMODE(pst.st_mode) == 0o620


def test_owner_mode_and_timestamp_options(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    write(src / "t" / "run.sh", "#!/bin/sh\n", 0o755)
    write(src / "t" / "sub" / "conf", "c", 0o600)
    os.chmod(src / "t" / "sub", 0o4755)
    dcopy(src, "/t", dest, "/o/new/", owner=Owner(42, 43), mode=0o640, timestamp=TS)
    for rel in ("o/new", "o/new/run.sh", "o/new/sub", "o/new/sub/conf"):
        st = os.lstat(dest / rel)
        assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (42, 43, TS), rel
    assert stat.S_IMODE(os.lstat(dest / "o/new/run.sh").st_mode) == 0o640
    assert stat.S_IMODE(os.lstat(dest / "o/new/sub").st_mode) == 0o4640  # special bits stay
    created_parent = os.lstat(dest / "o")
    # made with the timestamp, then bumped by creating o/new in it (BuildKit's MkdirAll)
    assert created_parent.st_uid == 42 and created_parent.st_mtime_ns != TS
    assert stat.S_IMODE(created_parent.st_mode) == 0o755
    fileops.copy(str(src), "/t/run.sh", str(dest), "/keep", mode=-1)
    assert stat.S_IMODE(os.lstat(dest / "keep").st_mode) == 0o755


def test_case_007_top_dir_is_made_not_copied(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    write(src / "out" / "share" / "s.txt", "s")
    os.chown(src / "out" / "share", 1000, 65534)
    os.chmod(src / "out" / "share", 0o750)
    dcopy(src, "/out/share", dest, "/p3")
    dcopy(src, "/out/", dest, "/p2/")
    dcopy(src, "/out/share/", dest, "/p5/", owner=Owner(1000, 1000))
    fileops.copy(str(src), "/out/share", str(dest), "/raw", create_dest_path=True)
    top = [os.lstat(dest / p) for p in ("p3", "p5", "raw")]
    # COPY's contents-only copies make the top directory; a plain copy of a directory to a
    # new name copies it, metadata included (recorded from BuildKit: tests/bkdiff copy-mode)
    assert [(stat.S_IMODE(t.st_mode), t.st_uid, t.st_gid) for t in top] == [
        (0o755, 0, 0), (0o755, 1000, 1000), (0o750, 1000, 65534)
    ]  # fmt: skip
    below = os.lstat(dest / "p2" / "share")
    assert (stat.S_IMODE(below.st_mode), below.st_uid, below.st_gid) == (0o750, 1000, 65534)


def test_existing_top_dir_keeps_its_metadata(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    write(src / "d" / "sub" / "f", "x")
    os.chmod(src / "d", 0o755)
    os.chmod(src / "d" / "sub", 0o750)
    (dest / "t" / "sub").mkdir(parents=True)
    os.chmod(dest / "t", 0o711)
    os.chmod(dest / "t" / "sub", 0o700)
    dcopy(src, "/d", dest, "/t/")
    assert stat.S_IMODE(os.lstat(dest / "t").st_mode) == 0o711  # the target itself: kept
    assert stat.S_IMODE(os.lstat(dest / "t" / "sub").st_mode) == 0o750  # below: overwritten


def test_create_dest_path(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    write(src / "f", "x")
    with pytest.raises(PathNotFoundError, match="destination directory does not exist"):
        fileops.copy(str(src), "/f", str(dest), "/a/b/f")
    fileops.copy(str(src), "/f", str(dest), "/a/")  # only the parent of /a must exist
    fileops.copy(str(src), "/f", str(dest), "/x/y/", create_dest_path=True)
    assert (dest / "a" / "f").is_file() and (dest / "x" / "y" / "f").is_file()


def test_file_over_directory(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    write(src / "d" / "x", "file")
    (dest / "d" / "x").mkdir(parents=True)
    (dest / "d" / "x" / "old").write_text("")
    with pytest.raises(FileOpError, match=r"^copy /d/x: cannot replace a directory with a file$"):
        fileops.copy(str(src), "/d", str(dest), "/d", dir_copy_contents=True)
    fileops.copy(str(src), "/d", str(dest), "/d", dir_copy_contents=True,
                 always_replace_existing_dir_with_file=True)  # fmt: skip
    assert (dest / "d" / "x").read_text() == "file"


def test_hardlinks_within_one_copy(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    a = write(src / "pack" / "x" / "a", "linked\n")
    (src / "pack" / "y").mkdir()
    os.link(a, src / "pack" / "y" / "b")
    os.link(a, src / "pack" / "c")
    dcopy(src, "/pack", dest, "/copied/")
    ino = {os.lstat(dest / "copied" / p).st_ino for p in ("x/a", "y/b", "c")}
    assert len(ino) == 1
    assert os.lstat(dest / "copied" / "c").st_nlink == 3
    assert os.lstat(a).st_nlink == 3  # the source is not linked to the copy
    dcopy(src, "/pack/y/b", dest, "/single/")
    dcopy(src, "/pack/c", dest, "/single/")
    assert os.lstat(dest / "single" / "b").st_ino != os.lstat(dest / "single" / "c").st_ino


def test_case_040_exclude_patterns(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    for name in ("README.md", "credentials.txt", "deep/a/b/c.tmp", "docs/README.md",
                 "keep/a.tmp", "keep/kept.txt", "logs/app.log", "logs/deep/other.log",
                 "logs/deep/retain.log", "logs/retain.log", "notes.txt",
                 "sub/credentials.txt"):  # fmt: skip
        write(src / name, "x")
    ignore = ["/credentials.txt", "logs/", "!logs/retain.log", "!logs/deep/*.log",
              "logs/deep/other.log", "**/*.tmp", "*.md", "notes.txt"]  # fmt: skip
    dcopy(src, "/", dest, "/ctx/", exclude_patterns=ignore)
    assert [p for p, _ in listing(dest, "/ctx")] == [
        "/ctx/deep", "/ctx/deep/a", "/ctx/deep/a/b", "/ctx/docs", "/ctx/docs/README.md",
        "/ctx/keep", "/ctx/keep/kept.txt", "/ctx/logs", "/ctx/logs/deep",
        "/ctx/logs/deep/retain.log", "/ctx/logs/retain.log", "/ctx/sub",
        "/ctx/sub/credentials.txt",
    ]  # fmt: skip


def test_include_patterns_create_parents_lazily(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    for name in ("a/x.py", "a/x.txt", "b/c/y.py", "empty/z.txt", "top.py"):
        write(src / name, "x")
    os.chmod(src / "b", 0o700)
    dcopy(src, "/", dest, "/out", include_patterns=["**/*.py"], exclude_patterns=["top*"])
    assert listing(dest, "/out") == [
        ("/out/a", "d"), ("/out/a/x.py", "f"), ("/out/b", "d"), ("/out/b/c", "d"),
        ("/out/b/c/y.py", "f"),
    ]  # fmt: skip
    assert stat.S_IMODE(os.lstat(dest / "out" / "b").st_mode) == 0o700


def test_large_file_content(roots: tuple[Path, Path]) -> None:
    src, dest = roots
    data = os.urandom(3 << 20) + b"tail"
    (src / "big").write_bytes(data)
    with open(src / "sparse", "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"middle")
    fileops.copy(str(src), "/big", str(dest), "/big")
    fileops.copy(str(src), "/sparse", str(dest), "/sparse")
    assert (dest / "big").read_bytes() == data
    assert os.path.getsize(dest / "sparse") == 64 << 20
    with open(dest / "sparse", "rb") as f:
        f.seek(32 << 20)
        assert f.read(6) == b"middle"


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path, Path]:
    src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
    for p in (src, dest, outside):
        p.mkdir()
    write(outside / "secret", "outside secret\n")
    (outside / "dir").mkdir()
    write(src / "f", "payload\n")
    write(src / "d" / "secret", "payload\n")
    write(src / "d" / "dir" / "x", "payload\n")
    os.symlink(str(outside / "secret"), src / "abs-link")
    os.symlink("../../outside/secret", src / "rel-link")
    os.symlink(str(outside), src / "abs-dir")
    return src, dest, outside


def test_source_escapes_are_contained(hostile: tuple[Path, Path, Path]) -> None:
    src, dest, _ = hostile
    for s in ("/../outside/secret", "/../../outside/secret", "/abs-link", "/rel-link",
              "/abs-dir/secret", "/abs-dir/../outside/secret"):  # fmt: skip
        with pytest.raises(PathNotFoundError):
            dcopy(src, s, dest, "/got")
    assert not (dest / "got").exists()
    # the same names exist inside the root once they are created there
    write(src / "outside" / "secret", "inside\n")
    dcopy(src, "/../outside/secret", dest, "/got")
    assert (dest / "got").read_text() == "inside\n"


def test_dest_escapes_are_contained(hostile: tuple[Path, Path, Path]) -> None:
    src, dest, outside = hostile
    before = state(outside)
    os.symlink(str(outside), dest / "abs-parent")
    os.symlink("../outside", dest / "rel-parent")
    os.symlink(str(outside / "secret"), dest / "file-link")
    (dest / "target").mkdir()
    os.symlink(str(outside / "secret"), dest / "target" / "secret")  # pre-placed trap
    os.symlink(str(outside / "dir"), dest / "target" / "dir")
    dcopy(src, "/f", dest, "/../../outside/f")
    dcopy(src, "/f", dest, "/abs-parent/f")
    dcopy(src, "/f", dest, "/rel-parent/secret")
    dcopy(src, "/f", dest, "/file-link")
    dcopy(src, "/d/secret", dest, "/target/")
    with pytest.raises(FileOpError, match="cannot copy to non-directory"):
        dcopy(src, "/d", dest, "/target/")
    assert state(outside) == before
    assert os.readlink(dest / "target" / "dir") == str(outside / "dir")
    assert not os.path.islink(dest / "target" / "secret")  # the trap link was replaced
    inside = dest / str(outside).lstrip("/")
    assert (inside / "f").read_text() == "payload\n"
    assert (inside / "secret").read_text() == "payload\n"


def test_copy_within_one_root_onto_itself_and_into_itself(tmp_path: Path) -> None:
    root = tmp_path
    write(root / "a" / "f", "keep me")
    write(root / "a" / "sub" / "g", "g")
    fileops.copy(str(root), "/a/f", str(root), "/a/f", mode=0o600)
    assert (root / "a" / "f").read_text() == "keep me"
    assert stat.S_IMODE(os.lstat(root / "a" / "f").st_mode) == 0o600
    fileops.copy(str(root), "/a", str(root), "/a/copy", create_dest_path=True)
    assert listing(root, "/a/copy") == [
        ("/a/copy/f", "f"), ("/a/copy/sub", "d"), ("/a/copy/sub/g", "f")
    ]  # fmt: skip
