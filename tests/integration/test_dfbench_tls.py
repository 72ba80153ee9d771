"""Registry connections load CA certificates only for a TLS handshake (DeferredCAContext):
a plain-HTTP registry request loads none; an HTTPS one still verifies (self-signed refused,
trusted through $SSL_CERT_FILE like httpx's default). Needs openssl."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bkcore.registry_client.transport import Connections, DeferredCAContext

pytestmark = pytest.mark.integration


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(tls: ssl.SSLContext | None) -> tuple[http.server.ThreadingHTTPServer, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Hello)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    key, crt = d / "key.pem", d / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, crt


@pytest.fixture
def https_port(cert: tuple[Path, Path]) -> Iterator[int]:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(str(cert[1]), str(cert[0]))
    server, port = _serve(tls)
    yield port
    server.shutdown()


def test_plain_http_registry_request_loads_no_ca() -> None:
    server, port = _serve(None)

    async def go() -> tuple[int, DeferredCAContext]:
        conn = Connections()
        host = f"127.0.0.1:{port}"
        assert conn.base_url(host).startswith("http://")
        client = conn.client(host)
        try:
            resp = await client.get(f"{conn.base_url(host)}/v2/")
            ctx = client._transport._pool._ssl_context  # type: ignore[attr-defined]
            assert isinstance(ctx, DeferredCAContext)
            return resp.status_code, ctx
        finally:
            await conn.aclose()

    try:
        status, ctx = asyncio.run(go())
    finally:
        server.shutdown()
    assert status == 200
    assert ctx.ca_loaded is False
    assert ctx.cert_store_stats()["x509_ca"] == 0


def test_https_still_verifies(https_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ctx = DeferredCAContext()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname

    async def go() -> None:
        async with httpx.AsyncClient(verify=ctx) as client:
            await client.get(f"https://localhost:{https_port}/")

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(go())
    assert ctx.ca_loaded  # certifi's bundle, which does not hold the self-signed cert
    assert ctx.cert_store_stats()["x509_ca"] > 0


def test_https_trusts_ssl_cert_file(
    https_port: int, cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[1]))
    ctx = DeferredCAContext()

    async def go() -> bytes:
        async with httpx.AsyncClient(verify=ctx) as client:
            resp = await client.get(f"https://localhost:{https_port}/")
            return resp.content

    assert asyncio.run(go()) == b"hello"
    assert ctx.ca_loaded
