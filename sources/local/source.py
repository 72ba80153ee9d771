"""The ``local://NAME`` source: a client directory synced through the session's FileSync.

Key (spec/solver.md §2.3): ``session:NAME:`` + the digest of the Go JSON
``{"SessionID","IncludePatterns","ExcludePatterns","FollowPaths"}``, so the vertex always runs
(the ``session:`` prefix makes the solver's digest random) and consumers key the content.

Fetching: the directory is synced incrementally (``local.differ``) into a persistent copy
under ``<store root>/local/<id>/tree``, one per ``NAME:<local.sharedkeyhint>:<session shared
key>`` like BuildKit, with the sync's content index beside it. The embedded client's shared
key is derived from the absolute client directories, so two projects never share (and never
clobber) one copy. The synced tree is then committed as a snapshot *addressed by what it
holds*: a digest of every entry's path, type, mode, owner, mtime, size, content sha256, link
target, device numbers and xattrs. A tree seen before (unchanged context, or a branch switched
back, or the same files in another project) reuses its committed snapshot instead of being
copied again. Snapshots are described ``local source for NAME`` so consumers checksum them
with the root header sha256(empty) (``ContentHasher(root, empty_root_header=True)``).

A per-copy ``flock`` serialises the sync and commit of one copy across processes; the copies'
layout and that lock live in :mod:`bkcore.cache.localcopies`, shared with ``du``/``prune``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bkcore.cache.localcopies import CONTENT_DIR, INDEX, LOCAL_DIR, copy_dir_for, lock_copy
from bkcore.errors import CacheError, SessionError, SourceError

if TYPE_CHECKING:
    from bkcore.cache.store import CacheStore
    from bkcore.session.manager import ConnectedSession
    from bkcore.solver.types import Result
    from bkcore.source import SourceContext

__all__ = ["LocalInstance", "LocalSource", "LocalSpec", "copy_dir_for", "tree_identity"]

SCHEME = "local://"
#: File in a copy's directory naming the snapshot last committed from it.
LAST = "last-snapshot"
OVERLAY = "overlayfs"
DESCRIPTION_PREFIX = "local source for "


@dataclass(frozen=True, slots=True)
class LocalSpec:
    """A parsed ``local://NAME`` op. Pattern lists are None when the attr is absent."""

    name: str
    session: str = ""
    includes: tuple[str, ...] | None = None
    excludes: tuple[str, ...] | None = None
    follow_paths: tuple[str, ...] | None = None
    shared_key_hint: str = ""
    differ: Literal["metadata", "none"] = "metadata"

    @property
    def dir_name(self) -> str:
        """The directory name asked of the client: ``PREFIX-NAME`` when ``local.session`` is
        written ``PREFIX:ID``, else ``NAME``."""
        prefix, sep, _ = self.session.rpartition(":")
        return f"{prefix}-{self.name}" if sep and prefix else self.name


def _string_list(attrs: Mapping[str, str], key: str) -> tuple[str, ...] | None:
    raw = attrs.get(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise SourceError(f"invalid {key} {raw!r}: expected a JSON list of strings") from None
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SourceError(f"invalid {key} {raw!r}: expected a JSON list of strings")
    return tuple(value)


def parse(identifier: str, attrs: Mapping[str, str]) -> LocalSpec:
    """The :class:`LocalSpec` of ``local://NAME`` and its ``local.*`` attrs."""
    if not identifier.startswith(SCHEME):
        raise SourceError(f"invalid local source {identifier!r}: expected local://NAME")
    name = identifier[len(SCHEME) :]
    if not name:
        raise SourceError(f"invalid local source {identifier!r}: the name is empty")
    differ = attrs.get("local.differ", "") or "metadata"
    if differ not in ("metadata", "none"):
        raise SourceError(f"invalid local.differ {differ!r}: expected metadata or none")
    return LocalSpec(
        name=name,
        session=attrs.get("local.session", ""),
        includes=_string_list(attrs, "local.includepattern"),
        excludes=_string_list(attrs, "local.excludepatterns"),
        follow_paths=_string_list(attrs, "local.followpaths"),
        shared_key_hint=attrs.get("local.sharedkeyhint", ""),
        differ="none" if differ == "none" else "metadata",
    )


def cache_key_string(spec: LocalSpec, session_id: str) -> str:
    """``session:NAME:sha256:<hex>`` of the Go JSON BuildKit hashes (nil lists are null)."""
    from bkcore.llb.gojson import go_json

    doc = go_json(
        {
            "SessionID": session_id,
            "IncludePatterns": None if spec.includes is None else list(spec.includes),
            "ExcludePatterns": None if spec.excludes is None else list(spec.excludes),
            "FollowPaths": None if spec.follow_paths is None else list(spec.follow_paths),
        }
    )
    return f"session:{spec.name}:sha256:{hashlib.sha256(doc.encode()).hexdigest()}"


def _file_sha256(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tree_identity(root: str, digests: Mapping[str, str] | None = None) -> str:
    """A digest of everything the tree at ``root`` holds, metadata and mtimes included.

    ``digests`` (relative path -> content sha256 hex, as a sync reports them) saves reading
    files; a file without one is hashed here. The root's own metadata counts too.
    """
    known = digests or {}
    h = hashlib.sha256()

    def entry(rel: str, host: str, st: os.stat_result) -> None:
        fmt = stat.S_IFMT(st.st_mode)
        extra = ""
        if fmt == stat.S_IFREG:
            extra = known.get(rel) or _file_sha256(host)
        elif fmt == stat.S_IFLNK:
            extra = os.readlink(host)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
            extra = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
        try:
            names = sorted(os.listxattr(host, follow_symlinks=False))
        except OSError:
            names = []
        xattrs = []
        for x in names:
            with contextlib.suppress(OSError):
                xattrs.append(x + "=" + os.getxattr(host, x, follow_symlinks=False).hex())
        line = (
            f"{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0{st.st_mtime_ns}\0"
            f"{st.st_size if fmt == stat.S_IFREG else 0}\0{extra}\0{','.join(xattrs)}\n"
        )
        h.update(os.fsencode(line))

    def visit(rel_dir: str, abs_dir: str) -> None:
        names = os.listdir(abs_dir)
        names.sort(key=os.fsencode)
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            host = os.path.join(abs_dir, name)
            st = os.lstat(host)
            entry(rel, host, st)
            if stat.S_ISDIR(st.st_mode):
                visit(rel, host)

    entry("", root, os.lstat(root))
    visit("", root)
    return h.hexdigest()


def _read_content_map(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _write_content_map(path: Path, snapshot_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(snapshot_id)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class LocalInstance:
    """One ``local://NAME`` op (:class:`bkcore.source.SourceInstance`)."""

    def __init__(self, spec: LocalSpec) -> None:
        self.spec = spec

    # -- keying --------------------------------------------------------------------------

    def _group(self, ctx: SourceContext) -> list[str]:
        """Session ids to try: ``local.session`` first, then each job's session."""
        out: list[str] = [self.spec.session] if self.spec.session else []
        for job in ctx.jobs():
            sid = job.values.get("session")
            if isinstance(sid, str) and sid and sid not in out:
                out.append(sid)
        return out

    async def cache_key(self, ctx: SourceContext, index: int) -> tuple[str, bool]:
        group = self._group(ctx)
        if not group:
            raise SourceError(f"local source {self.spec.name!r}: no session to read it from")
        return cache_key_string(self.spec, group[0]), True

    # -- fetching ------------------------------------------------------------------------

    async def snapshot(self, ctx: SourceContext) -> Result:
        group = self._group(ctx)
        if not group:
            raise SourceError(f"local source {self.spec.name!r}: no session to read it from")

        async def attempt(conn: ConnectedSession) -> Result:
            return await self._fetch(ctx, conn)

        try:
            return await ctx.engine.sessions.any(group, attempt)
        except SessionError as exc:
            raise SourceError(f"local source {self.spec.name!r}: {exc}") from exc

    async def _fetch(self, ctx: SourceContext, conn: ConnectedSession) -> Result:
        from bkcore.session.filesync import sync_dir

        spec = self.spec
        store = ctx.engine.store
        base = copy_dir_for(store.root, spec.name, spec.shared_key_hint, conn.shared_key)
        status_id = f"transferring {spec.name}:"
        async with lock_copy(base, DESCRIPTION_PREFIX + spec.name):
            started = time.time()
            ctx.progress.status(status_id, started=started)
            try:
                synced = await sync_dir(
                    conn.caller,
                    spec.dir_name,
                    str(base / "tree"),
                    spec.includes or (),
                    spec.excludes or (),
                    spec.follow_paths or (),
                    index_path=str(base / INDEX),
                    differ=spec.differ,
                )
            except OSError as exc:
                raise SourceError(f"local source {spec.name!r}: sync failed: {exc}") from exc
            ctx.progress.status(
                status_id,
                current=synced.bytes_received,
                started=started,
                completed=time.time(),
            )
            return await self._commit(store, base, synced.digests, synced.changed)

    async def _commit(
        self,
        store: CacheStore,
        base: Path,
        digests: Mapping[str, str],
        changed: Collection[str],
    ) -> Result:
        """A committed snapshot holding ``base/tree``: a known one, or a new one."""
        from bkcore.cache.results import new_result

        tree = base / "tree"
        identity = await asyncio.to_thread(tree_identity, str(tree), digests)
        entry = store.root / LOCAL_DIR / CONTENT_DIR / identity
        known = await asyncio.to_thread(_read_content_map, entry)
        result: Result | None = None
        if known is not None:
            with contextlib.suppress(CacheError):  # pruned since: make a new one
                result = await new_result(store, known)
        if result is None:
            result = await self._incremental(store, base, identity, digests, changed)
        if result is None:
            result = await self._full_copy(store, tree)
        try:
            await asyncio.to_thread(_write_content_map, entry, result.id)
            await asyncio.to_thread(_write_content_map, base / LAST, result.id)
        except BaseException:
            await result.release()
            raise
        return result

    async def _full_copy(self, store: CacheStore, tree: Path) -> Result:
        from bkcore.cache.fsutil import copy_tree
        from bkcore.cache.results import commit_result, prepare

        mutable = await prepare(store, None, DESCRIPTION_PREFIX + self.spec.name)
        try:
            path = await asyncio.to_thread(mutable.mount)
            await asyncio.to_thread(copy_tree, tree, path)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(mutable.discard))
            raise
        return await commit_result(store, mutable)

    async def _incremental(
        self,
        store: CacheStore,
        base: Path,
        identity: str,
        digests: Mapping[str, str],
        changed: Collection[str],
    ) -> Result | None:
        """With overlay snapshots: the copy's last snapshot plus only what this sync changed,
        checked against ``identity``; None when that is not possible (then: a full copy)."""
        from bkcore.cache.results import commit_result, new_result, prepare

        if store.driver != OVERLAY or not changed:
            return None
        last = await asyncio.to_thread(_read_content_map, base / LAST)
        if last is None:
            return None
        try:
            parent = await new_result(store, last)
        except CacheError:
            return None
        try:
            mutable = await prepare(store, parent, DESCRIPTION_PREFIX + self.spec.name)
            try:
                path = await asyncio.to_thread(mutable.mount)
                same = await asyncio.to_thread(
                    _apply_changes, base / "tree", path, changed, identity, digests
                )
                if not same:
                    await asyncio.shield(asyncio.to_thread(mutable.discard))
                    return None
            except BaseException:
                await asyncio.shield(asyncio.to_thread(mutable.discard))
                raise
            return await commit_result(store, mutable)
        finally:
            await parent.release()


def _parents(rel: str) -> Iterator[str]:
    while rel:
        rel = rel.rpartition("/")[0]
        yield rel


def _apply_changes(
    tree: Path, dest: Path, changed: Collection[str], identity: str, digests: Mapping[str, str]
) -> bool:
    """Bring ``dest`` (a copy of an earlier state of ``tree``) up to date by ``changed``
    paths; True when it then holds exactly ``identity``. Hard-linked files are not handled
    (False: the caller copies everything)."""
    from bkcore.cache.fsutil import copy_entry, copy_metadata, remove

    dirs: set[str] = {""}
    for rel in sorted(changed, key=lambda p: p.split("/")):  # parents before children
        src, dst = tree / rel, dest / rel
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            remove(dst)
            dirs.update(_parents(rel))
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            return False
        try:
            old: os.stat_result | None = os.lstat(dst)
        except FileNotFoundError:
            old = None
        if stat.S_ISDIR(st.st_mode):
            if old is not None and not stat.S_ISDIR(old.st_mode):
                remove(dst)
                old = None
            if old is None:
                os.mkdir(dst, 0o700)
            dirs.add(rel)
        else:
            if old is not None:
                remove(dst)
            copy_entry(src, dst, st)
        dirs.update(_parents(rel))
    for rel in sorted(dirs, key=lambda p: p.count("/") + bool(p), reverse=True):
        src = tree / rel if rel else tree
        copy_metadata(src, dest / rel if rel else dest, os.lstat(src))
    return tree_identity(str(dest), digests) == identity


class LocalSource:
    """:class:`bkcore.source.Source` of the ``local`` scheme."""

    def identify(
        self, identifier: str, attrs: Mapping[str, str], platform: str | None
    ) -> LocalInstance:
        return LocalInstance(parse(identifier, attrs))
