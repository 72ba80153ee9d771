"""Extract an OCI layer blob (gzip, zstd or plain tar, found by magic) onto a directory.

The directory is the root of the tree (a mutable snapshot's mount). OCI whiteouts remove
what lower layers put there (``.wh.<name>``), ``.wh..wh..opq`` empties a directory of what
it held before this layer; owners, modes, extended attributes, hard links, symlinks and
mtimes are kept. Untrusted names never reach outside the root:

* a leading ``/`` is dropped (names are relative to the root, as containerd cleans them);
* a name, or a hard link's target, that climbs above the root with ``..`` is refused;
* a name whose parent path goes through a symlink is refused when that symlink points out
  of the root (an absolute target, or ``..`` above the root); symlinks that stay inside the
  root (``lib -> usr/lib``) are followed;
* device nodes that cannot be created (no privilege) are refused;
* ``trusted.overlay.*`` attributes are dropped (they would steer overlayfs lookups).

Every refusal is a :class:`SourceError` naming the layer digest and the entry. The last
component of a name is never followed: an existing symlink there is replaced.
"""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bkcore.errors import SourceError
from bkcore.fs import securepath
from bkcore.layers.compress import Compression, DecodedReader

_MAX_LINKS = 40
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_WH = ".wh."
_OPAQUE = ".wh..wh..opq"
_IS_ROOT = os.geteuid() == 0
# overlayfs reads these on a layer's directories (opaque, redirect, metacopy): never from a tar
_OVERLAY_XATTR = "SCHILY.xattr.trusted.overlay."


@dataclass(frozen=True, slots=True)
class AppliedLayer:
    """What extracting a layer found: the diff ID of its tar, its size and compression."""

    diff_id: str
    size: int
    compression: Compression


class _Refused(Exception):
    pass


class _Applier:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.written: set[str] = set()  # host paths this layer created
        self.dirs: list[tuple[str, int]] = []

    # -- names ---------------------------------------------------------------------------

    @staticmethod
    def clean(name: str) -> str:
        """The entry's path relative to the root ("" for the root itself)."""
        cleaned = posixpath.normpath("/" + name).lstrip("/")
        raw = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
        if raw == ".." or raw.startswith("../"):
            raise _Refused(f"entry {name!r} points outside the root")
        return "" if cleaned in ("", ".") else cleaned

    def parent_dir(self, rel_parent: str, name: str, *, create: bool) -> str | None:
        """Host path of the directory ``rel_parent``; missing directories are created (or
        None is returned without ``create``); escaping symlinks are refused."""
        done: list[str] = []
        pending = [c for c in rel_parent.split("/") if c][::-1]
        links = 0
        while pending:
            comp = pending.pop()
            host = os.path.join(self.root, *done, comp)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(host, 0o755)
                done.append(comp)
                continue
            if stat.S_ISDIR(st.st_mode):
                done.append(comp)
                continue
            if not stat.S_ISLNK(st.st_mode):
                raise _Refused(f"entry {name!r}: /{'/'.join([*done, comp])} is not a directory")
            links += 1
            if links > _MAX_LINKS:
                raise _Refused(f"entry {name!r}: too many levels of symbolic links")
            target = os.readlink(host)
            via = "/" + "/".join([*done, comp])
            if target.startswith("/"):
                raise _Refused(f"entry {name!r} goes through symlink {via} -> {target} (absolute)")
            joined = posixpath.normpath(posixpath.join("/".join(done) or ".", target))
            if joined == ".." or joined.startswith("../"):
                raise _Refused(f"entry {name!r} goes through symlink {via} -> {target} (outside)")
            done = []
            pending.extend(c for c in reversed(joined.split("/")) if c and c != ".")
        path = os.path.join(self.root, *done)
        # belt and braces: the walk above can only produce paths inside the root
        if os.path.commonpath([self.root, path]) != self.root:
            raise _Refused(f"entry {name!r} resolves outside the root")
        return path

    # -- entries -------------------------------------------------------------------------

    def whiteout(self, rel: str, name: str) -> None:
        parent_rel, base = posixpath.split(rel)
        parent = self.parent_dir(parent_rel, name, create=False)
        if parent is None:
            return
        if base == _OPAQUE:
            for child in os.listdir(parent):
                path = os.path.join(parent, child)
                if path not in self.written:
                    _remove(path)
            return
        target = base[len(_WH) :]
        if base.startswith(_WH + _WH):  # other AUFS metadata: not part of the tree
            return
        if target in ("", ".", ".."):
            raise _Refused(f"whiteout {name!r} names no entry")
        path = os.path.join(parent, target)
        if os.path.lexists(path):
            _remove(path)

    def entry(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        rel = self.clean(name)
        if not rel:
            return  # the root entry: the snapshot's root keeps its own metadata
        if posixpath.basename(rel).startswith(_WH):
            self.whiteout(rel, name)
            return
        parent_rel, base = posixpath.split(rel)
        parent = self.parent_dir(parent_rel, name, create=True)
        assert parent is not None
        path = os.path.join(parent, base)
        try:
            existing: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (stat.S_ISDIR(existing.st_mode) and member.isdir()):
            _remove(path)
        self.written.add(path)
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(path, 0o700)
            self.dirs.append((path, _mtime_ns(member)))
        elif member.isreg():
            src = tf.extractfile(member)
            if src is None:
                raise _Refused(f"entry {name!r} cannot be read")
            with src, os.fdopen(os.open(path, _CREATE, 0o600), "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            self.hardlink(member, path)
            return  # the inode already has its metadata
        elif member.ischr() or member.isblk() or member.isfifo():
            self.node(member, path)
        else:
            self.written.discard(path)
            return  # tar types a file tree has no place for
        _apply_meta(path, member)

    def hardlink(self, member: tarfile.TarInfo, path: str) -> None:
        target = member.linkname
        raw = posixpath.normpath(target.lstrip("/") or ".")
        if raw == ".." or raw.startswith("../"):
            raise _Refused(f"hard link {member.name!r} -> {target!r} points outside the root")
        rel = self.clean(target)
        t_parent, t_base = posixpath.split(rel)
        parent = self.parent_dir(t_parent, member.name, create=False) if rel else None
        source = os.path.join(parent, t_base) if parent is not None else None
        if source is None or not os.path.lexists(source):
            raise _Refused(f"hard link {member.name!r} -> {target!r}: target does not exist")
        # the last component is not followed: the link is to the entry itself, in the root
        checked = securepath.resolve(
            self.root, os.path.relpath(source, self.root), follow_final=False
        )
        if checked != source or stat.S_ISDIR(os.lstat(source).st_mode):
            raise _Refused(f"hard link {member.name!r} -> {target!r}: not a linkable entry")
        os.link(source, path, follow_symlinks=False)

    @staticmethod
    def node(member: tarfile.TarInfo, path: str) -> None:
        kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
        try:
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EACCES, errno.EOPNOTSUPP):
                raise _Refused(
                    f"device node {member.name!r} cannot be created here: {exc.strerror}"
                ) from exc
            raise

    def finish(self) -> None:
        for path, mtime in reversed(self.dirs):
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    text = member.pax_headers.get("mtime")
    if text:
        try:
            whole, _, frac = text.partition(".")
            return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
        except ValueError:
            pass
    return int(member.mtime) * 1_000_000_000


def _apply_meta(path: str, member: tarfile.TarInfo) -> None:
    try:
        os.chown(path, member.uid, member.gid, follow_symlinks=False)
    except PermissionError:
        if _IS_ROOT:
            raise
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr.") and not key.startswith(_OVERLAY_XATTR):
            raw = value.encode("utf-8", "surrogateescape")
            try:
                os.setxattr(path, key[len("SCHILY.xattr.") :], raw, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
    if not member.issym():
        os.chmod(path, member.mode & 0o7777)
    if not member.isdir():
        mtime = _mtime_ns(member)
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def apply_layer(
    blob: Path | BinaryIO, dest: Path, *, digest: str, diff_id: str | None = None
) -> AppliedLayer:
    """Extract the layer ``blob`` (a path or a readable stream) onto the tree ``dest``.

    ``digest`` names the layer in errors. With ``diff_id`` the uncompressed tar must hash to
    it. Blocking: use :func:`apply_layer_async` from async code.
    """
    if isinstance(blob, Path):
        try:
            with open(blob, "rb") as f:
                return apply_layer(f, dest, digest=digest, diff_id=diff_id)
        except OSError as exc:
            raise SourceError(f"layer {digest}: cannot read blob: {exc}") from exc
    applier = _Applier(str(dest))
    current = ""
    try:
        reader = DecodedReader(blob)
        with tarfile.open(
            fileobj=reader, mode="r|", encoding="utf-8", errors="surrogateescape"
        ) as tf:  # type: ignore[call-overload]
            for member in tf:
                current = member.name
                applier.entry(tf, member)
        applier.finish()
        got = reader.drain()
    except _Refused as exc:
        raise SourceError(f"layer {digest}: {exc}") from None
    except (tarfile.TarError, zlib.error, EOFError, ValueError) as exc:
        raise SourceError(f"layer {digest}: not a valid layer archive: {exc}") from exc
    except OSError as exc:
        where = f" at {current!r}" if current else ""
        raise SourceError(f"layer {digest}: cannot extract{where}: {exc}") from exc
    if diff_id is not None and got != diff_id:
        raise SourceError(f"layer {digest}: diff ID mismatch: expected {diff_id}, got {got}")
    return AppliedLayer(got, reader.size, reader.compression)


async def apply_layer_async(
    blob: Path | BinaryIO, dest: Path, *, digest: str, diff_id: str | None = None
) -> AppliedLayer:
    return await asyncio.to_thread(apply_layer, blob, dest, digest=digest, diff_id=diff_id)
