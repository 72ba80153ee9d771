"""``bkcore --addr ADDR build``: one build through a daemon's Control service.

The client opens ``Control.Session`` with the session a build needs (the same attachables an
embedded build serves: ``--local`` directories by file sync, ``--output type=local|tar`` by
file send, ``--secret``, ``--ssh``, registry auth), follows ``Control.Status{Ref}`` and draws it
with the same progress renderers as an embedded build, and sends one ``Control.Solve``.

Form of the Solve: the *direct* form, ``Solve{Ref, Definition | Frontend + FrontendAttrs,
Exporter + ExporterAttrs, Session, Entitlements, FrontendInputs}``, not buildctl's forwarder
form (``Solve`` without either, then LLBBridge ``Ping``/``Solve``/``Return`` from the client,
served by :mod:`bkcore.api.gateway` for clients that use it). The direct form is one round trip;
the frontend runs next to the cache, so its ``ReadFile``/``ResolveImageConfig`` calls are not
sent over the socket; and the error of a failed build is the daemon's error as is (class,
vertex, exit code, Dockerfile line). ``Control.Solve`` carries one exporter in BuildKit v0.11,
so a remote build takes at most one ``--output``.

A failed build raises the :class:`~bkcore.errors.BkError` rebuilt by :mod:`bkcore.api.errors`
(``bkcore build`` prints it as embedded builds do: one ``error:`` line plus the Dockerfile
snippet).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import string
import sys
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TextIO

from bkcore.errors import BkError, ExportError

if TYPE_CHECKING:
    from bkcore.api.pb import control as cpb
    from bkcore.controller import BuildOptions, BuildResponse
    from bkcore.pluginmanager import BkPluginManager
    from bkcore.progress import Event, ProgressStream
    from bkcore.session.session import Session

__all__ = ["build_id", "remote_build", "solve_request", "status_to_events"]

_ID_ALPHABET = string.ascii_lowercase + string.digits
#: The client's variable an embedded build's image exporters read (see :func:`solve_request`).
EPOCH_ENV = "SOURCE_DATE_EPOCH"
EPOCH_ATTR = "source-date-epoch"
EPOCH_ENV_EXPORTERS = frozenset({"image", "oci", "docker"})
#: How long a finished Solve waits for the rest of its Status stream (the daemon ends it when
#: the job ends, right after the Solve's reply).
FOLLOW_GRACE = 5.0


def build_id() -> str:
    """A random build ref (25 lowercase letters and digits, like buildctl's)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(25))


def _seconds(value: Any) -> float | None:
    if value is None or (not value.seconds and not value.nanos):
        return None
    return float(value.seconds) + float(value.nanos) / 1e9


def status_to_events(response: cpb.StatusResponse) -> Iterator[Event]:
    """The progress events of one ``StatusResponse`` (the inverse of the daemon's
    ``event_to_status``): vertexes, statuses, logs, then warnings."""
    from bkcore.progress import LogEvent, StatusEvent, VertexEvent, WarningEvent

    for v in response.vertexes:
        yield VertexEvent(
            digest=v.digest,
            name=v.name,
            inputs=tuple(v.inputs),
            started=_seconds(v.started),
            completed=_seconds(v.completed),
            cached=v.cached,
            error=v.error,
        )
    for s in response.statuses:
        yield StatusEvent(
            id=s.id,
            vertex=s.vertex,
            name=s.name,
            current=s.current,
            total=s.total,
            timestamp=_seconds(s.timestamp) or 0.0,
            started=_seconds(s.started),
            completed=_seconds(s.completed),
        )
    for log in response.logs:
        yield LogEvent(
            vertex=log.vertex,
            stream=log.stream,
            data=bytes(log.msg),
            timestamp=_seconds(log.timestamp) or 0.0,
        )
    for w in response.warnings:
        yield WarningEvent(
            vertex=w.vertex,
            level=w.level,
            short=bytes(w.short).decode("utf-8", "replace"),
            detail=tuple(bytes(d).decode("utf-8", "replace") for d in w.detail),
            url=w.url,
        )


def client_session(options: BuildOptions, plugins: BkPluginManager) -> Session:
    """The session of ``options`` with the attachables an embedded build would serve."""
    from bkcore.controller import SESSION_NAME, Controller, client_shared_key
    from bkcore.session.session import Session

    session = Session(name=SESSION_NAME, shared_key=client_shared_key(options.locals))
    # The controller's choice of attachables needs only the plugins: share it.
    shim: Any = SimpleNamespace(plugins=plugins)
    for attachable in Controller._attachables(shim, options):
        session.allow(attachable)
    return session


def solve_request(
    options: BuildOptions,
    ref: str,
    session_id: str,
    environ: Mapping[str, str] | None = None,
) -> cpb.SolveRequest:
    """``Control.Solve`` in the direct form for ``options`` (definition already checked).

    ``SOURCE_DATE_EPOCH`` in the client's environment (``environ``, default ``os.environ``)
    is what an embedded build's image exporters fall back on (the engine is the client
    there); through a daemon it travels as the ``source-date-epoch`` attr of an image-type
    exporter (``image``, ``oci``, ``docker``) unless the attr or the
    ``build-arg:SOURCE_DATE_EPOCH`` frontend option is given. Other exporters ignore the
    variable in embedded builds, so they do not get it here either."""
    from bkcore.api.pb import control as cpb
    from bkcore.llb import pb
    from bkcore.llb.digest import present

    if len(options.outputs) > 1:
        raise ExportError(
            "a build through a daemon takes one --output (Control.Solve has one exporter)"
        )
    request = cpb.SolveRequest(
        ref=ref,
        session=session_id,
        entitlements=sorted(options.entitlements),
        cache=present(cpb.CacheOptions()),
    )
    if options.frontend:
        request.frontend = options.frontend
        attrs = dict(options.frontend_opts)
        if options.no_cache:
            attrs.setdefault("no-cache", "")
        request.frontend_attrs = attrs
        request.frontend_inputs = dict(options.frontend_inputs)
    else:
        request.definition = pb.Definition().parse(options.definition)
        if options.no_cache:
            request.frontend_attrs = {"no-cache": ""}
    if options.outputs:
        output = options.outputs[0]
        request.exporter = output.type
        attrs = dict(output.attrs)
        epoch = (os.environ if environ is None else environ).get(EPOCH_ENV, "")
        if (
            epoch
            and output.type in EPOCH_ENV_EXPORTERS
            and EPOCH_ATTR not in attrs
            and f"build-arg:{EPOCH_ENV}" not in options.frontend_opts
        ):
            attrs[EPOCH_ATTR] = epoch
        request.exporter_attrs = attrs
    return request


async def _follow(client: Any, ref: str, stream: ProgressStream) -> None:
    async for response in client.status(ref):
        stream.write_many(list(status_to_events(response)))


async def remote_build(
    address: str,
    options: BuildOptions,
    plugins: BkPluginManager,
    *,
    progress: str = "auto",
    progress_out: TextIO | None = None,
) -> BuildResponse:
    """Build ``options`` on the daemon at ``address``, progress drawn on ``progress_out``."""
    from bkcore.api.client import Client
    from bkcore.controller import BuildResponse, _check_outputs, _render, decode, make_renderer
    from bkcore.progress import ProgressStream
    from bkcore.session.grpc_transport import attach_session

    out = progress_out if progress_out is not None else sys.stderr
    if not options.frontend:
        decode(options)  # a bad definition fails before connecting
    _check_outputs(options.outputs, plugins)
    session = client_session(options, plugins)
    ref = build_id()
    request = solve_request(options, ref, session.id)
    renderer = make_renderer(plugins, progress, out)
    stream = ProgressStream()
    reader = stream.subscribe()
    reply: Any = None
    error: BaseException | None = None
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_render(renderer, reader))
        try:
            async with Client(address) as client:
                follow = asyncio.ensure_future(_follow(client, ref, stream))
                try:
                    async with attach_session(client.channel(), session):
                        try:
                            reply = await client.solve(request)
                        finally:
                            # the job's last events (a failed step's ERROR) before the error
                            await asyncio.wait({follow}, timeout=FOLLOW_GRACE)
                    await follow
                finally:
                    if not follow.done():
                        follow.cancel()
                    await asyncio.gather(follow, return_exceptions=True)
        except Exception as exc:  # raised after the renderer has drawn what came
            error = exc
        finally:
            stream.close()
    if error is not None:
        if not isinstance(error, BkError):
            raise BkError(f"build through {address}: {error}") from error
        raise error
    return BuildResponse(dict(reply.exporter_response))
