"""The ``oci-layout://NAME@DIGEST`` source (:class:`OCILayoutSource`).

Keying reads the root, the platform's manifest and the config from the client's store
(through the session's content-store attachable, :mod:`.content`); the keys are those of
docker-image (spec/solver.md §2.3): map 1 the digest of root descriptor + platform + limit,
map 2 the chain ID of the layers. Layers are pulled through the same chain code as
docker-image (:func:`bkcore.layers.pull.pull_layers`), so an image in a layout and the
same image from a registry share their snapshots.

The session is ``oci.session`` when set, else each session of the jobs sharing the vertex,
in turn (a session without the store moves on to the next).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bkcore.errors import SessionError, SourceError
from bkcore.layers.imagesource import LayerChainInstance
from bkcore.sources.oci_layout.content import SessionContentStore
from bkcore.sources.oci_layout.resolve import ResolvedLayout, resolve_layout
from bkcore.sources.oci_layout.spec import OCILayoutSpec, parse

if TYPE_CHECKING:
    from bkcore.engine import Engine
    from bkcore.llb.platforms import Platform
    from bkcore.session.manager import ConnectedSession
    from bkcore.solver.types import JobInfo, Result
    from bkcore.source import SourceContext

__all__ = ["OCILayoutInstance", "OCILayoutSource", "resolve_layout_config"]

T = TypeVar("T")


def session_group(spec_session: str, jobs: list[JobInfo]) -> list[str]:
    """Session ids to try: ``oci.session`` alone when set, else every job's session."""
    if spec_session:
        return [spec_session]
    out: list[str] = []
    for job in jobs:
        sid = job.values.get("session")
        if isinstance(sid, str) and sid and sid not in out:
            out.append(sid)
    return out


async def with_store(
    engine: Engine,
    group: list[str],
    store_id: str,
    label: str,
    fn: Callable[[SessionContentStore], Awaitable[T]],
) -> T:
    """Run ``fn`` on the store of the first session of ``group`` that serves it."""
    if not group:
        raise SourceError(f"{label}: no session to read the OCI layout from")

    async def attempt(conn: ConnectedSession) -> T:
        return await fn(SessionContentStore(conn.caller, store_id, label))

    try:
        return await engine.sessions.any(group, attempt)
    except SourceError:
        raise
    except SessionError as exc:
        text = str(exc)
        raise SourceError(text if text.startswith(label) else f"{label}: {text}") from exc


class OCILayoutInstance(LayerChainInstance[ResolvedLayout]):
    """One ``oci-layout://`` op (:class:`bkcore.source.SourceInstance`)."""

    def __init__(self, spec: OCILayoutSpec) -> None:
        super().__init__(spec.platform, spec.layer_limit)
        self.spec = spec

    def _group(self, ctx: SourceContext) -> list[str]:
        return session_group(self.spec.session, list(ctx.jobs()))

    async def fetch_resolved(self, ctx: SourceContext) -> ResolvedLayout:
        """The image resolved in the client's layout."""
        spec = self.spec
        status = f"resolve {spec.identifier}"
        started = time.time()
        ctx.progress.status(status, started=started)
        try:
            return await with_store(
                ctx.engine,
                self._group(ctx),
                spec.store_id,
                spec.identifier,
                lambda store: resolve_layout(store, spec.digest, spec.platform),
            )
        finally:
            ctx.progress.status(status, started=started, completed=time.time())

    async def snapshot(self, ctx: SourceContext) -> Result:
        from bkcore.layers.pull import pull_layers

        spec = self.spec
        image = await self.resolve(ctx)
        group = self._group(ctx)

        async def fetch(
            digest: str, dest: Path, size: int | None, progress: Callable[[int], None] | None
        ) -> int:
            return await with_store(
                ctx.engine,
                group,
                spec.store_id,
                spec.identifier,
                lambda store: store.fetch_blob(digest, dest, size, progress),
            )

        return await pull_layers(
            ctx.engine.store, fetch, spec.identifier, self.layers(image), ctx.progress
        )


async def resolve_layout_config(
    engine: Engine,
    session_ids: list[str],
    ref: str,
    store: str,
    platform: Platform,
) -> tuple[str, bytes]:
    """(root digest, config JSON) of ``ref`` (``NAME@DIGEST``) in the client store ``store``,
    for frontends resolving an ``oci-layout://`` named context (BuildKit's
    ``ResolveImageConfig`` with the OCI layout resolver)."""
    spec = parse("oci-layout://" + ref, {"oci.store": store}, str(platform))
    resolved = await with_store(
        engine,
        session_ids,
        spec.store_id,
        spec.identifier,
        lambda s: resolve_layout(s, spec.digest, spec.platform),
    )
    return resolved.root_digest, resolved.config


class OCILayoutSource:
    """:class:`bkcore.source.Source` of the ``oci-layout`` scheme."""

    def identify(
        self, identifier: str, attrs: Mapping[str, str], platform: str | None
    ) -> OCILayoutInstance:
        return OCILayoutInstance(parse(identifier, attrs, platform))

    async def resolve_layout_config(
        self,
        engine: Engine,
        ref: str,
        *,
        store_id: str,
        session_ids: Sequence[str],
        platform: str | None = None,
    ) -> tuple[str, bytes]:
        """(root digest, config JSON) of ``ref`` (``NAME@DIGEST``) in client store
        ``store_id`` (the ``--oci-layout`` name), read through the first of ``session_ids``
        serving it, for ``platform`` (default: the engine's). What a bridge's
        ``resolve_oci_layout_config`` calls for a Dockerfile ``oci-layout://`` named context."""
        from bkcore.llb.platforms import Platform

        plat = Platform.parse(platform or engine.platform)
        return await resolve_layout_config(engine, list(session_ids), ref, store_id, plat)
