"""The keying frame of sources whose result is an image's layer chain.

``docker-image://`` (a registry) and ``oci-layout://`` (the client's content store) differ
only in where the root, manifest, config and blobs come from. Both resolve the reference
once per op, cut the layers to the op's layer limit and answer the same two cache keys
(spec/solver.md §2.3, :func:`bkcore.layers.images.root_key` and
:func:`~bkcore.layers.images.chain_ids`). :class:`LayerChainInstance` is that frame; a source
supplies :meth:`LayerChainInstance.fetch_resolved` (and its ``snapshot``).
"""

from __future__ import annotations

import abc
import asyncio
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from bkcore.layers.images import Layer, chain_ids, root_key

if TYPE_CHECKING:
    from bkcore.llb.platforms import Platform
    from bkcore.source import SourceContext

__all__ = ["LayerChainInstance", "ResolvedLayers"]


class ResolvedLayers(Protocol):
    """What keying needs of a resolved image: its root descriptor's digest and layers."""

    @property
    def root_digest(self) -> str: ...

    @property
    def layers(self) -> tuple[Layer, ...]: ...


R = TypeVar("R", bound=ResolvedLayers)


class LayerChainInstance(abc.ABC, Generic[R]):
    """One source op producing an image's layer chain (a ``SourceInstance`` less ``snapshot``).

    Key 0 is the digest of the resolved root, the op's platform and layer limit (final when
    the image has no layers); key 1 the chain ID of the layers used.
    """

    def __init__(self, platform: Platform, layer_limit: int | None) -> None:
        self._platform = platform
        self._layer_limit = layer_limit
        self._resolved: R | None = None
        self._lock = asyncio.Lock()

    @abc.abstractmethod
    async def fetch_resolved(self, ctx: SourceContext) -> R:
        """Resolve the reference (called once per instance, by :meth:`resolve`)."""

    async def resolve(self, ctx: SourceContext) -> R:
        """The reference resolved for the op's platform, once per instance."""
        async with self._lock:
            if self._resolved is None:
                self._resolved = await self.fetch_resolved(ctx)
            return self._resolved

    def layers(self, image: R) -> tuple[Layer, ...]:
        """The layers this op uses (cut to its layer limit)."""
        limit = self._layer_limit
        return image.layers if limit is None else image.layers[:limit]

    async def cache_key(self, ctx: SourceContext, index: int) -> tuple[str, bool]:
        image = await self.resolve(ctx)
        layers = self.layers(image)
        if index == 0:
            return root_key(image.root_digest, self._platform, self._layer_limit), not layers
        return chain_ids([layer.diff_id for layer in layers])[-1], True
