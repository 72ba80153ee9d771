"""Push order and economy against an in-memory registry (httpx.MockTransport): HEAD first,
cross-repository mount, manifests last, nothing re-sent, no tag after a failed push."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from bkcore.cache.content import ContentStore
from bkcore.cache.db import Database
from bkcore.errors import ExportError
from bkcore.layers.blobcache import LayerBlobCache
from bkcore.layers.chain import LayerBlob
from bkcore.llb.platforms import Platform
from bkcore.plugins.exporters.imagecommon import (
    BuiltImage,
    PlatformImage,
    image_config,
    index_bytes,
    manifest_bytes,
)
from bkcore.plugins.exporters.imagecommon_push import parse_push_name, push_image
from bkcore.registry_client import Descriptor
from bkcore.registry_client import mediatypes as mt

HOST = "reg.test:5000"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FakeRegistry:
    """Just enough of the distribution API; ``log`` records (method, path, query)."""

    def __init__(self) -> None:
        self.blobs: dict[str, set[str]] = {}
        self.manifests: dict[str, dict[str, tuple[bytes, str]]] = {}
        self.log: list[tuple[str, str, str]] = []
        self.refuse_uploads = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        path, query = request.url.path, request.url.query.decode()
        self.log.append((request.method, path, query))
        parts = path.split("/")
        kind_at = next(i for i, p in enumerate(parts) if p in ("blobs", "manifests"))
        repo, kind, rest = "/".join(parts[2:kind_at]), parts[kind_at], parts[kind_at + 1 :]
        have = self.blobs.setdefault(repo, set())
        if kind == "blobs" and request.method == "HEAD":
            return httpx.Response(200 if rest[0] in have else 404)
        if kind == "blobs" and request.method == "POST":
            q = parse_qs(query)
            if "mount" in q:
                source = self.blobs.get(q["from"][0], set())
                if q["mount"][0] in source:
                    have.add(q["mount"][0])
                    return httpx.Response(201)
            location = f"/v2/{repo}/blobs/uploads/{uuid.uuid4().hex}"
            return httpx.Response(202, headers={"Location": location})
        if kind == "blobs" and request.method == "PUT":
            if self.refuse_uploads:
                return httpx.Response(403)
            digest = parse_qs(query)["digest"][0]
            assert sha(request.read()) == digest
            have.add(digest)
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if kind == "blobs" and request.method == "DELETE":
            return httpx.Response(204)
        stored = self.manifests.setdefault(repo, {})
        if request.method in ("HEAD", "GET"):
            if rest[0] not in stored:
                return httpx.Response(404)
            body, ctype = stored[rest[0]]
            headers = {"Docker-Content-Digest": sha(body), "Content-Type": ctype}
            if request.method == "HEAD":
                headers["Content-Length"] = str(len(body))
                return httpx.Response(200, headers=headers)
            return httpx.Response(200, headers=headers, content=body)
        if request.method == "PUT":
            body = request.read()
            stored[rest[0]] = (body, request.headers["Content-Type"])
            stored[sha(body)] = stored[rest[0]]
            return httpx.Response(201, headers={"Docker-Content-Digest": sha(body)})
        return httpx.Response(405)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeRegistry:
    fake = FakeRegistry()
    real = httpx.AsyncClient

    def client(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
        kwargs["transport"] = httpx.MockTransport(fake.handler)
        return real(*args, **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", client)
    monkeypatch.setenv("BKCORE_REGISTRY_CONFIG", str(tmp_path / "no-registries.toml"))
    return fake


def image(tmp_path: Path, sources: dict[str, str] | None = None) -> BuiltImage:
    db = Database(tmp_path / "m.db")
    content = ContentStore(tmp_path / "content", db)
    layers = []
    for n, data in enumerate([b"layer-one", b"layer-two"]):
        digest = content.ingest(io.BytesIO(data))
        layers.append(
            LayerBlob(digest, len(data), sha(data + b"tar"), "gzip", 0.0, f"l{n}", f"s{n}")
        )
    if sources:
        layers[0] = dataclasses.replace(layers[0], sources=sources)
    plat = Platform("linux", "amd64")
    config = image_config(None, plat, layers, epoch=0, buildinfo=None)
    config_desc = Descriptor(mt.DOCKER_CONFIG, content.ingest(io.BytesIO(config)), len(config))
    layer_descs = [Descriptor(mt.DOCKER_LAYER_GZIP, x.digest, x.size) for x in layers]
    manifest = manifest_bytes(config_desc, layer_descs, False, {})
    desc = Descriptor(mt.DOCKER_MANIFEST, content.ingest(io.BytesIO(manifest)), len(manifest))
    part = PlatformImage(desc, manifest, config_desc, config, layers, layer_descs)
    store: Any = SimpleNamespace(content=content)
    return BuiltImage(desc, manifest, [part], store, False)


def push(img: BuiltImage, name: str, **kw: Any) -> dict[str, str]:
    ref = parse_push_name(name, by_digest=kw.pop("by_digest", False))
    return asyncio.run(push_image(img, ref, **kw))


def test_heads_first_then_uploads_then_manifest_last(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    img = image(tmp_path)
    outcomes = push(img, f"{HOST}/team/app:v1")
    assert sorted(outcomes.values()) == ["uploaded"] * 3
    # every blob is asked for (HEAD) before its upload starts
    for digest in outcomes:
        head = registry.log.index(("HEAD", f"/v2/team/app/blobs/{digest}", ""))
        put = next(
            i for i, (m, _, q) in enumerate(registry.log) if parse_qs(q).get("digest") == [digest]
        )
        assert head < put
    manifest_put = [
        i for i, (m, p, _) in enumerate(registry.log) if m == "PUT" and "/manifests/" in p
    ]
    blob_puts = [i for i, (m, p, _) in enumerate(registry.log) if m == "PUT" and "/uploads/" in p]
    assert len(manifest_put) == 1 and manifest_put[0] > max(blob_puts)
    assert registry.log[manifest_put[0]][1] == "/v2/team/app/manifests/v1"
    assert registry.manifests["team/app"]["v1"][0] == img.top_bytes
    # the pushed layers are now known to be in team/app on this host
    cache = LayerBlobCache(img.store.content)
    assert cache.sources(img.images[0].layers[0].digest) == {HOST: "team/app"}
    # an identical re-push only asks: HEADs, no POST or PUT
    registry.log.clear()
    again = push(img, f"{HOST}/team/app:v1")
    assert set(again.values()) == {"exists"}
    assert {m for m, _, _ in registry.log} == {"HEAD"}


def test_cross_repository_mount_from_the_base_repository(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    img = image(tmp_path, sources={HOST: "library/base", "other.host": "x/y"})
    base_layer = img.images[0].layers[0].digest
    registry.blobs["library/base"] = {base_layer}
    outcomes = push(img, f"{HOST}/team/app:v1")
    assert outcomes[base_layer] == "mounted"
    assert outcomes[img.images[0].config.digest] == "uploaded"  # configs have no source
    mounts = [q for m, _, q in registry.log if m == "POST" and "mount=" in q]
    assert len(mounts) == 1
    assert parse_qs(mounts[0]) == {"mount": [base_layer], "from": ["library/base"]}


def test_failed_upload_creates_no_tag(registry: FakeRegistry, tmp_path: Path) -> None:
    img = image(tmp_path)
    registry.refuse_uploads = True
    with pytest.raises(ExportError, match=r"^push failed: .*reg.test:5000/team/app:v1") as info:
        push(img, f"{HOST}/team/app:v1")
    assert "\n" not in str(info.value)
    assert "v1" not in registry.manifests.get("team/app", {})
    assert not [p for m, p, _ in registry.log if "/manifests/" in p and m == "PUT"]


def test_push_by_digest(registry: FakeRegistry, tmp_path: Path) -> None:
    img = image(tmp_path)
    push(img, f"{HOST}/team/app", by_digest=True)
    assert img.top.digest in registry.manifests["team/app"]
    assert "latest" not in registry.manifests["team/app"]
    with pytest.raises(ExportError, match="must not have a tag"):
        parse_push_name(f"{HOST}/team/app:v1", by_digest=True)


def test_config_json_is_pushed_byte_for_byte(registry: FakeRegistry, tmp_path: Path) -> None:
    img = image(tmp_path)
    push(img, f"{HOST}/team/app:v1")
    body, ctype = registry.manifests["team/app"]["v1"]
    assert ctype == mt.DOCKER_MANIFEST
    assert json.loads(body)["config"]["digest"] == img.images[0].config.digest


def test_index_children_pushed_by_digest_before_the_tagged_index(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    one = image(tmp_path)
    child = one.images[0]
    arm = dataclasses.replace(
        child,
        descriptor=dataclasses.replace(child.descriptor, platform=Platform("linux", "arm64")),
    )
    amd = dataclasses.replace(
        child,
        descriptor=dataclasses.replace(child.descriptor, platform=Platform("linux", "amd64")),
    )
    data = index_bytes([amd.descriptor, arm.descriptor], False, {})
    digest = one.store.content.ingest(io.BytesIO(data))
    top = Descriptor(mt.DOCKER_MANIFEST_LIST, digest, len(data))
    idx = BuiltImage(top, data, [amd, arm], one.store, False)
    push(idx, f"{HOST}/team/multi:v1")
    puts = [p for m, p, _ in registry.log if m == "PUT" and "/manifests/" in p]
    assert puts[-1] == "/v2/team/multi/manifests/v1"
    assert f"/v2/team/multi/manifests/{child.descriptor.digest}" in puts[:-1]
    assert registry.manifests["team/multi"]["v1"] == (data, mt.DOCKER_MANIFEST_LIST)


def test_image_without_layers_or_store_pushes_its_config(
    registry: FakeRegistry, tmp_path: Path
) -> None:
    plat = Platform("linux", "amd64")
    config = image_config(None, plat, [], epoch=0, buildinfo=None)
    config_desc = Descriptor(mt.DOCKER_CONFIG, sha(config), len(config))
    manifest = manifest_bytes(config_desc, [], False, {})
    desc = Descriptor(mt.DOCKER_MANIFEST, sha(manifest), len(manifest))
    part = PlatformImage(desc, manifest, config_desc, config, [], [])
    outcomes = push(BuiltImage(desc, manifest, [part], None, False), f"{HOST}/team/scratch:v1")
    assert outcomes == {config_desc.digest: "uploaded"}
    assert registry.manifests["team/scratch"]["v1"][0] == manifest
