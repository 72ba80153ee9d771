"""The in-process :class:`~bkcore.frontend.Bridge`: how a frontend running in this process
solves LLB, runs nested frontends, reads files of its results and emits warnings.

One :class:`LLBBridge` serves one build (one solver job, one client session). Every result it
hands out (a ``BuildResult.ref`` or ``refs`` value) stays owned by the bridge and is released
by :meth:`LLBBridge.release` when the build ends, so frontends never release refs. Reads of a
ref (``read_file``/``read_dir``/``stat_file``) mount the ref's snapshot read-only and resolve
the requested path inside it like a chroot (``..`` and symlinks never leave the ref).

``resolve_image_config`` asks the source registered for the ``docker-image`` scheme: that
source object (or class, instantiated without arguments) must have an async
``resolve_image_config(ref, platform=..., resolve_mode=..., engine=..., session_id=...)``
returning (digest, config bytes): the engine and session id let it use the build's registry
credentials. The core never imports a source plugin itself.
"""

from __future__ import annotations

import hashlib
import os
import stat as st
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bkcore.errors import BkError, FrontendError, PluginError, SourceError
from bkcore.frontend import BuildResult, FileStat, FrontendRequest
from bkcore.progress import VertexEvent, WarningEvent

if TYPE_CHECKING:
    from bkcore.engine import Engine
    from bkcore.llb import pb
    from bkcore.progress import ProgressStream
    from bkcore.solver.scheduler import Job, Solver
    from bkcore.solver.types import Result

__all__ = ["MAX_FRONTEND_DEPTH", "LLBBridge", "go_mode"]

#: How deep frontends may nest (a frontend that keeps calling itself fails instead of hanging).
MAX_FRONTEND_DEPTH = 16
#: Vertex of the warnings given without a vertex digest.
WARNINGS_VERTEX = "sha256:" + hashlib.sha256(b"bkcore frontend warnings").hexdigest()
#: Image source scheme whose source object resolves image configs.
IMAGE_SCHEME = "docker-image"
#: OCI layout source scheme (its source's ``resolve_layout_config`` reads client stores).
OCI_LAYOUT_SCHEME = "oci-layout"

_T = TypeVar("_T")

# Go os.FileMode type bits (spec/session.md §5.1).
_GO_DIR = 1 << 31
_GO_SYMLINK = 1 << 27
_GO_DEVICE = 1 << 26
_GO_PIPE = 1 << 25
_GO_SOCKET = 1 << 24
_GO_SETUID = 1 << 23
_GO_SETGID = 1 << 22
_GO_CHARDEV = 1 << 21
_GO_STICKY = 1 << 20


def go_mode(mode: int) -> int:
    """POSIX ``st_mode`` as Go ``os.FileMode`` bits (what fsutil's ``Stat.mode`` holds)."""
    out = mode & 0o777
    fmt = st.S_IFMT(mode)
    if fmt == st.S_IFDIR:
        out |= _GO_DIR
    elif fmt == st.S_IFLNK:
        out |= _GO_SYMLINK
    elif fmt == st.S_IFBLK:
        out |= _GO_DEVICE
    elif fmt == st.S_IFCHR:
        out |= _GO_DEVICE | _GO_CHARDEV
    elif fmt == st.S_IFIFO:
        out |= _GO_PIPE
    elif fmt == st.S_IFSOCK:
        out |= _GO_SOCKET
    if mode & st.S_ISUID:
        out |= _GO_SETUID
    if mode & st.S_ISGID:
        out |= _GO_SETGID
    if mode & st.S_ISVTX:
        out |= _GO_STICKY
    return out


def _stat_entry(host: str, name: str) -> FileStat:
    info = os.lstat(host)
    link = os.readlink(host) if st.S_ISLNK(info.st_mode) else ""
    return FileStat(
        path=name,
        mode=go_mode(info.st_mode),
        uid=info.st_uid,
        gid=info.st_gid,
        size=info.st_size if st.S_ISREG(info.st_mode) else 0,
        mod_time=info.st_mtime_ns,
        linkname=link,
    )


class LLBBridge:
    """:class:`bkcore.frontend.Bridge` of one build in this process.

    ``values`` are the job values of the build (session id, no_cache, entitlements); they are
    used for every definition solved through this bridge.
    """

    def __init__(
        self,
        engine: Engine,
        solver: Solver,
        job: Job,
        *,
        session_id: str,
        progress: ProgressStream | None = None,
        no_cache: bool = False,
        entitlements: frozenset[str] = frozenset(),
        depth: int = 0,
    ) -> None:
        self._engine = engine
        self._solver = solver
        self._job = job
        self._session_id = session_id
        self._progress = progress
        self._no_cache = no_cache
        self._entitlements = entitlements
        self._depth = depth
        self._refs: list[Result] = []
        self._known: dict[str, Result] = {}
        self.warnings: list[WarningEvent] = []
        self._warn_vertex: str | None = None

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def worker_platforms(self) -> tuple[str, ...]:
        return (self._engine.platform,)

    # -- solving --------------------------------------------------------------------------

    async def solve(
        self,
        definition: pb.Definition | None = None,
        *,
        frontend: str = "",
        frontend_opts: Mapping[str, str] | None = None,
        frontend_inputs: Mapping[str, pb.Definition] | None = None,
    ) -> BuildResult:
        if frontend:
            if definition is not None and definition.def_:
                raise FrontendError("solve: give a definition or a frontend, not both")
            return await self._run_frontend(frontend, frontend_opts or {}, frontend_inputs or {})
        if definition is None or not definition.def_:
            return BuildResult(ref=None)  # the empty definition is scratch
        from bkcore.ops.load import build_graph, check_entitlements

        head = build_graph(definition, self._engine, ignore_cache_all=self._no_cache)
        check_entitlements(head, self._entitlements)
        result = await self._solver.solve(head.vertex, self._job, head.output)
        self._own(result)
        return BuildResult(ref=result)

    async def _run_frontend(
        self, name: str, opts: Mapping[str, str], inputs: Mapping[str, pb.Definition]
    ) -> BuildResult:
        if self._depth >= MAX_FRONTEND_DEPTH:
            raise FrontendError(f"frontend {name!r}: nested more than {MAX_FRONTEND_DEPTH} deep")
        frontend = load_frontend(self._engine, name)
        child = LLBBridge(
            self._engine,
            self._solver,
            self._job,
            session_id=self._session_id,
            progress=self._progress,
            no_cache=self._no_cache,
            entitlements=self._entitlements,
            depth=self._depth + 1,
        )
        child._refs = self._refs  # one owner: refs live until this bridge is released
        child._known = self._known
        child.warnings = self.warnings
        request = FrontendRequest(
            opts=dict(opts),
            inputs=dict(inputs),
            session_id=self._session_id,
            worker_platforms=self.worker_platforms,
        )
        result: BuildResult = await frontend.solve(child, request)
        for ref in [result.ref, *(result.refs or {}).values()]:
            if ref is not None and ref.id not in self._known:
                self._own(ref)  # a frontend may return a result it did not get from us
        return result

    def _own(self, result: Result) -> None:
        self._refs.append(result)
        self._known.setdefault(result.id, result)

    async def release(self) -> None:
        """Release every ref this bridge handed out (at the end of the build)."""
        refs, self._refs[:] = list(self._refs), []
        self._known.clear()
        errors: list[BaseException] = []
        for ref in refs:
            try:
                await ref.release()
            except Exception as exc:  # release all, then report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- images ---------------------------------------------------------------------------

    async def resolve_image_config(
        self, ref: str, *, platform: str | None = None, resolve_mode: str = "default"
    ) -> tuple[str, bytes]:
        resolver = self._source_method(IMAGE_SCHEME, "resolve_image_config", ref)
        return await self._resolve(
            ref,
            resolver(
                ref,
                platform=platform or self._engine.platform,
                resolve_mode=resolve_mode,
                engine=self._engine,
                session_id=self._session_id,
            ),
        )

    async def resolve_oci_layout_config(
        self,
        ref: str,
        *,
        store_id: str,
        session_id: str = "",
        platform: str | None = None,
    ) -> tuple[str, bytes]:
        """The manifest digest and config JSON of ``ref`` (``NAME@DIGEST``) in the client's
        OCI layout store ``store_id`` (``--oci-layout``), read through ``session_id`` (default:
        the build's). BuildKit's ``ResolveImageConfig`` with the OCI layout resolver; not part
        of :class:`~bkcore.frontend.Bridge` (callers check for it)."""
        resolver = self._source_method(OCI_LAYOUT_SCHEME, "resolve_layout_config", ref)
        return await self._resolve(
            ref,
            resolver(
                self._engine,
                ref,
                store_id=store_id,
                session_ids=[session_id or self._session_id],
                platform=platform or self._engine.platform,
            ),
        )

    def _source_method(self, scheme: str, method: str, ref: str) -> Any:
        registry = self._engine.plugins.registry("sources")
        if scheme not in registry:
            raise PluginError(f"resolving {ref}: no {scheme} source plugin is registered")
        target: Any = registry.load(scheme)
        source = target() if isinstance(target, type) else target
        resolver = getattr(source, method, None)
        if resolver is None:
            raise PluginError(f"resolving {ref}: the {scheme} source cannot resolve image configs")
        return resolver

    async def _resolve(self, ref: str, call: Awaitable[tuple[str, bytes]]) -> tuple[str, bytes]:
        """Await a resolver as the progress vertex ``[internal] load metadata for REF``."""
        vertex = self._status_vertex(f"[internal] load metadata for {ref}")
        # the completion repeats the start time: a client (buildctl) keys a vertex's
        # intervals by it, and a second start would leave the first one open (no DONE)
        started = vertex.started if vertex.started is not None else time.time()
        error = ""
        try:
            digest, config = await call
        except BkError as exc:
            error = str(exc)
            raise
        except Exception as exc:
            error = str(exc)
            raise SourceError(f"{ref}: failed to resolve image config: {exc}") from exc
        finally:
            self._write_vertex(vertex, started, error)
        return str(digest), bytes(config)

    def _status_vertex(self, name: str) -> VertexEvent:
        digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        event = VertexEvent(digest, name, started=time.time())
        if self._progress is not None:
            self._progress.write(event)
        return event

    def _write_vertex(self, vertex: VertexEvent, started: float, error: str) -> None:
        if self._progress is not None:
            self._progress.write(
                VertexEvent(
                    vertex.digest, vertex.name, (), started, completed=time.time(), error=error
                )
            )

    # -- reading refs ---------------------------------------------------------------------

    async def read_file(
        self, ref: Result | None, path: str, *, offset: int = 0, length: int | None = None
    ) -> bytes:
        def read(root: str) -> bytes:
            host = _inside(root, path, follow_final=True)
            fd = os.open(host, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                if not st.S_ISREG(os.fstat(fd).st_mode):
                    raise IsADirectoryError(f"{path}: not a regular file")
                size = os.fstat(fd).st_size
                end = size if length is None or length < 0 else min(size, offset + length)
                return os.pread(fd, max(0, end - offset), offset) if end > offset else b""
            finally:
                os.close(fd)

        return await self._in_ref(ref, read)

    async def read_dir(
        self, ref: Result | None, path: str, *, include_pattern: str = ""
    ) -> list[FileStat]:
        from bkcore.fs.gomatch import match

        def listing(root: str) -> list[FileStat]:
            host = _inside(root, path, follow_final=True)
            out: list[FileStat] = []
            for name in sorted(os.listdir(host)):
                if include_pattern and not match(include_pattern, name):
                    continue
                out.append(_stat_entry(os.path.join(host, name), name))
            return out

        return await self._in_ref(ref, listing)

    async def stat_file(self, ref: Result | None, path: str) -> FileStat:
        def stat(root: str) -> FileStat:
            host = _inside(root, path, follow_final=False)
            return _stat_entry(host, path)

        return await self._in_ref(ref, stat)

    async def _in_ref(self, ref: Result | None, fn: Callable[[str], _T]) -> _T:
        from bkcore.threads import entered_in_thread, shielded_thread

        if ref is None:
            raise FileNotFoundError("the empty (scratch) result has no files")
        store = self._engine.store
        async with entered_in_thread(store.snapshots.view(ref.id)) as root:
            return await shielded_thread(lambda: fn(str(root)))

    # -- warnings -------------------------------------------------------------------------

    def warn(self, vertex: str, short: str, *, detail: Sequence[str] = (), line: int = 0) -> None:
        text = f"line {line}: {short}" if line else short
        if not vertex:
            vertex = self._warnings_vertex()
        event = WarningEvent(vertex, 1, text, tuple(detail), "", time.time())
        self.warnings.append(event)
        if self._progress is not None:
            self._progress.write(event)

    def _warnings_vertex(self) -> str:
        """A vertex to hang warnings on that name no op (shown once per build)."""
        if self._warn_vertex is None:
            now = time.time()
            vertex = VertexEvent(WARNINGS_VERTEX, "[internal] frontend warnings", (), now, now)
            if self._progress is not None:
                self._progress.write(vertex)
            self._warn_vertex = vertex.digest
        return self._warn_vertex


def _inside(root: str, path: str, *, follow_final: bool) -> str:
    from bkcore.fs.errors import FileOpError
    from bkcore.fs.securepath import resolve

    try:
        return resolve(root, path, follow_final=follow_final)
    except FileOpError as exc:
        raise OSError(str(exc)) from exc


def load_frontend(engine: Engine, name: str) -> Any:
    """The frontend registered as ``name`` (a class is instantiated without arguments)."""
    registry = engine.plugins.registry("frontends")
    if name not in registry:
        known = ", ".join(sorted(registry.keys())) or "none"
        raise PluginError(f"unknown frontend {name!r} (known: {known})")
    target: Any = registry.load(name)
    return target() if isinstance(target, type) else target
