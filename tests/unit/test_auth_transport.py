"""Registry auth and mirrors in the transport, against an in-memory registry (httpx mock).

Basic and bearer challenges, wrong credentials as one line, tokens kept per session (a
second session never rides on the first one's token), identity tokens through the OAuth2
POST, mirrors tried in order for pulls only, one connection pool for many sessions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx
import pytest

from bkcore.errors import SourceError
from bkcore.registry_client import (
    AuthState,
    Connections,
    HostOptions,
    ImageReference,
    RegistryClient,
)
from bkcore.registry_client import mediatypes as mt

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
USER, PASSWORD = "alice", "s3cret-pw"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class FakeRegistry:
    """A registry answering every host it is asked as; records (host, method, path)."""

    scheme: str = "basic"  # "basic", "bearer" or "none"
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    down: set[str] = field(default_factory=set)
    missing: dict[str, set[str]] = field(default_factory=dict)  # host -> paths answering 404

    def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.netloc.decode()
        path = request.url.path
        self.seen.append((host, request.method, path))
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if host == "auth.test":
            return self.token(request)
        auth = request.headers.get("Authorization", "")
        if self.scheme == "basic" and auth != basic(USER, PASSWORD):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        if self.scheme == "bearer" and auth.removeprefix("Bearer ") not in self.tokens:
            challenge = 'Bearer realm="https://auth.test/token",service="fake"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if path in self.missing.get(host, set()):
            return httpx.Response(404)
        if request.method == "PUT":
            return httpx.Response(201, headers={"Docker-Content-Digest": DIGEST})
        headers = {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": DIGEST}
        return httpx.Response(200, headers=headers, content=MANIFEST)

    def token(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            form = parse_qs(request.content.decode())
            self.token_requests.append(form)
            if form.get("refresh_token") != ["identity-xyz"]:
                return httpx.Response(401)
            token = f"tok{len(self.tokens)}"
            self.tokens[token] = "identity"
            return httpx.Response(200, json={"access_token": token, "expires_in": 300})
        query = parse_qs(request.url.query.decode())
        self.token_requests.append(query)
        if request.headers.get("Authorization") != basic(USER, PASSWORD):
            return httpx.Response(401)
        token = f"tok{len(self.tokens)}"
        self.tokens[token] = USER
        return httpx.Response(200, json={"token": token, "expires_in": 300})


def connections(fake: FakeRegistry, hosts: dict[str, HostOptions] | None = None) -> Connections:
    return Connections(hosts, transport=httpx.MockTransport(fake.handler))


def creds_of(answer: tuple[str, str] | None, asked: list[str]) -> Callable[[str], object]:
    async def credentials(host: str) -> tuple[str, str] | None:
        asked.append(host)
        return answer

    return credentials


REF = ImageReference.parse("reg.test:5000/team/app:1")


def test_basic_auth_asks_lazily_and_once_per_host() -> None:
    fake = FakeRegistry("basic")
    asked: list[str] = []

    async def main() -> None:
        conns = connections(fake)
        client = RegistryClient(
            connections=conns, auth=AuthState(creds_of((USER, PASSWORD), asked))
        )
        assert (await client.fetch_manifest(REF)).digest == DIGEST
        assert (await client.resolve(REF)).digest == DIGEST
        await conns.aclose()

    asyncio.run(main())
    assert asked == ["reg.test:5000"]  # the host as dialled, asked once
    # first request anonymous, then authenticated ones only
    assert [m for _, m, _ in fake.seen] == ["GET", "GET", "HEAD"]


def test_wrong_password_is_one_line_without_the_secret() -> None:
    fake = FakeRegistry("basic")

    async def main() -> None:
        conns = connections(fake)
        client = RegistryClient(connections=conns, auth=AuthState(creds_of((USER, "bad-pw"), [])))
        with pytest.raises(SourceError) as info:
            await client.fetch_manifest(REF)
        await conns.aclose()
        message = str(info.value)
        assert message == (
            "reg.test:5000/team/app:1: authentication failed (401 Unauthorized): "
            "reg.test:5000 rejected the credentials of user 'alice'"
        )
        assert "bad-pw" not in message

    asyncio.run(main())


def test_no_credentials_for_a_basic_registry() -> None:
    fake = FakeRegistry("basic")

    async def main() -> None:
        conns = connections(fake)
        client = RegistryClient(connections=conns, auth=AuthState(creds_of(("", ""), [])))
        with pytest.raises(SourceError, match="requires authentication and no credentials"):
            await client.fetch_manifest(REF)
        await conns.aclose()

    asyncio.run(main())


def test_bearer_tokens_are_per_session_and_reused_within_one() -> None:
    fake = FakeRegistry("bearer")

    async def main() -> None:
        conns = connections(fake)
        good = AuthState(creds_of((USER, PASSWORD), []))
        shared = RegistryClient(connections=conns)
        one = shared.with_auth(good)
        for _ in range(3):
            await one.fetch_manifest(REF)
        await shared.with_auth(good).resolve(REF)  # another op of the same session
        assert len(fake.token_requests) == 1
        assert fake.token_requests[0]["scope"] == ["repository:team/app:pull"]
        assert fake.token_requests[0]["service"] == ["fake"]

        # Another session with a wrong password gets no token, though one is cached.
        other = shared.with_auth(AuthState(creds_of((USER, "nope"), [])))
        with pytest.raises(SourceError) as info:
            await other.fetch_manifest(REF)
        assert str(info.value) == (
            "reg.test:5000/team/app:1: authentication failed (401 Unauthorized): "
            "token server https://auth.test/token rejected user 'alice'"
        )
        # Anonymous session: refused as anonymous.
        anon = shared.with_auth(AuthState(None))
        with pytest.raises(SourceError, match="rejected anonymous access"):
            await anon.fetch_manifest(REF)
        await one.aclose()  # a derived client leaves the shared connections open
        assert conns.clients_made == 1
        await conns.aclose()

    asyncio.run(main())


def test_identity_token_uses_the_oauth2_post() -> None:
    fake = FakeRegistry("bearer")

    async def main() -> None:
        conns = connections(fake)
        client = RegistryClient(
            connections=conns, auth=AuthState(creds_of(("", "identity-xyz"), []))
        )
        assert (await client.fetch_manifest(REF)).digest == DIGEST
        url = "https://reg.test:5000/v2/team/app/blobs/uploads/"
        extra = ("repository:other/base:pull",)  # as a cross-repository mount asks
        resp = await client._t.request(REF, "GET", url, actions="pull,push", extra_scopes=extra)
        await resp.aclose()
        await conns.aclose()

    asyncio.run(main())
    first, second = fake.token_requests
    assert first["grant_type"] == ["refresh_token"]
    assert first["client_id"] == ["buildkit-client"]
    assert first["scope"] == ["repository:team/app:pull"]
    assert first["service"] == ["fake"]
    # OAuth2 form: one space-separated scope parameter
    assert second["scope"] == ["repository:team/app:pull,push repository:other/base:pull"]


def test_docker_hub_credentials_are_asked_for_the_api_host() -> None:
    fake = FakeRegistry("basic")
    asked: list[str] = []

    async def main() -> None:
        conns = connections(fake)
        client = RegistryClient(
            connections=conns, auth=AuthState(creds_of((USER, PASSWORD), asked))
        )
        await client.fetch_manifest(ImageReference.parse("busybox"))
        await conns.aclose()

    asyncio.run(main())
    assert asked == ["registry-1.docker.io"]
    assert fake.seen[0][0] == "registry-1.docker.io"


def test_mirrors_in_order_for_pulls_then_the_origin() -> None:
    fake = FakeRegistry("none")
    fake.down.add("down.test")
    manifests = "/v2/team/app/manifests/"
    fake.missing["m.test:5000"] = {manifests + "2"}
    hosts = {"reg.test:5000": HostOptions(mirrors=("down.test", "m.test:5000"))}

    async def main() -> None:
        conns = connections(fake, hosts)
        client = RegistryClient(connections=conns)
        await client.fetch_manifest(REF)  # the first mirror is down, the second has it
        hits = [(h, p) for h, _, p in fake.seen]
        assert hits == [("down.test", manifests + "1"), ("m.test:5000", manifests + "1")]
        fake.seen.clear()
        await client.fetch_manifest(REF.with_tag("2"))  # not on the mirror: the origin
        assert [h for h, _, _ in fake.seen] == ["down.test", "m.test:5000", "reg.test:5000"]
        fake.seen.clear()
        await client.put_manifest(REF, MANIFEST, mt.OCI_MANIFEST)  # pushes skip mirrors
        assert [(h, m) for h, m, _ in fake.seen] == [("reg.test:5000", "PUT")]
        await conns.aclose()

    asyncio.run(main())


def test_a_mirror_has_its_own_host_options_and_credentials() -> None:
    fake = FakeRegistry("basic")
    urls: list[str] = []
    handler = fake.handler

    def recording(request: httpx.Request) -> httpx.Response:
        urls.append(f"{request.url.scheme}://{request.url.netloc.decode()}")
        return handler(request)

    hosts = {
        "reg.test:5000": HostOptions(mirrors=("m.lan:5000",)),
        "m.lan:5000": HostOptions(http=True),
    }
    asked: list[str] = []

    async def main() -> None:
        conns = Connections(hosts, transport=httpx.MockTransport(recording))
        auth = AuthState(creds_of((USER, PASSWORD), asked))
        client = RegistryClient(connections=conns, auth=auth)
        assert (await client.fetch_manifest(REF)).digest == DIGEST
        await conns.aclose()

    asyncio.run(main())
    assert urls == ["http://m.lan:5000", "http://m.lan:5000"]  # 401, then authenticated
    assert asked == ["m.lan:5000"]  # credentials are asked for the mirror host


def test_the_token_server_is_reached_with_the_registry_tls_settings() -> None:
    fake = FakeRegistry("bearer")
    hosts = {"reg.test:5000": HostOptions(insecure=True)}

    async def main() -> None:
        conns = Connections(hosts, transport=httpx.MockTransport(fake.handler))
        client = RegistryClient(connections=conns, auth=AuthState(creds_of((USER, PASSWORD), [])))
        await client.fetch_manifest(REF)
        # auth.test has no entry: it shares the registry's (insecure) client, no second one
        assert conns.clients_made == 1
        assert len(fake.token_requests) == 1
        await conns.aclose()

    asyncio.run(main())
