"""Docker ``ADD``-style extraction of tar archives (plain, gzip, bzip2, xz) into a directory.

Entries are placed as if the destination directory were the root of a chroot: names that
climb out with ``..`` and hard links to outside are refused, and every entry's parent is
resolved through :mod:`bkcore.fs.securepath` (so a symlink written by an earlier entry can
never lead a later one outside). Owners, modes, times and ``SCHILY.xattr.*`` records come
from the archive.
"""

from __future__ import annotations

import decimal
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import zlib

from bkcore.fs.errors import FileOpError
from bkcore.fs.securepath import resolve, resolve_components

_NOT_TAR = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def is_archive(path: str) -> bool:
    """True when *path* is a regular file holding a tar stream with at least one entry."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with tarfile.open(path, "r|*") as tf:
            return tf.next() is not None
    except _NOT_TAR:
        return False


def _entry_path(dest: str, name: str, archive: str) -> tuple[str, str] | None:
    """Host path of the parent directory and base name for entry *name*; None for the root."""
    cleaned = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if cleaned == ".":
        return None
    if cleaned == ".." or cleaned.startswith("../"):
        raise FileOpError(f"unpack {archive}: entry {name!r} points outside the destination")
    parent, base = posixpath.split(cleaned)
    comps = resolve_components(dest, parent, follow_final=True)
    path = dest
    for comp in comps:
        path = os.path.join(path, comp)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise FileOpError(f"unpack {archive}: parent of {name!r} is not a directory")
    return path, base


def _remove(path: str) -> None:
    st = os.lstat(path)
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    """The entry's mtime in ns, exact for PAX fractional times (a float would round)."""
    text = member.pax_headers.get("mtime")
    if text:
        try:
            return int(decimal.Decimal(text).scaleb(9))
        except decimal.InvalidOperation:
            pass
    return int(member.mtime) * 1_000_000_000


def _apply_meta(path: str, member: tarfile.TarInfo) -> None:
    os.chown(path, member.uid, member.gid, follow_symlinks=False)
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            try:
                raw = value.encode("utf-8", "surrogateescape")
                os.setxattr(path, key[len("SCHILY.xattr.") :], raw, follow_symlinks=False)
            except OSError:
                continue
    if not member.isdir():
        mtime = _mtime_ns(member)
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def _extract_member(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: str, archive: str) -> None:
    placed = _entry_path(dest, member.name, archive)
    if placed is None:
        return
    parent, base = placed
    path = os.path.join(parent, base)
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        existing = None
    if existing is not None and not (stat.S_ISDIR(existing.st_mode) and member.isdir()):
        _remove(path)
    if member.isdir():
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            os.mkdir(path, 0o700)
    elif member.isreg():
        src = tf.extractfile(member)
        if src is None:
            raise FileOpError(f"unpack {archive}: cannot read entry {member.name!r}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with src, os.fdopen(os.open(path, flags, 0o600), "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    elif member.issym():
        os.symlink(member.linkname, path)
    elif member.islnk():
        target = posixpath.normpath(member.linkname.lstrip("/") or ".")
        if target == ".." or target.startswith("../"):
            raise FileOpError(f"unpack {archive}: hard link {member.name!r} points outside")
        try:
            os.link(resolve(dest, target, follow_final=False), path, follow_symlinks=False)
        except OSError as exc:
            raise FileOpError(
                f"unpack {archive}: hard link {member.name!r} to {member.linkname!r}: "
                f"{exc.strerror}"
            ) from exc
        return  # a second name for an inode that already has its metadata
    elif member.ischr() or member.isblk() or member.isfifo():
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
        os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
    else:
        return
    _apply_meta(path, member)


def extract(archive_path: str, dest: str, display: str) -> None:
    """Extract the archive at host path *archive_path* into the existing directory *dest*.

    *display* names the archive in error messages. Directory times are set last, so
    entries written into a directory do not disturb its recorded mtime.
    """
    dirs: list[tuple[str, int]] = []
    try:
        with tarfile.open(archive_path, "r|*") as tf:
            for member in tf:
                _extract_member(tf, member, dest, display)
                if member.isdir():
                    placed = _entry_path(dest, member.name, display)
                    if placed is not None:
                        dirs.append((os.path.join(*placed), _mtime_ns(member)))
    except FileOpError:
        raise
    except _NOT_TAR as exc:
        raise FileOpError(f"unpack {display}: {exc}") from exc
    for path, mtime in reversed(dirs):
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)
