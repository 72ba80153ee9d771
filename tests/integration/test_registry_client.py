"""bkcore.registry_client against Debian's real ``docker-registry`` on loopback.

The registries (plain, htpasswd basic auth, and ``auth: token:`` behind the token server the
tests run) and the deterministic busybox-static images are the shared fixtures (conftest.py,
imagefixtures.py). Kept here: a loopback proxy that issues and demands its own bearer tokens,
and a flaky proxy (503s, dropped connections, truncated bodies).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagefixtures as imf
import pytest

from bkcore.errors import SourceError
from bkcore.llb.platforms import Platform
from bkcore.registry_client import (
    Descriptor,
    ImageReference,
    RegistryClient,
    RetryPolicy,
)
from bkcore.registry_client import mediatypes as mt

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
USER, PASSWORD = imf.USER, imf.PASSWORD  # what auth_registry and token_registry accept


# -- loopback proxy: bearer-token server and flaky front ---------------------------------------
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


@dataclass
class ProxyState:
    upstream: str
    token_auth: bool = False
    fail_first: int = 0  # 503 for the first N hits of every (method, path)
    drop_first: int = 0  # close the connection without an answer for the first N hits
    truncate_first: int = 0  # send only half of a GET body, then close, for the first N hits
    hits: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: int = 0
    tokens: dict[str, set[str]] = field(default_factory=dict)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _scope_allows(scopes: set[str], repo: str, action: str) -> bool:
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind == "repository" and name == repo and action in actions.split(","):
            return True
    return False


def _make_handler(state: ProxyState, own_host: str) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(code)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _token_endpoint(self) -> None:
            from urllib.parse import parse_qs, urlsplit

            query = parse_qs(urlsplit(self.path).query)
            state.token_requests.append(query)
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {})
                return
            token = secrets.token_hex(16)
            state.tokens[token] = set(query.get("scope", []))
            body = json.dumps({"token": token, "expires_in": 300}).encode()
            self._send(200, body, {"Content-Type": "application/json"})

        def _authorized(self) -> bool:
            path = self.path.split("?", 1)[0]
            parts = path.split("/")
            repo, action = "", "pull"
            for marker in ("manifests", "blobs", "tags"):
                if marker in parts[2:]:
                    repo = "/".join(parts[2 : parts.index(marker, 2)])
                    break
            if self.command not in ("GET", "HEAD"):
                action = "push"
            auth = self.headers.get("Authorization", "")
            scopes = state.tokens.get(auth.removeprefix("Bearer "), None)
            if scopes is not None and (not repo or _scope_allows(scopes, repo, action)):
                return True
            challenge = f'Bearer realm="http://{own_host}/token",service="bk-test"'
            if repo:
                challenge += f',scope="repository:{repo}:{action}"'
            self._send(
                401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge}
            )
            return False

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            key = (self.command, self.path)
            with state.lock:
                hit = state.hits.get(key, 0)
                state.hits[key] = hit + 1
            if hit < state.drop_first:
                state.failures += 1
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if hit < state.fail_first:
                state.failures += 1
                self._send(503, b"try later", {})
                return
            if state.token_auth:
                if self.path.startswith("/token"):
                    self._token_endpoint()
                    return
                if not self._authorized():
                    return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers.pop("Authorization", None)
            host, port = state.upstream.rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
                if hit < state.truncate_first and self.command == "GET" and len(data) > 2:
                    state.failures += 1
                    self.send_response(resp.status)
                    for k, v in out.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif self.command == "HEAD":
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP or k.lower() == "content-length":
                            self.send_header(k, v)
                    self.end_headers()
                else:
                    self._send(resp.status, data, out)
            finally:
                conn.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    return Handler


@pytest.fixture
def proxy_factory() -> Iterator[Any]:
    servers: list[http.server.ThreadingHTTPServer] = []
    threads: list[threading.Thread] = []

    def start(state: ProxyState) -> str:
        port = imf.free_port()
        host = f"127.0.0.1:{port}"
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _make_handler(state, host))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append(server)
        threads.append(thread)
        return host

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    for thread in threads:
        thread.join(5)


# -- deterministic test images (imagefixtures) -------------------------------------------------
_sha = imf.sha
FixtureImage = imf.FixtureImage


def make_image(platform: Platform, extra: imf.Files) -> FixtureImage:
    """A one-layer image: /bin, /etc/passwd, /etc/group, /tmp and ``extra``."""
    files: imf.Files = {"bin": ("d", b"", 0o755), **imf.etc_files(), **extra}
    return imf.make_image(platform, [files], history=True)


def busybox_image() -> FixtureImage:
    extra: imf.Files = {
        "bin/busybox": ("f", BUSYBOX.read_bytes(), 0o755),
        "bin/sh": ("l", "busybox", 0o777),
    }
    return make_image(Platform.host(), extra)


async def push_image(
    client: RegistryClient, ref: ImageReference, image: FixtureImage, workdir: Path
) -> list[str]:
    outcomes: list[str] = []
    for blob in (image.layer, image.config):
        path = workdir / _sha(blob).replace(":", "-")
        path.write_bytes(blob)
        outcomes.append(await client.push_blob(ref, _sha(blob), path))
    await client.put_manifest(ref, image.manifest, mt.OCI_MANIFEST)
    return outcomes


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


# -- tests ------------------------------------------------------------------------------------
def test_push_then_pull_by_tag_and_digest(registry: Any, tmp_path: Path) -> None:
    image = busybox_image()
    again = busybox_image()
    assert again.manifest == image.manifest  # the fixture image is deterministic
    ref = ImageReference.parse(f"{registry.host}/test/busybox:1")

    async def main() -> None:
        async with RegistryClient(retry=FAST_RETRY) as client:
            assert await push_image(client, ref, image, tmp_path) == ["uploaded", "uploaded"]
            assert await push_image(client, ref, image, tmp_path) == ["exists", "exists"]
            desc = await client.resolve(ref)
            assert desc.digest == image.digest
            assert desc.size == len(image.manifest)
            assert desc.media_type == mt.OCI_MANIFEST
            by_tag = await client.fetch_manifest(ref)
            by_digest = await client.fetch_manifest(ref.with_digest(image.digest))
            assert by_tag.data == by_digest.data == image.manifest
            assert by_tag.digest == image.digest and not by_tag.is_index
            layer_desc = by_digest.json["layers"][0]
            config = await client.fetch_blob_bytes(ref, by_digest.json["config"]["digest"], 1 << 20)
            assert json.loads(config)["rootfs"]["diff_ids"] == [image.diff_id]
            dest = tmp_path / "pulled" / "layer"
            dest.parent.mkdir()
            size = await client.fetch_blob(ref, layer_desc["digest"], dest, layer_desc["size"])
            assert size == len(image.layer) and dest.read_bytes() == image.layer
            assert os.listdir(dest.parent) == ["layer"]
            with gzip.open(dest) as gz, tarfile.open(fileobj=gz) as tar:
                assert tar.getmember("bin/busybox").size == BUSYBOX.stat().st_size

    _run(main())
    skopeo = shutil.which("skopeo")
    if skopeo is not None:  # an independent client agrees on what was pushed
        out = subprocess.run(
            [skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
            check=True,
            capture_output=True,
        ).stdout
        assert out == image.manifest


def test_missing_tag_and_blob_are_clear_errors(registry: Any, tmp_path: Path) -> None:
    ref = ImageReference.parse(f"{registry.host}/test/nothing:here")

    async def main() -> None:
        async with RegistryClient(retry=FAST_RETRY) as client:
            with pytest.raises(SourceError, match=r"test/nothing:here: manifest not found"):
                await client.fetch_manifest(ref)
            with pytest.raises(SourceError, match="not found"):
                await client.fetch_blob(ref, _sha(b"x"), tmp_path / "x")
            assert not (tmp_path / "x").exists()

    _run(main())


def test_chunked_upload_and_cross_repo_mount(registry: Any, tmp_path: Path) -> None:
    blob = secrets.token_bytes(300_000)
    digest = _sha(blob)
    src = tmp_path / "blob"
    src.write_bytes(blob)
    a = ImageReference.parse(f"{registry.host}/test/a:1")
    b = ImageReference.parse(f"{registry.host}/test/b:1")

    async def main() -> None:
        async with RegistryClient(retry=FAST_RETRY) as client:
            assert not await client.blob_exists(a, digest)
            assert await client.push_blob(a, digest, src, chunk_size=64 * 1024) == "uploaded"
            assert await client.blob_exists(a, digest)
            assert not await client.blob_exists(b, digest)
            assert await client.push_blob(b, digest, src, mount_from=a.repository) == "mounted"
            # a mount from a repository without the blob falls back to an upload
            other = tmp_path / "other"
            other.write_bytes(blob[:1000])
            got = await client.push_blob(b, _sha(blob[:1000]), other, mount_from="test/none")
            assert got == "uploaded" and await client.blob_exists(b, _sha(blob[:1000]))
            assert await client.blob_exists(b, digest)
            back = tmp_path / "back"
            await client.fetch_blob(b, digest, back, len(blob))
            assert back.read_bytes() == blob

    _run(main())


def test_platform_selection_from_index(registry: Any, tmp_path: Path) -> None:
    host = busybox_image()
    platforms = [Platform("linux", "arm64", "v8"), Platform("linux", "arm", "v6")]
    others = [
        make_image(p, {"etc/platform": ("f", str(p).encode(), 0o644)})
        for p in platforms
        if p != host.platform
    ]
    images = [host, *others]
    ref = ImageReference.parse(f"{registry.host}/test/multi:1")
    entries = []
    for img in images:
        entry = Descriptor(mt.OCI_MANIFEST, img.digest, len(img.manifest), img.platform).to_json()
        if img.platform.architecture == "arm64":
            entry["platform"]["variant"] = "v8"  # as published indexes write it
        entries.append(entry)
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}, sort_keys=True
    ).encode()

    async def main() -> None:
        async with RegistryClient(retry=FAST_RETRY) as client:
            for img in images:
                await push_image(client, ref.with_tag(img.digest[7:19]), img, tmp_path)
            await client.put_manifest(ref, index, mt.OCI_INDEX)
            top = await client.fetch_manifest(ref)
            assert top.is_index and top.digest == _sha(index)
            assert (await client.resolve(ref)).media_type == mt.OCI_INDEX

            got = await client.fetch_image_manifest(ref, Platform.host())
            assert got.digest == host.digest
            by_plat = {str(i.platform): i.digest for i in images}
            arm64 = await client.fetch_image_manifest(ref, Platform.parse("linux/arm64"))
            assert arm64.digest == by_plat["linux/arm64"]
            arm64v8 = await client.fetch_image_manifest(ref, Platform.parse("linux/arm64/v8"))
            assert arm64v8.digest == by_plat["linux/arm64"]
            # an arm/v7 machine runs the arm/v6 image when there is no v7 one
            v7 = await client.fetch_image_manifest(ref, Platform.parse("linux/arm/v7"))
            assert v7.digest == by_plat["linux/arm/v6"]
            with pytest.raises(SourceError, match=r"no manifest for platform linux/s390x"):
                await client.fetch_image_manifest(ref, Platform.parse("linux/s390x"))
            with pytest.raises(SourceError, match=r"linux/arm/v5 \(available: "):
                await client.fetch_image_manifest(ref, Platform.parse("linux/arm/v5"))

    _run(main())


def test_basic_auth(auth_registry: Any, tmp_path: Path) -> None:
    image = busybox_image()
    ref = ImageReference.parse(f"{auth_registry.host}/private/busybox:1")
    asked: list[str] = []

    def good(host: str) -> tuple[str, str]:
        asked.append(host)
        return (USER, PASSWORD)

    async def bad(host: str) -> tuple[str, str]:
        return (USER, "wrong-password")

    async def main() -> None:
        async with RegistryClient(credentials=good, retry=FAST_RETRY) as client:
            await push_image(client, ref, image, tmp_path)
            assert (await client.resolve(ref)).digest == image.digest
        assert asked and set(asked) == {auth_registry.host}
        async with RegistryClient(credentials=bad, retry=FAST_RETRY) as client:
            with pytest.raises(SourceError, match=r"rejected the credentials of user 'alice'"):
                await client.fetch_manifest(ref)
            dest = tmp_path / "dl" / "layer"
            dest.parent.mkdir()
            with pytest.raises(SourceError, match="rejected the credentials"):
                await client.fetch_blob(ref, image.layer_digest, dest)
            assert os.listdir(dest.parent) == []
        async with RegistryClient(retry=FAST_RETRY) as client:
            with pytest.raises(SourceError, match="requires authentication and no credentials"):
                await client.resolve(ref)

    _run(main())


def test_bearer_token_auth(registry: Any, proxy_factory: Any, tmp_path: Path) -> None:
    state = ProxyState(upstream=registry.host, token_auth=True)
    front = proxy_factory(state)
    image = busybox_image()
    ref = ImageReference.parse(f"{front}/tok/busybox:1")

    async def main() -> None:
        async with RegistryClient(credentials=lambda h: (USER, PASSWORD), retry=FAST_RETRY) as c:
            await push_image(c, ref, image, tmp_path)
            manifest = await c.fetch_manifest(ref)
            assert manifest.digest == image.digest
            dest = tmp_path / "layer"
            await c.fetch_blob(ref, image.layer_digest, dest)
            assert dest.read_bytes() == image.layer
        scopes = {s for q in state.token_requests for s in q.get("scope", [])}
        assert "repository:tok/busybox:pull,push" in scopes
        assert "repository:tok/busybox:pull" in scopes
        assert all(q.get("service") == ["bk-test"] for q in state.token_requests)
        # tokens are cached: far fewer token requests than registry requests
        assert len(state.token_requests) <= 4
        async with RegistryClient(credentials=lambda h: (USER, "nope"), retry=FAST_RETRY) as c:
            with pytest.raises(SourceError, match=r"token server http://.*/token rejected user"):
                await c.fetch_manifest(ref)
        async with RegistryClient(retry=FAST_RETRY) as c:
            with pytest.raises(SourceError, match="rejected anonymous access"):
                await c.fetch_manifest(ref)

    _run(main())


def test_corrupted_blob_rejected_nothing_written(registry: Any, tmp_path: Path) -> None:
    blob = secrets.token_bytes(3 * 1024 * 1024 + 17)
    digest = _sha(blob)
    src = tmp_path / "src"
    src.write_bytes(blob)
    ref = ImageReference.parse(f"{registry.host}/test/corrupt:1")

    async def main() -> None:
        async with RegistryClient(retry=FAST_RETRY) as client:
            await client.push_blob(ref, digest, src)
            stored = registry.blob_data_path(digest)
            data = bytearray(stored.read_bytes())
            assert bytes(data) == blob
            data[len(data) // 2] ^= 0xFF
            stored.write_bytes(bytes(data))
            out = tmp_path / "out"
            out.mkdir()
            with pytest.raises(SourceError) as info:
                await client.fetch_blob(ref, digest, out / "layer", len(blob))
            msg = str(info.value)
            assert str(ref) in msg and "digest mismatch" in msg
            assert f"expected {digest}" in msg and f"got {_sha(bytes(data))}" in msg
            assert os.listdir(out) == []
            with pytest.raises(SourceError, match="digest mismatch"):
                await client.fetch_blob_bytes(ref, digest, 1 << 23)

    _run(main())


def test_retries_on_503_and_dropped_connections(
    registry: Any, proxy_factory: Any, tmp_path: Path
) -> None:
    image = busybox_image()
    ref_plain = ImageReference.parse(f"{registry.host}/test/flaky:1")
    flaky = ProxyState(upstream=registry.host, fail_first=2)
    dropping = ProxyState(upstream=registry.host, drop_first=1)
    truncating = ProxyState(upstream=registry.host, truncate_first=1)
    broken = ProxyState(upstream=registry.host, fail_first=100)
    hosts = [proxy_factory(s) for s in (flaky, dropping, truncating, broken)]
    seen: list[int] = []

    async def main() -> None:
        async with RegistryClient(retry=FAST_RETRY) as client:
            await push_image(client, ref_plain, image, tmp_path)
            for host in hosts[:3]:
                ref = ImageReference.parse(f"{host}/test/flaky:1")
                assert (await client.fetch_manifest(ref)).digest == image.digest
                dest = tmp_path / f"layer-{host.replace(':', '_')}"
                seen.clear()
                await client.fetch_blob(ref, image.layer_digest, dest, progress=seen.append)
                assert dest.read_bytes() == image.layer
                assert seen[-1] == len(image.layer)
                assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
            bad = ImageReference.parse(f"{hosts[3]}/test/flaky:1")
            with pytest.raises(SourceError, match=r"registry answered 503"):
                await client.fetch_manifest(bad)

    _run(main())
    assert flaky.failures == 4  # two 503s for the manifest GET, two for the blob GET
    assert dropping.failures == 2
    assert truncating.failures == 2  # a half manifest and a half layer, both fetched again
    assert broken.failures == FAST_RETRY.attempts  # bounded: gave up after the policy's attempts


def test_docker_schema2_and_manifest_list(registry: Any, tmp_path: Path) -> None:
    image = busybox_image()
    config = image.config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": Descriptor(mt.DOCKER_CONFIG, _sha(config), len(config)).to_json(),
            "layers": [
                Descriptor(mt.DOCKER_LAYER_GZIP, image.layer_digest, len(image.layer)).to_json()
            ],
        }
    ).encode()
    other = make_image(Platform("linux", "ppc64le"), {})
    entries = [
        Descriptor(mt.DOCKER_MANIFEST, _sha(manifest), len(manifest), image.platform).to_json(),
        Descriptor(mt.OCI_MANIFEST, other.digest, len(other.manifest), other.platform).to_json(),
    ]
    mlist = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": entries}
    ).encode()
    ref = ImageReference.parse(f"{registry.host}/test/docker:1")

    async def main() -> None:
        async with RegistryClient(retry=FAST_RETRY) as client:
            await push_image(client, ref.with_tag("ppc"), other, tmp_path)
            await push_image(client, ref.with_tag("oci"), image, tmp_path)
            await client.put_manifest(ref, manifest, mt.DOCKER_MANIFEST, tag="schema2")
            await client.put_manifest(ref, mlist, mt.DOCKER_MANIFEST_LIST)
            desc = await client.resolve(ref)
            assert (desc.media_type, desc.digest) == (mt.DOCKER_MANIFEST_LIST, _sha(mlist))
            got = await client.fetch_image_manifest(ref, Platform.host())
            assert (got.media_type, got.data) == (mt.DOCKER_MANIFEST, manifest)
            ppc = await client.fetch_image_manifest(ref, Platform.parse("linux/ppc64le"))
            assert (ppc.media_type, ppc.digest) == (mt.OCI_MANIFEST, other.digest)
            single = await client.resolve(ref.with_tag("schema2"))
            assert (single.media_type, single.digest) == (mt.DOCKER_MANIFEST, _sha(manifest))

    _run(main())


def test_registry_token_auth(token_registry: Any, tmp_path: Path) -> None:
    """The registry itself checks the RS256 tokens our token server signs."""
    registry_, tokens = token_registry, token_registry.tokens
    image = busybox_image()
    ref = ImageReference.parse(f"{registry_.host}/tok/busybox:1")

    async def main() -> None:
        async with RegistryClient(credentials=lambda h: (USER, PASSWORD), retry=FAST_RETRY) as c:
            await push_image(c, ref, image, tmp_path)
            assert (await c.resolve(ref)).digest == image.digest
            dest = tmp_path / "layer"
            await c.fetch_blob(ref, image.layer_digest, dest, len(image.layer))
            assert dest.read_bytes() == image.layer
        scopes = {s for q in tokens.requests for s in q.get("scope", [])}
        assert {"repository:tok/busybox:pull,push", "repository:tok/busybox:pull"} <= scopes
        async with RegistryClient(credentials=lambda h: (USER, "bad"), retry=FAST_RETRY) as c:
            with pytest.raises(SourceError, match=r"token server .* rejected user 'alice'"):
                await c.resolve(ref)

    _run(main())
