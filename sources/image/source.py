"""The ``docker-image://REF`` source (:class:`ImageSource`): images pulled from registries.

Keying resolves the reference once per op (HEAD/GET of the manifest, the platform's
manifest and its config; spec/solver.md §2.3): key 0 is the digest of the resolved root and
platform, key 1 the chain ID of the layers. ``image.resolvemode`` is accepted but every mode
asks the registry: there is no image store to prefer. Pulling (:mod:`.pull`) reuses layer
snapshots shared with other images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from bkcore.layers.imagesource import LayerChainInstance
from bkcore.session.auth import registry_client_for
from bkcore.sources.image.resolve import ResolvedImage, resolve_image
from bkcore.sources.image.spec import ImageSpec, parse

if TYPE_CHECKING:
    from bkcore.engine import Engine
    from bkcore.solver.types import Result
    from bkcore.source import SourceContext

__all__ = ["ImageInstance", "ImageSource"]


class ImageInstance(LayerChainInstance[ResolvedImage]):
    """One ``docker-image://`` op (:class:`bkcore.source.SourceInstance`)."""

    def __init__(self, spec: ImageSpec) -> None:
        super().__init__(spec.platform, spec.layer_limit)
        self.spec = spec

    async def fetch_resolved(self, ctx: SourceContext) -> ResolvedImage:
        async with registry_client_for(ctx) as client:
            return await resolve_image(client, self.spec.ref, self.spec.platform, ctx.progress)

    async def snapshot(self, ctx: SourceContext) -> Result:
        from bkcore.sources.image.pull import pull_chain

        image = await self.resolve(ctx)
        layers = self.layers(image)
        async with registry_client_for(ctx) as client:
            return await pull_chain(ctx.engine.store, client, image.ref, layers, ctx.progress)


class ImageSource:
    """:class:`bkcore.source.Source` of the ``docker-image`` scheme."""

    def identify(
        self, identifier: str, attrs: Mapping[str, str], platform: str | None
    ) -> ImageInstance:
        return ImageInstance(parse(identifier, attrs, platform))

    async def resolve_image_config(
        self,
        ref: str,
        *,
        platform: str | None = None,
        resolve_mode: str = "default",
        engine: Engine | None = None,
        session_id: str = "",
    ) -> tuple[str, bytes]:
        """(digest, config JSON) of image ``ref`` for frontends (the bridge calls this), with
        the registry credentials of session ``session_id`` when ``engine`` is given; every
        ``resolve_mode`` asks the registry (there is no local image store)."""
        from bkcore.sources.image.resolve import resolve_image_config

        if engine is None:
            return await resolve_image_config(ref, platform)
        from bkcore.session.auth import registry_client

        client = registry_client(engine, [session_id] if session_id else [])
        return await resolve_image_config(ref, platform, client)
