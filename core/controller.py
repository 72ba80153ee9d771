"""The embedded controller: everything ``bkcore build`` does, in this process, without a daemon.

One :class:`Controller` owns a state root: the cache store, the worker, the session manager,
the results of the store and one :class:`~bkcore.solver.scheduler.Solver`. Builds run through
:meth:`Controller.build`; several may run at once and share vertices (dedup). For each build
the controller opens an in-process client session serving the build's local directories,
secrets, SSH agents and the client side of its output (FileSend), turns the LLB definition into
a vertex graph (``bkcore.ops.load.build_graph``), solves it as a job carrying the session id,
and hands the result to the exporter of each ``--output``. With ``BuildOptions.frontend``
(``dockerfile.v0``) the job gets an in-process :class:`~bkcore.bridge.LLBBridge` instead: the
frontend solves through it, and its result (one ref or refs by platform, plus metadata such as
the image config) is exported; the bridge releases every ref when the build ends.

A daemon uses the same controller: ``BuildOptions.session`` names the client's connected
session (its ``Control.Session``) instead of an in-process one, ``Controller(parallelism=N)``
bounds running ops (``max-parallelism``), :meth:`Controller.build_job` gives a build's set-up to
callers that drive the solve themselves (a forwarded build over LLBBridge), and
:meth:`Controller.add_build_listener` is told when each build ends (GC scheduling).

:func:`run_build` is the one-shot form the CLI uses: a controller, a progress renderer on
``stderr`` and one build. Every failure is a :class:`~bkcore.errors.BkError`; cancellation
(Ctrl-C) stops the solve, releases everything and re-raises ``CancelledError``.

Registry targets the controller builds, by family and key:

* ``workers``: ``Target.for_root(state_root, snapshotter=...)`` when it has ``for_root``,
  else ``Target(state_root / key)`` (a class) or the object itself;
* ``attachables``: ``filesync(dirs: dict[name, dir])``, ``secrets(specs: list[str])``,
  ``ssh(specs: list[str])``, ``ocistore(layouts: dict[name, dir])``,
  ``filesend(dest_dir=... | file=... | stdout=True)``;
* ``exporters``: ``Target()`` (a class) or the object; ``await exporter.export(ctx, result,
  attrs)``;
* ``progress_renderers``: ``Target(out)``; ``await renderer.run(reader)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from bkcore.errors import BkError, CacheError, ExportError, PluginError, SessionError

if TYPE_CHECKING:
    from bkcore.bridge import LLBBridge
    from bkcore.cache.results import SnapshotResults
    from bkcore.cache.store import CacheStore
    from bkcore.engine import Engine
    from bkcore.llb import pb
    from bkcore.pluginmanager import BkPluginManager
    from bkcore.progress import ProgressReader, ProgressStream
    from bkcore.session.session import Session
    from bkcore.session.transport import Attachable, Caller
    from bkcore.solver.scheduler import Job, Solver
    from bkcore.solver.types import Result
    from bkcore.worker import Worker

__all__ = [
    "BuildJob",
    "BuildOptions",
    "BuildResponse",
    "Controller",
    "OutputSpec",
    "ProgressRenderer",
    "client_shared_key",
    "decode",
    "make_renderer",
    "run_build",
]

DEFAULT_WORKER = "runc"
SESSION_NAME = "bkcore"
#: Output types whose files are written on the client side through the session (FileSend).
CLIENT_SIDE_OUTPUTS = frozenset({"local", "tar", "oci", "docker"})
#: Held shared by every controller of a state root; exclusive only to clean up after crashes.
RUN_LOCK = "controller.lock"
#: How long a build waits for the connected session named by ``BuildOptions.session``.
SESSION_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """One ``--output``: the exporter name and its attributes (``dest`` ...)."""

    type: str
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """What one build needs; the CLI fills it from its flags.

    ``secrets`` and ``ssh`` hold the flag values as given (``id=ID,src=FILE``,
    ``default|ID=SOCKET``): the attachables that serve them parse them. ``entitlements``
    are the ones granted (``network.host``, ``security.insecure``): jobs carry them as
    ``values["entitlements"]``, which the exec op checks.
    """

    definition: bytes = b""
    source: str = "<stdin>"
    locals: Mapping[str, str] = field(default_factory=dict)
    secrets: Sequence[str] = ()
    ssh: Sequence[str] = ()
    outputs: Sequence[OutputSpec] = ()
    no_cache: bool = False
    entitlements: frozenset[str] = frozenset()
    #: A frontend (``dockerfile.v0``) builds instead of ``definition`` when set.
    frontend: str = ""
    frontend_opts: Mapping[str, str] = field(default_factory=dict)
    frontend_inputs: Mapping[str, pb.Definition] = field(default_factory=dict)
    #: ``--oci-layout NAME=DIR``: OCI layouts served as content stores ``oci:NAME``.
    oci_layouts: Mapping[str, str] = field(default_factory=dict)
    #: The id of a session already connected to the controller's session manager (a daemon
    #: client's ``Control.Session``). The build then reaches the client's directories,
    #: secrets, SSH agents, credentials and client-side outputs through that session (waited
    #: for :data:`SESSION_WAIT` seconds) and makes no in-process attachables; ``locals``,
    #: ``secrets``, ``ssh`` and ``oci_layouts`` are not used. Empty: an in-process session.
    session: str = ""


@dataclass(frozen=True, slots=True)
class BuildResponse:
    """What a build returns: the exporters' metadata, merged in output order."""

    exporter_response: Mapping[str, str]


class ProgressRenderer(Protocol):
    """What a ``progress_renderers`` registry target builds (``Renderer(out)``)."""

    async def run(self, reader: ProgressReader) -> None: ...


def make_renderer(plugins: BkPluginManager, mode: str, out: TextIO) -> ProgressRenderer:
    """The renderer for ``--progress mode`` (``auto``: ``tty`` on a terminal unless
    ``TERM=dumb``, else ``plain``)."""
    if mode == "auto":
        live = _isatty(out) and os.environ.get("TERM", "") != "dumb"
        mode = "tty" if live else "plain"
    registry = plugins.registry("progress_renderers")
    if mode not in registry:
        known = ", ".join(["auto", *sorted(registry.keys())])
        raise PluginError(f"unknown progress mode {mode!r} (known: {known})")
    factory: Any = registry.load(mode)
    renderer: ProgressRenderer = factory(out)
    return renderer


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def client_shared_key(locals: Mapping[str, str]) -> str:
    """The session's shared key: a hash of the absolute client directories by name.

    Local sources keep one synced copy per (name, shared key hint, shared key), so two
    projects (different directories) never sync into, and so never clobber, the same copy.
    """
    import hashlib
    import json

    doc = json.dumps({n: os.path.abspath(d) for n, d in sorted(locals.items())}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


class _ExportContext:
    """:class:`bkcore.exporter.ExportContext` of one build."""

    def __init__(
        self,
        store: CacheStore,
        caller: Caller,
        progress: ProgressStream,
        metadata: Mapping[str, bytes] | None = None,
        refs: Mapping[str, Result | None] | None = None,
    ) -> None:
        self._store = store
        self._caller = caller
        self._progress = progress
        self._metadata: Mapping[str, bytes] = dict(metadata or {})
        self._refs: Mapping[str, Result | None] = dict(refs or {})

    def view(self, result: Result | None) -> contextlib.AbstractContextManager[Path]:
        if result is None:
            return _empty_dir()
        return self._store.snapshots.view(result.id)

    @property
    def caller(self) -> Caller:
        return self._caller

    @property
    def progress(self) -> ProgressStream:
        return self._progress

    @property
    def metadata(self) -> Mapping[str, bytes]:
        return self._metadata

    @property
    def refs(self) -> Mapping[str, Result | None]:
        return self._refs


@contextlib.contextmanager
def _empty_dir() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bkcore-empty-") as tmp:
        os.chmod(tmp, 0o555)
        yield Path(tmp)


class Controller:
    """The embedded build engine of one state root; ``async with Controller(plugins)``."""

    def __init__(
        self,
        plugins: BkPluginManager,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        worker: str = DEFAULT_WORKER,
        parallelism: int | None = None,
    ) -> None:
        if parallelism is not None and parallelism < 1:
            raise ValueError(f"parallelism must be at least 1 (got {parallelism})")
        self.plugins = plugins
        self._state_dir = Path(state_dir) if state_dir is not None else None
        self._worker_name = worker
        self._parallelism = parallelism
        self._build_listeners: list[Callable[[], None]] = []
        self._running = 0
        self._store: CacheStore | None = None
        self._results: SnapshotResults | None = None
        self._solver: Solver | None = None
        self._engine: Engine | None = None
        self._lock_fd: int | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the Controller is not running: use `async with Controller(...)`")
        return self._engine

    @property
    def solver(self) -> Solver:
        if self._solver is None:
            raise RuntimeError("the Controller is not running: use `async with Controller(...)`")
        return self._solver

    @property
    def parallelism(self) -> int | None:
        """How many ops run at once on each worker (``None``: no bound); a daemon's
        ``max-parallelism``."""
        return self._parallelism

    @property
    def running_builds(self) -> int:
        """How many builds (:meth:`build_job` blocks) are running now."""
        return self._running

    def add_build_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` (synchronously, cheaply) each time a build ends, however it
        ends, after it released everything it held (a daemon schedules GC from here).
        Returns a function that removes the listener."""
        self._build_listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._build_listeners.remove(callback)

        return remove

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Controller:
        async with contextlib.AsyncExitStack() as stack:
            await self._start(stack)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._engine = self._solver = None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        from bkcore import config
        from bkcore.cache.results import results_for
        from bkcore.cache.store import CacheStore
        from bkcore.engine import Engine
        from bkcore.session.auth import close_registry_clients
        from bkcore.session.manager import SessionManager
        from bkcore.solver.scheduler import Solver

        root = self._state_dir or config.state_dir()
        store = await asyncio.to_thread(CacheStore.open, root)
        stack.callback(store.close)
        self._store = store
        alone = await asyncio.to_thread(self._lock_root, root)
        stack.callback(self._unlock_root)
        worker = self._load_worker(root, store.driver)
        if alone:
            # No other controller uses this root: containers left there are a crash's.
            recover = getattr(worker, "recover", None)
            if recover is not None:
                try:
                    await recover()
                except OSError:
                    pass  # no runtime binary: running a step reports that clearly
        sessions = SessionManager()
        stack.push_async_callback(sessions.close)
        results = results_for(store)
        stack.push_async_callback(results.close)
        self._results = results
        platforms = worker.info().platforms
        self._engine = Engine(
            store=store,
            worker=worker,
            sessions=sessions,
            plugins=self.plugins,
            platform=platforms[0] if platforms else "linux/amd64",
        )
        stack.push_async_callback(close_registry_clients, self._engine)
        self._solver = await stack.enter_async_context(
            Solver(store.keys, results, parallelism=self._parallelism)
        )

    def _lock_root(self, root: Path) -> bool:
        """Take the root's run lock shared; True when no other controller held it."""
        import fcntl

        run_dir = root / "run"
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(run_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CacheError(f"cannot create the run lock in {run_dir}: {exc}") from exc
        self._lock_fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(fd, fcntl.LOCK_SH)
            return False
        fcntl.flock(fd, fcntl.LOCK_SH)  # others may join once our recovery is done
        return True

    def _unlock_root(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def _load_worker(self, root: Path, snapshotter: str) -> Worker:
        registry = self.plugins.registry("workers")
        if self._worker_name not in registry:
            known = ", ".join(sorted(registry.keys())) or "none"
            raise PluginError(f"no worker named {self._worker_name!r} (known: {known})")
        target: Any = registry.load(self._worker_name)
        for_root = getattr(target, "for_root", None)
        if for_root is not None:
            worker: Worker = for_root(root, snapshotter=snapshotter)
        else:
            worker = target(root / self._worker_name) if isinstance(target, type) else target
        return worker

    # -- builds ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def build_job(
        self, options: BuildOptions, *, progress: ProgressStream | None = None
    ) -> AsyncIterator[BuildJob]:
        """The set-up every build shares, for callers that drive the solve themselves (a
        daemon's forwarded build, whose client solves over LLBBridge).

        Checks ``options.outputs``, opens the build's session (``options.session``: the
        connected client session of that id; else an in-process session serving
        ``options``' directories, secrets and outputs), and a solver job carrying the
        session id, ``no_cache`` and the entitlements. On exit, however the block ends: the
        bridge (if :meth:`BuildJob.bridge` made one) releases its refs, the job is
        discarded, an in-process session is unregistered and the build listeners run.
        """
        from bkcore.ops.execmounts import CACHE_DROPS

        engine = self.engine
        solver = self.solver
        _check_outputs(options.outputs, self.plugins)
        from bkcore.progress import ProgressStream

        stream = progress if progress is not None else ProgressStream()
        own: str | None = None
        if options.session:
            conn = await engine.sessions.get(options.session, SESSION_WAIT)
        else:
            session = self._session(options)
            conn = engine.sessions.attach(session)
            own = conn.id
        self._running += 1
        try:
            values = {
                "session": conn.id,
                "no_cache": options.no_cache,
                "entitlements": frozenset(options.entitlements),
                CACHE_DROPS: {},
            }
            async with solver.job(progress=stream, values=values) as job:
                build = BuildJob(self, options, job, conn.id, conn.caller, stream)
                try:
                    yield build
                finally:
                    await build._release()
        finally:
            self._running -= 1
            if own is not None:
                engine.sessions.unregister(own)
            for callback in list(self._build_listeners):
                callback()

    async def build(
        self,
        options: BuildOptions,
        *,
        progress: ProgressStream | None = None,
        definition: pb.Definition | None = None,
    ) -> BuildResponse:
        """Solve ``options.definition`` (or run ``options.frontend``) and export the result;
        ``progress`` receives its events.

        ``definition`` is ``options.definition`` already decoded (see :func:`decode`).
        """
        from bkcore.ops.load import build_graph, check_entitlements

        engine = self.engine
        _check_outputs(options.outputs, self.plugins)
        if options.frontend:
            return await self._build_frontend(options, progress)
        if definition is None:
            definition = decode(options)
        head = build_graph(definition, engine, ignore_cache_all=options.no_cache)
        check_entitlements(head, options.entitlements)
        async with self.build_job(options, progress=progress) as build:
            result = await self.solver.solve(head.vertex, build.job, head.output)
            try:
                response = await build.export(result)
            finally:
                await result.release()
        return BuildResponse(response)

    async def _build_frontend(
        self, options: BuildOptions, progress: ProgressStream | None
    ) -> BuildResponse:
        """Run ``options.frontend`` through a bridge of this build and export its result."""
        from bkcore.bridge import load_frontend

        load_frontend(self.engine, options.frontend)  # an unknown frontend fails before any work
        async with self.build_job(options, progress=progress) as build:
            result = await build.bridge().solve(
                frontend=options.frontend,
                frontend_opts=options.frontend_opts,
                frontend_inputs=options.frontend_inputs,
            )
            response = await build.export(result.ref, metadata=result.metadata, refs=result.refs)
        return BuildResponse(response)

    def _session(self, options: BuildOptions) -> Session:
        from bkcore.session.session import Session

        session = Session(name=SESSION_NAME, shared_key=client_shared_key(options.locals))
        for attachable in self._attachables(options):
            session.allow(attachable)
        return session

    def _attachables(self, options: BuildOptions) -> list[Attachable]:
        registry = self.plugins.registry("attachables")

        def make(key: str, what: str, *args: Any, **kwargs: Any) -> Attachable:
            if key not in registry:
                raise SessionError(f"{what} needs the {key!r} session attachable (no plugin)")
            factory: Any = registry.load(key)
            attachable: Attachable = factory(*args, **kwargs)
            return attachable

        out: list[Attachable] = []
        if "auth" in registry:
            # Registry credentials are always served from the client side (docker config).
            out.append(make("auth", "registry auth"))
        if options.locals:
            out.append(make("filesync", "--local", dict(options.locals)))
        if options.secrets:
            out.append(make("secrets", "--secret", list(options.secrets)))
        if options.ssh:
            out.append(make("ssh", "--ssh", list(options.ssh)))
        if options.oci_layouts:
            out.append(make("ocistore", "--oci-layout", dict(options.oci_layouts)))
        for output in options.outputs:
            if output.type in CLIENT_SIDE_OUTPUTS:
                out.append(make("filesend", f"--output type={output.type}", **_send_target(output)))
        return out

    async def _export(
        self,
        outputs: Sequence[OutputSpec],
        result: Result | None,
        session: Session | Caller,
        progress: ProgressStream,
        *,
        metadata: Mapping[str, bytes] | None = None,
        refs: Mapping[str, Result | None] | None = None,
    ) -> dict[str, str]:
        """Export ``result`` with each of ``outputs``; ``session``: the build's session or
        its caller (what client-side outputs are sent through)."""
        assert self._store is not None
        registry = self.plugins.registry("exporters")
        caller = session.caller() if hasattr(session, "caller") else session
        ctx = _ExportContext(self._store, caller, progress, metadata, refs)
        response: dict[str, str] = {}
        for output in outputs:
            if output.type not in registry:
                known = ", ".join(sorted(registry.keys())) or "none"
                raise ExportError(f"unknown output type {output.type!r} (known: {known})")
            loaded: Any = registry.load(output.type)
            exporter = loaded() if isinstance(loaded, type) else loaded
            try:
                got = await exporter.export(ctx, result, dict(output.attrs))
            except BkError:
                raise
            except OSError as exc:
                raise ExportError(f"exporting to {output.type}: {exc}") from exc
            response.update(got or {})
        return response


class BuildJob:
    """One running build of :meth:`Controller.build_job`: its solver job, session and
    progress; :meth:`bridge` and :meth:`export` do the rest of what a build does."""

    def __init__(
        self,
        controller: Controller,
        options: BuildOptions,
        job: Job,
        session_id: str,
        caller: Caller,
        progress: ProgressStream,
    ) -> None:
        self.options = options
        self.job = job
        self.session_id = session_id
        self.caller = caller
        self.progress = progress
        self._controller = controller
        self._bridge: LLBBridge | None = None

    def bridge(self) -> LLBBridge:
        """The build's in-process LLBBridge (made on first use; its refs are released when
        the build ends)."""
        if self._bridge is None:
            from bkcore.bridge import LLBBridge

            c = self._controller
            self._bridge = LLBBridge(
                c.engine,
                c.solver,
                self.job,
                session_id=self.session_id,
                progress=self.progress,
                no_cache=self.options.no_cache,
                entitlements=frozenset(self.options.entitlements),
            )
        return self._bridge

    async def export(
        self,
        result: Result | None,
        *,
        metadata: Mapping[str, bytes] | None = None,
        refs: Mapping[str, Result | None] | None = None,
    ) -> dict[str, str]:
        """Export ``result`` (and a frontend's ``metadata``/``refs``) with every output of
        the build; returns the exporters' merged response."""
        return await self._controller._export(
            self.options.outputs,
            result,
            self.caller,
            self.progress,
            metadata=metadata,
            refs=refs,
        )

    async def _release(self) -> None:
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            await bridge.release()


def decode(options: BuildOptions) -> pb.Definition:
    """The LLB definition of ``options`` (:class:`~bkcore.errors.DefinitionError` if bad)."""
    from bkcore.llb.dump import load_definition

    return load_definition(options.definition, options.source)


def _check_outputs(outputs: Sequence[OutputSpec], plugins: BkPluginManager) -> None:
    """Refuse outputs no exporter handles before anything is solved."""
    client_side = [o for o in outputs if o.type in CLIENT_SIDE_OUTPUTS]
    if len(client_side) > 1:
        raise ExportError("only one local/tar output per build is supported")
    registry = plugins.registry("exporters")
    for output in outputs:
        if output.type not in registry:
            known = ", ".join(sorted(registry.keys())) or "none"
            raise ExportError(f"unknown output type {output.type!r} (known: {known})")
        if output.type in CLIENT_SIDE_OUTPUTS:
            _send_target(output)  # checks dest


def _send_target(output: OutputSpec) -> dict[str, Any]:
    """How the client receives a client-side output (FileSend target arguments)."""
    dest = output.attrs.get("dest", "")
    if output.type == "local":
        if not dest:
            raise ExportError("output type=local needs dest=DIR")
        return {"dest_dir": dest}
    if not dest or dest == "-":
        return {"stdout": True}
    return {"file": dest}


async def _render(renderer: ProgressRenderer | None, reader: ProgressReader) -> None:
    if renderer is None:
        async for _ in reader:
            pass
        return
    await renderer.run(reader)


BUILD_GC_THRESHOLD = (20_000, 20, 20)


def tune_gc() -> None:
    """Collect garbage less often for the length of a build process.

    Solving allocates many short-lived objects that are freed by reference counting; with
    CPython's default threshold (700) the cyclic collector runs thousands of times per large
    graph and costs more than the solver itself (bench/solver_overhead.py: 144 -> 51 us per
    cached vertex on the mixed graph). Cycles are still collected, only in bigger batches.
    """
    import gc

    gc.set_threshold(*BUILD_GC_THRESHOLD)


async def run_build(
    options: BuildOptions,
    plugins: BkPluginManager,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    progress: str = "auto",
    progress_out: TextIO | None = None,
) -> BuildResponse:
    """One build on a fresh controller, its progress drawn on ``progress_out`` (stderr)."""
    tune_gc()
    out = progress_out if progress_out is not None else sys.stderr
    # fail before any state is touched
    definition = None if options.frontend else decode(options)
    _check_outputs(options.outputs, plugins)
    renderer = make_renderer(plugins, progress, out)
    from bkcore.progress import ProgressStream

    stream = ProgressStream()
    reader = stream.subscribe()
    response: BuildResponse | None = None
    error: Exception | None = None
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_render(renderer, reader))
        try:
            async with Controller(plugins, state_dir) as controller:
                response = await controller.build(options, progress=stream, definition=definition)
        except Exception as exc:  # raised after the renderer is done (not as a group)
            error = exc
        finally:
            stream.close()
    if error is not None:
        raise error
    assert response is not None
    return response


@contextlib.asynccontextmanager
async def controller(
    plugins: BkPluginManager, state_dir: str | os.PathLike[str] | None = None
) -> AsyncIterator[Controller]:
    """``async with controller(plugins, root) as c:`` -- the same as ``Controller(...)``."""
    async with Controller(plugins, state_dir) as c:
        yield c
