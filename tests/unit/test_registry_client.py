"""Pure parts of bkcore.registry_client: references, challenges, platform choice, hosts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bkcore.errors import SourceError
from bkcore.llb.platforms import Platform
from bkcore.registry_client import (
    HostOptions,
    ImageReference,
    RetryPolicy,
    is_loopback_host,
    parse_challenges,
    select_manifest,
)
from bkcore.registry_client.auth import call_credentials
from bkcore.registry_client.transport import Transport

D = "sha256:" + "ab" * 32


def test_reference_normalisation() -> None:
    r = ImageReference.parse("busybox")
    assert (r.domain, r.repository, r.tag, r.digest) == (
        "docker.io",
        "library/busybox",
        "latest",
        None,
    )
    assert r.endpoint_host == "registry-1.docker.io"
    assert r.object == "latest"
    r = ImageReference.parse(f"localhost:5000/team/app:v1@{D}")
    assert (r.domain, r.repository, r.tag, r.digest) == ("localhost:5000", "team/app", "v1", D)
    assert r.object == D and r.endpoint_host == "localhost:5000"
    assert str(r) == f"localhost:5000/team/app:v1@{D}"
    assert str(ImageReference.parse("index.docker.io/foo/bar")) == "docker.io/foo/bar:latest"
    with pytest.raises(SourceError, match=r"invalid image reference.*lowercase"):
        ImageReference.parse("library/BusyBox")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("registry.example.com", False),
        ("10.0.0.1:5000", False),
        ("[2001:db8::1]:443", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_scheme_per_host() -> None:
    t = Transport(
        hosts={"reg.lan:5000": HostOptions(http=True), "[::1]:1": HostOptions(http=False)}
    )
    assert t.base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert t.base_url("reg.lan:5000") == "http://reg.lan:5000"
    assert t.base_url("[::1]:1") == "https://[::1]:1"
    assert t.base_url("ghcr.io") == "https://ghcr.io"


def test_retry_backoff_is_bounded() -> None:
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=2.0)
    assert [policy.delay(i) for i in range(5)] == [0.5, 1.0, 2.0, 2.0, 2.0]


def test_parse_challenges() -> None:
    (c,) = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    }
    basic, bearer = parse_challenges('Basic realm="r e", Bearer realm=x,service="a\\"b"')
    assert basic.scheme == "basic" and basic.params == {"realm": "r e"}
    assert bearer.scheme == "bearer" and bearer.params == {"realm": "x", "service": 'a"b'}
    assert parse_challenges("") == []


def test_credentials_callback_sync_and_async() -> None:
    async def a(host: str) -> tuple[str, str]:
        return ("u", host)

    async def main() -> None:
        assert await call_credentials(None, "h") is None
        assert await call_credentials(lambda h: ("s", h), "h") == ("s", "h")
        assert await call_credentials(a, "h2") == ("u", "h2")

    asyncio.run(main())


def _entry(digest: str, os_: str, arch: str, variant: str | None = None) -> dict[str, Any]:
    plat = {"os": os_, "architecture": arch}
    if variant is not None:
        plat["variant"] = variant
    return {"mediaType": "x", "digest": digest, "size": 1, "platform": plat}


INDEX = [
    _entry("amd64", "linux", "amd64"),
    _entry("arm64", "linux", "arm64", "v8"),
    _entry("armv6", "linux", "arm", "v6"),
    _entry("armv7", "linux", "arm", "v7"),
    _entry("win", "windows", "amd64"),
    {"mediaType": "x", "digest": "attestation", "size": 1},
]


@pytest.mark.parametrize(
    ("want", "digest"),
    [
        ("linux/amd64", "amd64"),
        ("linux/x86_64", "amd64"),
        ("linux/arm64", "arm64"),
        ("linux/arm64/v8", "arm64"),
        ("linux/aarch64", "arm64"),
        ("linux/arm/v7", "armv7"),
        ("linux/arm", "armv7"),  # arm defaults to v7
        ("linux/arm/v6", "armv6"),
        ("linux/arm/v8", "armv7"),  # best compatible lower variant
        ("windows/amd64", "win"),
    ],
)
def test_select_manifest(want: str, digest: str) -> None:
    assert select_manifest(INDEX, Platform.parse(want), "ref")["digest"] == digest


def test_select_manifest_fallbacks_and_errors() -> None:
    only_v6 = [_entry("armv6", "linux", "arm", "v6"), _entry("arm64", "linux", "arm64")]
    assert select_manifest(only_v6, Platform.parse("linux/arm/v7"), "r")["digest"] == "armv6"
    assert select_manifest(only_v6, Platform.parse("linux/arm64/v8"), "r")["digest"] == "arm64"
    # no variant on the entry: runs on any variant of that architecture
    plain = [_entry("amd64", "linux", "amd64")]
    assert select_manifest(plain, Platform.parse("linux/amd64/v3"), "r")["digest"] == "amd64"
    levels = [_entry("v2", "linux", "amd64", "v2"), _entry("v4", "linux", "amd64", "v4")]
    assert select_manifest(levels, Platform.parse("linux/amd64/v3"), "r")["digest"] == "v2"
    with pytest.raises(
        SourceError, match=r"r: no manifest for platform linux/arm/v5 \(available: "
    ):
        select_manifest(only_v6, Platform.parse("linux/arm/v5"), "r")
    with pytest.raises(SourceError, match=r"available: linux/amd64/v2, linux/amd64/v4\)"):
        select_manifest(levels, Platform.parse("linux/s390x"), "r")
