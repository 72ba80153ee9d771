"""What the ``image``, ``oci`` and ``docker`` exporters share: attrs, config, manifest, index.

Byte conventions follow BuildKit v0.11.6 (spec/exporters.md §2, §7):

* config: the frontend's ``containerimage.config`` (or the default for the platform) parsed
  as a map of raw JSON values; ``rootfs``, ``history``, ``created`` and
  ``moby.buildkit.buildinfo.v1`` set; re-marshalled compactly with top-level keys sorted,
  nested values compacted in their own key order (Go escapes ``<``, ``>``, ``&``);
* history normalised against the layers (surplus entries marked ``empty_layer`` from the
  bottom, missing ones appended with the snapshot's time and description, untimed entries
  filled in) and clamped to SOURCE_DATE_EPOCH;
* manifest and index: ``json.MarshalIndent`` (two spaces) with ``mediaType`` first; Docker
  schema 2 media types unless ``oci-mediatypes=true`` (the ``oci`` exporter's default).

SOURCE_DATE_EPOCH comes from, in this order: the ``source-date-epoch`` attr, the
``build-arg:SOURCE_DATE_EPOCH`` attr (BuildKit's controller copies the build arg there), the
frontend's ``source.date.epoch`` metadata, and finally the ``SOURCE_DATE_EPOCH`` environment
variable of the bkcore process (what buildx passes on as the build arg; with embedded
builds the bkcore process is the client). With it, layers made by the build are written
with clamped mtimes too (later BuildKit's ``rewrite-timestamp``), so two builds of the same
steps give the same manifest digest.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bkcore.errors import BkError, CacheError, ExportError
from bkcore.frontend import META_IMAGE_CONFIG, META_SOURCE_DATE_EPOCH
from bkcore.layers.chain import ChainOptions, LayerBlob, layer_chain
from bkcore.layers.compress import check_compression, media_type
from bkcore.llb.platforms import Platform
from bkcore.registry_client import Descriptor
from bkcore.registry_client import mediatypes as mt

if TYPE_CHECKING:
    from bkcore.cache.store import CacheStore
    from bkcore.exporter import ExportContext
    from bkcore.solver.types import Result

__all__ = [
    "BuiltImage",
    "ImageOptions",
    "PlatformImage",
    "build_image",
    "default_config",
    "go_time",
    "image_config",
    "index_bytes",
    "manifest_bytes",
    "normalize_history",
    "parse_bool",
    "parse_options",
    "parse_time",
]

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXPORTER_COMMENT = "buildkit.exporter.image.v0"
BUILDINFO_KEY = "moby.buildkit.buildinfo.v1"
META_BUILDINFO = "containerimage.buildinfo"
META_IMAGE_NAME = "image.name"
EPOCH_ENV = "SOURCE_DATE_EPOCH"

_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028"}
_HTML_ESCAPES["\u2029"] = "\\u2029"
_HTML_RE = re.compile("[<>&\u2028\u2029]")
_TIME_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)$"
)


# -- attrs -----------------------------------------------------------------------------------


def parse_bool(attrs: Mapping[str, str], key: str, default: bool = False) -> bool:
    """A bool attr: absent -> ``default``; ``""`` counts as true (BuildKit)."""
    if key not in attrs:
        return default
    value = attrs[key].strip().lower()
    if value in ("", "1", "t", "true"):
        return True
    if value in ("0", "f", "false"):
        return False
    raise ExportError(f"invalid {key}={attrs[key]!r}: expected true or false")


def _parse_epoch(value: str, where: str) -> int:
    try:
        epoch = int(value.strip(), 10)
    except ValueError:
        raise ExportError(f"invalid {where} {value!r}: expected decimal seconds") from None
    if epoch < 0:
        raise ExportError(f"invalid {where} {value!r}: must not be negative")
    return epoch


def resolve_epoch(
    attrs: Mapping[str, str], metadata: Mapping[str, bytes], environ: Mapping[str, str]
) -> int | None:
    """SOURCE_DATE_EPOCH by precedence: attr, build-arg attr, frontend metadata, env."""
    for key in ("source-date-epoch", "build-arg:SOURCE_DATE_EPOCH"):
        if attrs.get(key, "").strip():
            return _parse_epoch(attrs[key], key)
    meta = metadata.get(META_SOURCE_DATE_EPOCH)
    if meta is not None and meta.strip():
        return _parse_epoch(meta.decode(errors="replace"), f"metadata {META_SOURCE_DATE_EPOCH}")
    env = environ.get(EPOCH_ENV, "")
    if env.strip():
        return _parse_epoch(env, f"environment {EPOCH_ENV}")
    return None


def split_names(value: str) -> list[str]:
    """``name=a,b`` (or ``"a,b"`` with the csv quotes left in) -> ``["a", "b"]``."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return [n.strip() for n in value.split(",") if n.strip()]


def expand_names(names: list[str], metadata: Mapping[str, bytes]) -> list[str]:
    """``*`` stands for the frontend's ``image.name`` metadata (itself a comma list)."""
    out: list[str] = []
    for name in names:
        if name == "*":
            out += split_names(metadata.get(META_IMAGE_NAME, b"").decode(errors="replace"))
        else:
            out.append(name)
    return list(dict.fromkeys(out))


@dataclass(frozen=True, slots=True)
class Annotations:
    """``annotation*`` attrs by target; keys may be limited to one platform."""

    manifest: list[tuple[str | None, str, str]] = field(default_factory=list)
    manifest_descriptor: list[tuple[str | None, str, str]] = field(default_factory=list)
    index: list[tuple[str | None, str, str]] = field(default_factory=list)
    index_descriptor: list[tuple[str | None, str, str]] = field(default_factory=list)

    def for_platform(self, which: str, plat: Platform | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for only, key, value in getattr(self, which):
            if only is None or (plat is not None and _same_platform(only, plat)):
                out[key] = value
        return out


def _same_platform(spec: str, plat: Platform) -> bool:
    try:
        return Platform.parse(spec) == plat
    except BkError:
        return False


_ANNOTATION_RE = re.compile(
    r"^(annotation|annotation-manifest|annotation-manifest-descriptor|annotation-index|"
    r"annotation-index-descriptor)(?:\[([^\]]+)\])?\.(.+)$"
)


def parse_annotations(attrs: Mapping[str, str]) -> Annotations:
    out = Annotations()
    targets = {
        "annotation": out.manifest,
        "annotation-manifest": out.manifest,
        "annotation-manifest-descriptor": out.manifest_descriptor,
        "annotation-index": out.index,
        "annotation-index-descriptor": out.index_descriptor,
    }
    for key in sorted(attrs):
        if not key.startswith("annotation"):
            continue
        m = _ANNOTATION_RE.match(key)
        if m is None:
            raise ExportError(f"invalid annotation attr {key!r}")
        targets[m.group(1)].append((m.group(2), m.group(3), attrs[key]))
    return out


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """The attrs every image-type exporter understands."""

    names: list[str]
    oci: bool
    chain: ChainOptions
    buildinfo: bool
    epoch: int | None
    annotations: Annotations


def parse_options(
    attrs: Mapping[str, str],
    metadata: Mapping[str, bytes],
    *,
    oci_default: bool,
    environ: Mapping[str, str] | None = None,
) -> ImageOptions:
    """Checked image attrs (``ExportError`` naming the attr for a bad value)."""
    compression = check_compression(attrs.get("compression", "gzip").strip() or "gzip")
    level: int | None = None
    if attrs.get("compression-level", "").strip():
        try:
            level = int(attrs["compression-level"].strip(), 10)
        except ValueError:
            raise ExportError(
                f"invalid compression-level {attrs['compression-level']!r}: expected an integer"
            ) from None
    epoch = resolve_epoch(attrs, metadata, os.environ if environ is None else environ)
    annotations = parse_annotations(attrs)
    oci = parse_bool(attrs, "oci-mediatypes", oci_default)
    if annotations.index or annotations.index_descriptor or annotations.manifest_descriptor:
        oci = True  # BuildKit switches them on for these (with a warning)
    chain = ChainOptions(
        compression=compression,
        level=level,
        force=parse_bool(attrs, "force-compression"),
        epoch=epoch,
    )
    return ImageOptions(
        names=expand_names(split_names(attrs.get("name", "")), metadata),
        oci=oci,
        chain=chain,
        buildinfo=parse_bool(attrs, "buildinfo", True),
        epoch=epoch,
        annotations=annotations,
    )


# -- JSON and time conventions ----------------------------------------------------------------


def go_compact(value: Any) -> str:
    """``value`` as Go's encoder writes a compacted raw value (HTML characters escaped)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return _HTML_RE.sub(lambda m: _HTML_ESCAPES[m.group(0)], text)


def go_indent(value: Any) -> bytes:
    """``json.MarshalIndent(value, "", "  ")``."""
    text = json.dumps(value, ensure_ascii=False, indent=2, separators=(",", ": "))
    return _HTML_RE.sub(lambda m: _HTML_ESCAPES[m.group(0)], text).encode()


def go_time(ns: int) -> str:
    """RFC 3339 with nanoseconds, trailing zeros dropped, UTC ``Z`` (Go's time JSON)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        stamp += "." + f"{frac:09d}".rstrip("0")
    return stamp + "Z"


def parse_time(text: str) -> int:
    """Unix nanoseconds of an RFC 3339 time (``ValueError`` when it is not one)."""
    m = _TIME_RE.match(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, sec = (int(g) for g in m.groups()[:6])
    frac = int((m.group(7) or "0").ljust(9, "0"))
    zone = m.group(8)
    offset = 0
    if zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    base = datetime.datetime(year, month, day, hour, minute, sec, tzinfo=datetime.UTC)
    return (int(base.timestamp()) - offset) * 1_000_000_000 + frac


def _ns(seconds: float) -> int:
    """Unix nanoseconds of a ``time.time()`` float, to the nanosecond (Go writes RFC3339Nano):
    the whole seconds apart, so the fraction keeps the float's precision."""
    whole = math.floor(seconds)
    return whole * 1_000_000_000 + round((seconds - whole) * 1_000_000_000)


# -- config -----------------------------------------------------------------------------------


def default_config(plat: Platform) -> dict[str, Any]:
    """BuildKit's config for a result without frontend metadata (raw LLB)."""
    doc: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os}
    if plat.variant:
        doc["variant"] = plat.variant
    doc["config"] = {"Env": [DEFAULT_PATH], "WorkingDir": "/"}
    doc["rootfs"] = {"type": "layers"}
    return doc


def _history_entry(raw: Any) -> dict[str, Any]:
    """One history entry re-marshalled as Go's ``ocispec.History`` (field order, omitempty)."""
    if not isinstance(raw, dict):
        raise ExportError("image config: a history entry is not an object")
    out: dict[str, Any] = {}
    for key in ("created", "created_by", "author", "comment"):
        value = raw.get(key)
        if value not in (None, ""):
            if not isinstance(value, str):
                raise ExportError(f"image config: history {key} is not a string")
            out[key] = value
    if "created" in out:
        try:
            parse_time(out["created"])
        except ValueError as exc:
            raise ExportError(f"image config: history {exc}") from None
    if raw.get("empty_layer"):
        out["empty_layer"] = True
    return out


def normalize_history(
    history: list[dict[str, Any]], layers: Sequence[LayerBlob], epoch: int | None
) -> list[dict[str, Any]]:
    """BuildKit's reconciliation of history entries with layers, then the epoch clamp."""
    history = [dict(h) for h in history]
    non_empty = sum(1 for h in history if not h.get("empty_layer"))
    if non_empty > len(layers):
        for h in history:
            if non_empty == len(layers):
                break
            if not h.get("empty_layer"):
                h["empty_layer"] = True
                non_empty -= 1
    for layer in layers[non_empty:]:
        history.append(
            {
                "created": go_time(_ns(layer.created)),
                "created_by": layer.description,
                "comment": EXPORTER_COMMENT,
            }
        )
    index = 0
    for h in history:
        if not h.get("empty_layer"):
            if "created" not in h:
                h["created"] = go_time(_ns(layers[index].created))
            index += 1
    history = [_reorder(h) for h in history]
    created: str | None = None
    untimed = False
    for h in history:
        if "created" in h:
            created = h["created"]
            if untimed:
                break
        else:
            untimed = True
    untimed = False
    for h in history:
        if "created" in h:
            if untimed:
                created = h["created"]
        else:
            untimed = True
            if created is not None:
                h["created"] = created
    history = [_reorder(h) for h in history]
    if epoch is not None:
        limit = epoch * 1_000_000_000
        for h in history:
            if "created" not in h or parse_time(h["created"]) > limit:
                h["created"] = go_time(limit)
        history = [_reorder(h) for h in history]
    return history


def _reorder(h: dict[str, Any]) -> dict[str, Any]:
    order = ("created", "created_by", "author", "comment", "empty_layer")
    return {k: h[k] for k in order if k in h}


def image_config(
    base: bytes | None,
    plat: Platform,
    layers: Sequence[LayerBlob],
    *,
    epoch: int | None,
    buildinfo: bytes | None,
) -> bytes:
    """The config blob: ``base`` (frontend metadata; None: the default) completed."""
    if base is None:
        doc = default_config(plat)
    else:
        try:
            doc = json.loads(base)
        except ValueError as exc:
            raise ExportError(f"invalid image config from the frontend: {exc}") from None
        if not isinstance(doc, dict):
            raise ExportError("invalid image config from the frontend: not a JSON object")
    raw_history = doc.get("history") or []
    if not isinstance(raw_history, list):
        raise ExportError("image config: history is not a list")
    history = normalize_history([_history_entry(h) for h in raw_history], layers, epoch)
    diff_ids = [layer.diff_id for layer in layers]
    doc["rootfs"] = {"type": "layers", "diff_ids": diff_ids or None}
    doc["history"] = history or None
    created = doc.get("created")
    if not isinstance(created, str) or not created:
        timed = [h["created"] for h in history if "created" in h]
        # BuildKit: the last timed history entry, else JSON null (an image of no layers)
        doc["created"] = timed[-1] if timed else None
    if epoch is not None and isinstance(doc.get("created"), str):
        try:
            if parse_time(doc["created"]) > epoch * 1_000_000_000:
                doc["created"] = go_time(epoch * 1_000_000_000)
        except ValueError:
            raise ExportError(f"image config: invalid created time {doc['created']!r}") from None
    if buildinfo is not None:
        doc[BUILDINFO_KEY] = base64.b64encode(buildinfo).decode()
    else:
        doc.pop(BUILDINFO_KEY, None)
    body = ",".join(
        f"{go_compact(key)}:{go_compact(doc[key])}" for key in sorted(doc, key=str.encode)
    )
    return ("{" + body + "}").encode()


# -- manifest and index -----------------------------------------------------------------------


def manifest_bytes(
    config: Descriptor, layers: Sequence[Descriptor], oci: bool, annotations: Mapping[str, str]
) -> bytes:
    doc: dict[str, Any] = {
        "mediaType": mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST,
        "schemaVersion": 2,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return go_indent(doc)


def index_bytes(
    manifests: Sequence[Descriptor], oci: bool, annotations: Mapping[str, str]
) -> bytes:
    doc: dict[str, Any] = {
        "mediaType": mt.OCI_INDEX if oci else mt.DOCKER_MANIFEST_LIST,
        "schemaVersion": 2,
        "manifests": [_descriptor_json(m) for m in manifests],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return go_indent(doc)


def _descriptor_json(desc: Descriptor) -> dict[str, Any]:
    out = desc.to_json()
    if "annotations" in out:
        out["annotations"] = dict(sorted(out["annotations"].items()))
    return out


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- assembling an image in the content store ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlatformImage:
    """One platform's image: manifest descriptor (with platform) and its parts."""

    descriptor: Descriptor
    manifest: bytes
    config: Descriptor
    config_bytes: bytes
    layers: list[LayerBlob]
    layer_descriptors: list[Descriptor]


@dataclass(frozen=True, slots=True)
class BuiltImage:
    """An image: its top object (manifest or index) and parts, written to the content store
    when there is one (``store`` is None for an image without layers, such as ``FROM
    scratch`` with metadata only: then only :meth:`inline` holds its blobs)."""

    top: Descriptor
    top_bytes: bytes
    images: list[PlatformImage]
    store: CacheStore | None
    oci: bool
    #: ``annotation-index-descriptor.*``: on the descriptor pointing at an index
    index_annotations: Mapping[str, str] = field(default_factory=dict)

    def inline(self) -> dict[str, bytes]:
        """The JSON blobs made by the export (configs, manifests, index) by digest."""
        out = {self.top.digest: self.top_bytes}
        for image in self.images:
            out[image.config.digest] = image.config_bytes
            out[image.descriptor.digest] = image.manifest
        return out

    @property
    def is_index(self) -> bool:
        return self.top.media_type in mt.INDEX_TYPES

    def blobs(self) -> list[Descriptor]:
        """Every blob below the top object, layers before configs before manifests, once."""
        seen: dict[str, Descriptor] = {}
        for image in self.images:
            for desc in image.layer_descriptors:
                seen.setdefault(desc.digest, desc)
        for image in self.images:
            seen.setdefault(image.config.digest, image.config)
        if self.is_index:
            for image in self.images:
                seen.setdefault(image.descriptor.digest, image.descriptor)
        return list(seen.values())

    def layer_sources(self) -> dict[str, Mapping[str, str]]:
        return {layer.digest: layer.sources for image in self.images for layer in image.layers}


def _store_of(result: Result | None, refs: Mapping[str, Result | None]) -> CacheStore | None:
    """The store holding the result's snapshots (None when every ref is empty)."""
    from bkcore.cache.results import SnapshotResult

    for candidate in [result, *refs.values()]:
        if isinstance(candidate, SnapshotResult):
            return candidate.store
    return None


def _config_platform(config: bytes | None, fallback: Platform) -> Platform:
    if config is None:
        return fallback
    try:
        doc = json.loads(config)
        arch, osname = doc.get("architecture"), doc.get("os")
        if isinstance(arch, str) and isinstance(osname, str) and arch and osname:
            variant = doc.get("variant") if isinstance(doc.get("variant"), str) else ""
            return Platform(osname, arch, variant or "")
    except (ValueError, AttributeError, BkError):
        pass
    return fallback


def _ingest(store: CacheStore | None, data: bytes) -> str:
    digest = sha256(data)
    if store is None:
        return digest
    try:
        store.content.ingest(io.BytesIO(data), digest)
    except CacheError as exc:
        raise ExportError(f"cannot store image blob {digest}: {exc}") from exc
    return digest


def _one_platform(
    store: CacheStore | None,
    snapshot_id: str | None,
    plat: Platform,
    config_meta: bytes | None,
    opts: ImageOptions,
    buildinfo: bytes | None,
) -> PlatformImage:
    from bkcore.layers.blobcache import LayerBlobCache

    layers: list[LayerBlob] = []
    if store is not None and snapshot_id is not None:
        store.snapshots.count_use(snapshot_id)  # du's UsageCount: the export uses the result
        cache = LayerBlobCache(store.content)
        layers = layer_chain(store.snapshots, cache, snapshot_id, opts.chain)
    config = image_config(config_meta, plat, layers, epoch=opts.epoch, buildinfo=buildinfo)
    config_desc = Descriptor(
        mt.OCI_CONFIG if opts.oci else mt.DOCKER_CONFIG, _ingest(store, config), len(config)
    )
    layer_descs = [
        Descriptor(media_type(layer.compression, oci=opts.oci), layer.digest, layer.size)
        for layer in layers
    ]
    manifest = manifest_bytes(
        config_desc, layer_descs, opts.oci, opts.annotations.for_platform("manifest", plat)
    )
    descriptor = Descriptor(
        mt.OCI_MANIFEST if opts.oci else mt.DOCKER_MANIFEST,
        _ingest(store, manifest),
        len(manifest),
        plat,
        opts.annotations.for_platform("manifest_descriptor", plat),
    )
    return PlatformImage(descriptor, manifest, config_desc, config, layers, layer_descs)


async def build_image(ctx: ExportContext, result: Result | None, opts: ImageOptions) -> BuiltImage:
    """Layers, config, manifest (and index for a multi-platform result) of ``result`` in
    the content store (layer blobs made in threads, each at most once)."""
    refs = dict(ctx.refs)
    store = _store_of(result, refs)
    meta = ctx.metadata
    buildinfo = meta.get(META_BUILDINFO, b"{}") if opts.buildinfo else None
    host = Platform.host()
    images: list[PlatformImage] = []
    try:
        if refs:
            for key, ref in refs.items():
                plat = Platform.parse(key)
                config_meta = meta.get(f"{META_IMAGE_CONFIG}/{key}")
                images.append(
                    await asyncio.to_thread(
                        _one_platform,
                        store,
                        ref.id if ref is not None else None,
                        plat,
                        config_meta,
                        opts,
                        buildinfo,
                    )
                )
        else:
            config_meta = meta.get(META_IMAGE_CONFIG)
            plat = _config_platform(config_meta, host)
            images.append(
                await asyncio.to_thread(
                    _one_platform,
                    store,
                    result.id if result is not None else None,
                    plat,
                    config_meta,
                    opts,
                    buildinfo,
                )
            )
    except CacheError as exc:
        raise ExportError(f"exporting image layers: {exc}") from exc
    if not refs:
        image = images[0]
        if opts.annotations.index or opts.annotations.index_descriptor:
            raise ExportError("index annotations need a multi-platform result")
        top = Descriptor(
            image.descriptor.media_type, image.descriptor.digest, image.descriptor.size
        )
        return BuiltImage(top, image.manifest, images, store, opts.oci)
    index = index_bytes(
        [img.descriptor for img in images], opts.oci, opts.annotations.for_platform("index", None)
    )
    digest = await asyncio.to_thread(_ingest, store, index)
    top = Descriptor(mt.OCI_INDEX if opts.oci else mt.DOCKER_MANIFEST_LIST, digest, len(index))
    outer = opts.annotations.for_platform("index_descriptor", None)
    return BuiltImage(top, index, images, store, opts.oci, outer)


def descriptor_b64(desc: Descriptor, extra: Mapping[str, str] | None = None) -> str:
    """``containerimage.descriptor``: base64 of the top descriptor's JSON."""
    doc = desc.to_json()
    if extra:
        platform = doc.pop("platform", None)  # Go's field order: ..., annotations, platform
        doc["annotations"] = dict(sorted({**doc.get("annotations", {}), **extra}.items()))
        if platform is not None:
            doc["platform"] = platform
    return base64.b64encode(go_compact(doc).encode()).decode()
