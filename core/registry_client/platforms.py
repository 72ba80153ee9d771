"""Choose the manifest for a platform from an OCI index or Docker manifest list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bkcore.errors import DefinitionError, SourceError
from bkcore.llb.platforms import Platform

#: ARM variants a CPU of the key variant also runs, best first (as containerd orders them).
_ARM_COMPAT = {"v8": ("v8", "v7", "v6", "v5"), "v7": ("v7", "v6", "v5"), "v6": ("v6", "v5")}


def descriptor_platform(desc: Mapping[str, Any]) -> Platform | None:
    """The normalised platform of an index entry, or None when it has none (or a bad one)."""
    plat = desc.get("platform")
    if not isinstance(plat, Mapping):
        return None
    try:
        return Platform(
            str(plat.get("os", "")), str(plat.get("architecture", "")), str(plat.get("variant", ""))
        )
    except DefinitionError:
        return None


def _rank(want: Platform, have: Platform) -> int | None:
    """Lower is better; None when ``have`` cannot run on ``want``."""
    if have.os != want.os or have.architecture != want.architecture:
        return None
    if have.variant == want.variant:
        return 0
    if want.architecture == "arm":
        order = _ARM_COMPAT.get(want.variant, (want.variant,))
        if have.variant in order:
            return order.index(have.variant)
        return None
    if not have.variant:  # an entry without a variant runs on every variant of its arch
        return 10
    if want.architecture == "amd64" and want.variant.startswith("v") and have.variant[:1] == "v":
        # amd64 micro-architecture levels: v3 runs v2 and v1 images.
        try:
            if int(have.variant[1:]) <= int(want.variant[1:] or "1"):
                return 20 - int(have.variant[1:])
        except ValueError:
            return None
    return None


def select_manifest(
    manifests: Sequence[Mapping[str, Any]], platform: Platform, ref: str
) -> Mapping[str, Any]:
    """The index entry best matching ``platform``; SourceError listing what exists otherwise."""
    best: tuple[int, int, Mapping[str, Any]] | None = None
    for position, desc in enumerate(manifests):
        have = descriptor_platform(desc)
        if have is None:
            continue
        rank = _rank(platform, have)
        if rank is not None and (best is None or (rank, position) < best[:2]):
            best = (rank, position, desc)
    if best is None:
        offered = sorted({str(p) for p in map(descriptor_platform, manifests) if p is not None})
        available = ", ".join(offered) or "none"
        raise SourceError(f"{ref}: no manifest for platform {platform} (available: {available})")
    return best[2]
