"""The four LLB file actions applied to a root directory (the snapshot being changed).

Every path is resolved inside its root with :mod:`bkcore.fs.securepath`. Functions are
blocking; callers in async code run them with ``asyncio.to_thread``. Timestamps are Unix
nanoseconds, ``-1`` meaning "now". Errors are :class:`~bkcore.fs.errors.FileOpError` with
one line such as ``copy /x: no such file or directory``.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
from collections.abc import Sequence

from bkcore.fs.copier import Copier
from bkcore.fs.errors import FileOpError, PathNotFoundError
from bkcore.fs.meta import mkdir_all, set_owner, set_times, timestamp_ns
from bkcore.fs.patterns import PathMatcher
from bkcore.fs.securepath import resolve, resolve_components
from bkcore.fs.unpack import extract, is_archive
from bkcore.fs.users import Owner
from bkcore.fs.wildcards import resolve_wildcards, split_wildcards

__all__ = ["Owner", "clean_path", "copy", "mkdir", "mkfile", "rm"]


def clean_path(path: str) -> str:
    """Absolute clean path that keeps a trailing ``/`` or ``/.`` (they change copy targets)."""
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    if path.endswith("/."):
        return cleaned + ("." if cleaned == "/" else "/.")
    if path.endswith("/") and cleaned != "/":
        return cleaned + "/"
    return cleaned


def _err(action: str, path: str, exc: OSError) -> FileOpError:
    cls = PathNotFoundError if isinstance(exc, FileNotFoundError) else FileOpError
    return cls(f"{action} {path}: {(exc.strerror or str(exc)).lower()}")


def mkdir(
    root: str,
    path: str,
    mode: int,
    make_parents: bool = False,
    owner: Owner | None = None,
    timestamp: int = -1,
) -> None:
    """Create directory *path* with permission bits *mode*; an existing one is kept as is."""
    root = os.path.abspath(root)
    comps = resolve_components(root, path, follow_final=True)
    ns = timestamp_ns(timestamp)
    if make_parents:
        mkdir_all(root, comps, mode & 0o777, owner, ns)
        return
    if not comps:
        return
    target = os.path.join(root, *comps)
    try:
        os.mkdir(target, 0o700)
    except FileExistsError:
        return
    except OSError as exc:
        raise _err("mkdir", path, exc) from exc
    set_owner(target, owner)
    os.chmod(target, mode & 0o777)
    set_times(target, ns)


def mkfile(
    root: str,
    path: str,
    mode: int,
    data: bytes,
    owner: Owner | None = None,
    timestamp: int = -1,
) -> None:
    """Create file *path* holding *data* with permission bits *mode*, or truncate and
    rewrite an existing one, which keeps its mode (BuildKit v0.11: ``os.WriteFile``)."""
    root = os.path.abspath(root)
    comps = resolve_components(root, path, follow_final=True)
    if not comps:
        raise FileOpError(f"mkfile {path}: is a directory")
    target = os.path.join(root, *comps)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags | os.O_EXCL, 0o600)
        created = True
    except FileExistsError:
        try:
            fd = os.open(target, flags, 0o600)
        except OSError as exc:
            raise _err("mkfile", path, exc) from exc
        created = False
    except OSError as exc:
        raise _err("mkfile", path, exc) from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
        if created:
            os.fchmod(fd, mode & 0o777)
    set_times(target, timestamp_ns(timestamp))


def _rm_one(root: str, path: str, allow_not_found: bool) -> None:
    """Remove one path. A missing final component is not an error, with or without
    *allow_not_found*: BuildKit v0.11 removes with Go's ``os.RemoveAll``, which succeeds on
    a path that does not exist; a non-directory in the parent path is one unless allowed."""
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    parent, base = posixpath.split(cleaned)
    if not base or base == "..":
        raise FileOpError(f"rm {path}: cannot remove the root directory")
    target = os.path.join(resolve(root, parent, follow_final=True), base)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    except NotADirectoryError as exc:
        if allow_not_found:
            return
        raise FileOpError(f"rm {path}: not a directory") from exc
    try:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(target)
        else:
            os.unlink(target)
    except OSError as exc:
        raise _err("rm", path, exc) from exc


def rm(root: str, path: str, allow_not_found: bool = False, allow_wildcard: bool = False) -> None:
    """Remove *path* (recursively; a final symlink itself, never its target)."""
    root = os.path.abspath(root)
    if allow_wildcard and split_wildcards(path)[1]:
        for match in resolve_wildcards(root, path):
            _rm_one(root, match, True)
        return
    _rm_one(root, path, allow_not_found)


def _unpack(
    src_root: str, src: str, dest_root: str, dest: str, owner: Owner | None, ns: int | None
) -> bool:
    archive = resolve(src_root, src, follow_final=True)
    if not is_archive(archive):
        return False
    comps = resolve_components(dest_root, dest, follow_final=True)
    mkdir_all(dest_root, comps, 0o755, owner, ns, action="copy")
    extract(archive, os.path.join(dest_root, *comps), src)
    return True


def _copy_one(
    src_root: str,
    src: str,
    dest_root: str,
    dest: str,
    copier: Copier,
    *,
    follow_symlink: bool,
    dir_copy_contents: bool,
) -> None:
    head, tail = posixpath.split(dest)
    ensure = head if tail not in ("", ".") else dest
    ensure_comps = resolve_components(dest_root, ensure, follow_final=True)
    mkdir_all(dest_root, ensure_comps, 0o755, copier.owner, copier.ns, action="copy")
    dst = os.path.join(dest_root, *resolve_components(dest_root, dest, follow_final=True))

    src_host = resolve(src_root, src, follow_final=follow_symlink)
    try:
        src_st = os.lstat(src_host)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise PathNotFoundError(f"copy {src}: no such file or directory") from exc
    src_is_dir = stat.S_ISDIR(src_st.st_mode)
    try:
        dest_is_dir: bool | None = stat.S_ISDIR(os.stat(dst).st_mode)
    except OSError:
        dest_is_dir = None
    if dest_is_dir is not None and (
        (src_is_dir and not dir_copy_contents) or (not src_is_dir and dest_is_dir)
    ):
        base = posixpath.basename(posixpath.normpath(src))
        dst = os.path.join(dst, base) if base else dst
    # As BuildKit v0.11 (fsutil's prepareTargetDir): the contents of a directory copied to
    # a missing destination go into a directory made like a created parent (0755, owner,
    # time; conformance case 007); otherwise only the target's parent is made here, and a
    # source directory's own target, when the copy creates it, gets the source's metadata.
    # Either way the copy then gives the top directory the source's (or the set) mtime.
    contents_into_new = src_is_dir and dir_copy_contents and dest_is_dir is None
    target_dir = dst if contents_into_new else os.path.dirname(dst)
    rel = os.path.relpath(target_dir, dest_root)
    mkdir_all(
        dest_root,
        [] if rel == "." else rel.split("/"),
        0o755,
        copier.owner,
        copier.ns,
        action="copy",
    )
    if src_is_dir and os.path.isdir(dst):
        copier.never_descend(dst)
    copier.copy(src_host, "", dst, False)


def copy(
    src_root: str,
    src: str,
    dest_root: str,
    dest: str,
    *,
    owner: Owner | None = None,
    mode: int | None = None,
    follow_symlink: bool = False,
    dir_copy_contents: bool = False,
    attempt_unpack: bool = False,
    create_dest_path: bool = False,
    allow_wildcard: bool = False,
    allow_empty_wildcard: bool = False,
    timestamp: int = -1,
    include_patterns: Sequence[str] = (),
    exclude_patterns: Sequence[str] = (),
    always_replace_existing_dir_with_file: bool = False,
) -> None:
    """Copy *src* from *src_root* to *dest* in *dest_root* with BuildKit's COPY rules.

    A *dest* ending in ``/`` (or ``/.``) is a directory to copy into; otherwise an existing
    directory is copied into and anything else is the new name. A source directory lands as
    ``dest/<name>`` when *dest* exists, unless *dir_copy_contents*. *mode* ``None``/``-1``
    keeps source modes; *owner* ``None`` keeps source owners.
    """
    src_root = os.path.abspath(src_root)
    dest_root = os.path.abspath(dest_root)
    src_path = clean_path(src)
    dest_path = clean_path(dest)
    ns = timestamp_ns(timestamp)
    if not create_dest_path:
        final = resolve(dest_root, posixpath.normpath(dest_path), follow_final=True)
        parent = os.path.dirname(final)
        if not os.path.isdir(parent):
            raise PathNotFoundError(f"copy {dest}: destination directory does not exist")
    copier = Copier(
        dest_root=dest_root,
        owner=owner,
        mode=None if mode is None or mode == -1 else mode,
        ns=ns,
        matcher=PathMatcher(include_patterns, exclude_patterns),
        replace_dir_with_file=always_replace_existing_dir_with_file,
    )
    if allow_wildcard and split_wildcards(src_path)[1]:
        sources = resolve_wildcards(src_root, src_path)
        if not sources:
            if allow_empty_wildcard:
                return
            raise PathNotFoundError(f"copy {src}: no such file or directory")
    else:
        sources = [src_path]
    try:
        for source in sources:
            if attempt_unpack and _unpack(src_root, source, dest_root, dest_path, owner, ns):
                continue
            _copy_one(
                src_root,
                source,
                dest_root,
                dest_path,
                copier,
                follow_symlink=follow_symlink,
                dir_copy_contents=dir_copy_contents,
            )
    except FileOpError:
        raise
    except OSError as exc:
        raise _err("copy", src, exc) from exc
