"""The image exporter as buildctl shows it against buildkitd v0.11.6: one "exporting to image"
vertex holding the statuses ``exporting layers``, ``exporting manifest sha256:..``,
``exporting config sha256:..``, ``pushing layers``, ``pushing manifest for NAME@sha256:..``
(no separate "pushing NAME" vertex), and a ``containerimage.descriptor`` carrying the
manifest's platform."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bkcore.plugins.exporters.image import ImageExporter
from bkcore.progress import ProgressStream, StatusEvent, VertexEvent

HOST = "reg.test:5000"


class _Ctx:
    def __init__(self) -> None:
        self.progress = ProgressStream()
        self.metadata: dict[str, bytes] = {}
        self.refs: dict[str, Any] = {}
        self.caller = None

    def view(self, result: object) -> Any:  # pragma: no cover - not used by the image exporter
        raise AssertionError("not used")


def _registry(log: list[str]) -> httpx.MockTransport:
    manifests: dict[str, bytes] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        log.append(f"{request.method} {path}")
        if "/blobs/uploads/" in path and request.method == "POST":
            return httpx.Response(202, headers={"Location": f"{path}{uuid.uuid4().hex}"})
        if "/blobs/uploads/" in path and request.method == "PUT":
            digest = request.url.params["digest"]
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if "/blobs/" in path:
            return httpx.Response(404)
        ref = path.rsplit("/", 1)[1]
        if request.method == "PUT":
            body = request.read()
            manifests[ref] = body
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        return httpx.Response(404)

    return httpx.MockTransport(handler)


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    seen: list[str] = []
    real = httpx.AsyncClient

    def client(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
        kwargs["transport"] = _registry(seen)
        return real(*args, **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", client)
    monkeypatch.setenv("BKCORE_REGISTRY_CONFIG", str(tmp_path / "none.toml"))
    return seen


def _export(attrs: dict[str, str]) -> tuple[dict[str, str], list[Any]]:
    ctx = _Ctx()
    reader = ctx.progress.subscribe()
    out = asyncio.run(ImageExporter().export(ctx, None, attrs))  # type: ignore[arg-type]
    return dict(out), reader.read_nowait()


def test_push_statuses_inside_the_exporting_to_image_vertex(log: list[str]) -> None:
    out, events = _export({"name": f"{HOST}/team/app:v1", "push": "true"})
    assert any(line.startswith("PUT /v2/team/app/manifests/v1") for line in log)
    vertices = {e.digest: e.name for e in events if isinstance(e, VertexEvent)}
    assert set(vertices.values()) == {"exporting to image"}  # no "pushing NAME" vertex
    statuses = [e for e in events if isinstance(e, StatusEvent)]
    assert {s.vertex for s in statuses} == set(vertices)
    manifest = out["containerimage.digest"]
    config = out["containerimage.config.digest"]
    done = [s.name for s in statuses if s.completed is not None]
    assert done == [
        "exporting layers",
        f"exporting manifest {manifest}",
        f"exporting config {config}",
        "pushing layers",
        f"pushing manifest for {HOST}/team/app:v1@{manifest}",
    ]
    # every status is written once started, then once completed
    assert [s.name for s in statuses if s.completed is None] == done


def test_push_by_digest_names_the_repository_only(log: list[str]) -> None:
    _, events = _export({"name": f"{HOST}/team/app", "push": "true", "push-by-digest": "true"})
    names = [e.name for e in events if isinstance(e, StatusEvent) and e.completed]
    assert names[-1] == f"pushing manifest for {HOST}/team/app"


def test_descriptor_carries_the_platform_in_go_order() -> None:
    out, events = _export({})
    assert not any(isinstance(e, StatusEvent) and e.name.startswith("pushing") for e in events)
    desc = json.loads(base64.b64decode(out["containerimage.descriptor"]))
    assert list(desc) == ["mediaType", "digest", "size", "platform"]
    assert desc["digest"] == out["containerimage.digest"]
    assert set(desc["platform"]) >= {"architecture", "os"}
    assert desc["platform"]["os"] == "linux"
