"""Registry credentials, TLS and mirrors through `bkcore build` against Debian's
docker-registry on loopback.

* basic auth (htpasswd) with credentials from a temporary ``DOCKER_CONFIG`` (``auths``), and
  from a ``docker-credential-*`` helper put on PATH; a wrong password is one error line
  (``... authentication failed (401 Unauthorized) ...``) with nothing cached;
* token auth: the registry's ``auth: token:`` mode trusting RS256 tokens that a token server
  here signs with openssl (the approach of test_registry_client.py);
* TLS with a self-signed CA made by openssl: refused without ``ca =`` in the hosts file,
  pulled with it, and with ``insecure = true``;
* a mirror used for pulls, the origin used when the mirror lacks the image or is down;
* a broken hosts file is one error line naming the file and line.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bkcore import llb
from bkcore.cache.store import CacheStore
from bkcore.llb.platforms import Platform
from bkcore.registry_client import Descriptor, HostOptions, ImageReference, RegistryClient
from bkcore.registry_client import mediatypes as mt

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice", "correct-horse-42"
IDENTITY_TOKEN = "identity-token-from-docker-login"


# -- a one-layer image -----------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    layer: bytes
    config: bytes
    manifest: bytes

    @property
    def layer_digest(self) -> str:
        return _sha(self.layer)


def make_image(text: str) -> Image:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = text.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = buf.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as out:
        out.write(tar_bytes)
    layer = gz.getvalue()
    plat = Platform.host()
    config = json.dumps(
        {
            "architecture": plat.architecture,
            "os": plat.os,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [_sha(tar_bytes)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": Descriptor(mt.OCI_CONFIG, _sha(config), len(config)).to_json(),
            "layers": [Descriptor(mt.OCI_LAYER_GZIP, _sha(layer), len(layer)).to_json()],
        },
        sort_keys=True,
    ).encode()
    return Image(layer, config, manifest)


def push(
    host: str,
    name: str,
    image: Image,
    workdir: Path,
    credentials: Callable[[str], Any] | None = None,
    hosts: dict[str, HostOptions] | None = None,
) -> str:
    """Push ``image`` as ``host/name``; returns the reference."""
    ref = ImageReference.parse(f"{host}/{name}")
    workdir.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        async with RegistryClient(credentials=credentials, hosts=hosts) as client:
            for blob in (image.layer, image.config):
                path = workdir / _sha(blob).replace(":", "-")
                path.write_bytes(blob)
                await client.push_blob(ref, _sha(blob), path)
            await client.put_manifest(ref, image.manifest, mt.OCI_MANIFEST)

    asyncio.run(asyncio.wait_for(main(), 120))
    return f"{host}/{name}"


def good_creds(host: str) -> tuple[str, str]:
    return (USER, PASSWORD)


# -- client-side configuration -----------------------------------------------------------------
def docker_config(directory: Path, doc: dict[str, Any]) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    return {"DOCKER_CONFIG": str(directory)}


def auths(host: str, user: str, password: str) -> dict[str, Any]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"auths": {host: {"auth": encoded}}}


def hosts_file(path: Path, text: str) -> dict[str, str]:
    path.write_text(text)
    return {"BKCORE_REGISTRY_CONFIG": str(path)}


# -- checks --------------------------------------------------------------------------------------
def assert_nothing_cached(root: Path, image: Image) -> None:
    with CacheStore.open(root) as store:
        assert store.snapshots.all() == []
        assert store.keys.result_ids() == set()
        assert not store.content.has(image.layer_digest)
    for leftover in ("image-chains", "image-pull"):
        d = root / leftover
        assert not d.exists() or not list(d.iterdir())


def one_error_line(run: Any) -> str:
    assert run.returncode != 0
    lines = run.error_line().strip().splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in run.stderr
    line: str = lines[0]
    return line


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture
def basic_registry(start_registry: Any, tmp_path: Path) -> Any:
    tool = shutil.which("htpasswd")
    if tool is None:
        pytest.skip("htpasswd not installed (apt-get install apache2-utils)")
    line = subprocess.run(
        [tool, "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
    ).stdout.strip()
    path = tmp_path / "htpasswd"
    path.write_text(line + "\n")
    return start_registry("basic", htpasswd=path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Signs the RS256 tokens (x5c chain) that docker-registry's ``auth: token:`` trusts."""

    realm: str
    key: Path
    cert_der: bytes
    requests: list[dict[str, list[str]]] = field(default_factory=list)

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(sig)}"

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                server.requests.append(query)
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                ok = self.headers.get("Authorization") == expected
                self.answer(ok, query.get("scope", []), query, "token")

            def do_POST(self) -> None:
                """OAuth2 with an identity (refresh) token: one space-separated scope."""
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                server.requests.append({**form, "method": ["POST"]})
                ok = form.get("grant_type") == ["refresh_token"] and form.get("refresh_token") == [
                    IDENTITY_TOKEN
                ]
                scopes = " ".join(form.get("scope", [])).split()
                self.answer(ok, scopes, form, "access_token")

            def answer(
                self, ok: bool, scopes: list[str], query: dict[str, list[str]], field: str
            ) -> None:
                if not ok:
                    body, code = b'{"details":"bad credentials"}', 401
                else:
                    access = []
                    for scope in scopes:
                        kind, _, rest = scope.partition(":")
                        name, _, actions = rest.rpartition(":")
                        access.append({"type": kind, "name": name, "actions": actions.split(",")})
                    now = int(time.time())
                    claims = {
                        "iss": "bk-auth-issuer",
                        "sub": USER,
                        "aud": query.get("service", [""])[0],
                        "exp": now + 300,
                        "nbf": now - 10,
                        "iat": now,
                        "jti": secrets.token_hex(8),
                        "access": access,
                    }
                    body = json.dumps({field: server.sign(claims), "expires_in": 300}).encode()
                    code = 200
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def openssl(*args: str) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


@pytest.fixture
def oauth_registry(start_registry: Any, tmp_path: Path) -> Iterator[tuple[Any, TokenServer]]:
    """docker-registry with ``auth: token:`` and a token server that also takes the OAuth2
    POST of identity tokens (the shared ``token_registry`` fixture has only GET)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (needed to sign registry tokens)")
    key, cert = tmp_path / "token.key", tmp_path / "token.pem"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=bk-auth-token", "-keyout", str(key), "-out", str(cert))  # fmt: skip
    der = openssl("x509", "-in", str(cert), "-outform", "DER")
    port = _free_port()
    server = TokenServer(f"http://127.0.0.1:{port}/token", key, der)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), server.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    auth_yaml = (
        f"auth:\n  token:\n    realm: {server.realm}\n    service: bk-auth\n"
        f"    issuer: bk-auth-issuer\n    rootcertbundle: {cert}\n"
    )
    try:
        yield start_registry("token", auth_yaml=auth_yaml), server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@dataclass
class TLSRegistry:
    host: str
    ca: Path


@pytest.fixture
def tls_registry(start_registry: Any, tmp_path: Path) -> TLSRegistry:
    """docker-registry serving HTTPS on loopback with a certificate from a self-signed CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (needed for the test CA)")
    d = tmp_path / "pki"
    d.mkdir()
    ca_key, ca, key, csr, cert = (
        d / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem")
    )
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=bkcore test CA", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(key), "-out", str(csr))  # fmt: skip
    ext = d / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    # Continues the registry's http: section (the fixture writes "http:\n  addr: ...\n").
    tls = f"  tls:\n    certificate: {cert}\n    key: {key}\n"
    server = start_registry("tls", auth_yaml=tls)
    return TLSRegistry(server.host, ca)


# -- tests -----------------------------------------------------------------------------------------
def test_basic_auth_from_docker_config(bk: Any, basic_registry: Any) -> None:
    image = make_image("basic auth\n")
    ref = push(basic_registry.host, "private/hello:1", image, bk.tmp / "push", good_creds)
    env = docker_config(bk.tmp / "docker", auths(basic_registry.host, USER, PASSWORD))
    out = bk.tmp / "out"
    bk.build(llb.image(ref), out=out, env=env)
    assert (out / "hello.txt").read_text() == "basic auth\n"


def test_wrong_password_is_one_line_and_caches_nothing(bk: Any, basic_registry: Any) -> None:
    image = make_image("wrong password\n")
    ref = push(basic_registry.host, "private/hello:2", image, bk.tmp / "push", good_creds)
    env = docker_config(bk.tmp / "docker", auths(basic_registry.host, USER, "not-the-password"))
    run = bk.build(llb.image(ref), out=bk.tmp / "out", env=env, check=False)
    line = one_error_line(run)
    assert ref in line
    assert "authentication failed (401 Unauthorized)" in line
    assert f"rejected the credentials of user '{USER}'" in line
    assert "not-the-password" not in run.stderr and b"not-the-password" not in run.stdout
    assert_nothing_cached(bk.root, image)
    assert not (bk.tmp / "out" / "hello.txt").exists()

    # No credentials at all: the same registry says so in one line.
    env = docker_config(bk.tmp / "empty-docker", {})
    run = bk.build(llb.image(ref), out=bk.tmp / "out", env=env, check=False)
    line = one_error_line(run)
    assert ref in line and "requires authentication and no credentials" in line
    assert_nothing_cached(bk.root, image)


def test_credentials_from_a_credential_helper(bk: Any, basic_registry: Any) -> None:
    image = make_image("from a helper\n")
    ref = push(basic_registry.host, "private/hello:3", image, bk.tmp / "push", good_creds)
    bin_dir = bk.tmp / "bin"
    bin_dir.mkdir()
    log = bk.tmp / "helper.log"
    helper = bin_dir / "docker-credential-bktest"
    helper.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 2\n'
        "read -r host\n"
        f'echo "$host" >> {log}\n'
        f'printf \'{{"ServerURL":"%s","Username":"{USER}","Secret":"{PASSWORD}"}}\\n\' "$host"\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    env = docker_config(bk.tmp / "docker", {"credHelpers": {basic_registry.host: "bktest"}})
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    out = bk.tmp / "out"
    bk.build(llb.image(ref), out=out, env=env)
    assert (out / "hello.txt").read_text() == "from a helper\n"
    assert log.read_text().splitlines() == [basic_registry.host]  # asked once per build


def test_token_auth(bk: Any, oauth_registry: tuple[Any, TokenServer]) -> None:
    registry, tokens = oauth_registry
    image = make_image("token auth\n")
    ref = push(registry.host, "tok/hello:1", image, bk.tmp / "push", good_creds)
    tokens.requests.clear()
    env = docker_config(bk.tmp / "docker", auths(registry.host, USER, PASSWORD))
    out = bk.tmp / "out"
    bk.build(llb.image(ref), out=out, env=env)
    assert (out / "hello.txt").read_text() == "token auth\n"
    scopes = [s for q in tokens.requests for s in q.get("scope", [])]
    assert scopes and set(scopes) == {"repository:tok/hello:pull"}
    # The token is reused by resolve and pull (of one session): one token request.
    assert len(tokens.requests) == 1

    bad = docker_config(bk.tmp / "bad-docker", auths(registry.host, USER, "wrong"))
    fresh = bk.tmp / "fresh-root"
    run = bk.build(llb.image(ref), out=bk.tmp / "out2", env=bad, root=fresh, check=False)
    line = one_error_line(run)
    assert ref in line and "authentication failed (401 Unauthorized)" in line
    assert f"token server {tokens.realm} rejected user '{USER}'" in line
    assert_nothing_cached(fresh, image)


def test_identity_token_from_a_helper(bk: Any, oauth_registry: tuple[Any, TokenServer]) -> None:
    """A helper answering Username ``<token>``: the daemon trades the identity token for
    an access token with the OAuth2 POST, and the registry accepts it."""
    registry, tokens = oauth_registry
    image = make_image("identity token\n")
    ref = push(registry.host, "tok/hello:2", image, bk.tmp / "push", good_creds)
    tokens.requests.clear()
    bin_dir = bk.tmp / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-bkid"
    answer = json.dumps({"Username": "<token>", "Secret": IDENTITY_TOKEN})
    helper.write_text(f"#!/bin/sh\nread -r host\necho '{answer}'\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    env = docker_config(bk.tmp / "docker", {"credsStore": "bkid"})
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    out = bk.tmp / "out"
    bk.build(llb.image(ref), out=out, env=env)
    assert (out / "hello.txt").read_text() == "identity token\n"
    assert [q.get("method") for q in tokens.requests] == [["POST"]]
    assert tokens.requests[0]["client_id"] == ["buildkit-client"]
    assert tokens.requests[0]["scope"] == ["repository:tok/hello:pull"]


def test_tls_registry_needs_its_ca(bk: Any, tls_registry: TLSRegistry) -> None:
    host = tls_registry.host
    opts = {host: HostOptions(http=False, ca_files=(str(tls_registry.ca),))}
    image = make_image("over tls\n")
    ref = push(host, "tls/hello:1", image, bk.tmp / "push", hosts=opts)

    # Loopback means plain HTTP by default: the TLS-only registry is named as such.
    run = bk.build(llb.image(ref), out=bk.tmp / "out", check=False,
                   env={"BKCORE_REGISTRY_CONFIG": str(bk.tmp / "none.toml")})  # fmt: skip
    line = one_error_line(run)
    assert f"{host} speaks HTTPS, not plain HTTP" in line and "http = false" in line

    # HTTPS (http = false overrides the loopback default) without the CA: refused.
    no_ca = hosts_file(bk.tmp / "no-ca.toml", f'[registry."{host}"]\nhttp = false\n')
    run = bk.build(llb.image(ref), out=bk.tmp / "out", env=no_ca, check=False)
    line = one_error_line(run)
    assert ref in line and f"TLS verification of {host} failed" in line
    assert f'ca = ["file.pem"] under [registry."{host}"]' in line
    assert_nothing_cached(bk.root, image)

    with_ca = hosts_file(
        bk.tmp / "ca.toml", f'[registry."{host}"]\nhttp = false\nca = ["{tls_registry.ca}"]\n'
    )
    out = bk.tmp / "out-ca"
    bk.build(llb.image(ref), out=out, env=with_ca)
    assert (out / "hello.txt").read_text() == "over tls\n"

    insecure = hosts_file(
        bk.tmp / "insecure.toml", f'[registry."{host}"]\nhttp = false\ninsecure = true\n'
    )
    out = bk.tmp / "out-insecure"
    bk.build(llb.image(ref), out=out, env=insecure, root=bk.tmp / "root2")
    assert (out / "hello.txt").read_text() == "over tls\n"


def test_mirror_is_used_for_pulls_and_the_origin_is_the_fallback(
    bk: Any, start_registry: Any
) -> None:
    origin, mirror = start_registry("origin"), start_registry("mirror")
    on_mirror, on_origin = make_image("from the mirror\n"), make_image("from the origin\n")
    push(mirror.host, "lib/app:1", on_mirror, bk.tmp / "push-m")
    push(origin.host, "lib/app:2", on_origin, bk.tmp / "push-o")
    down = f"127.0.0.1:{_free_port()}"  # nothing listens there
    env = hosts_file(
        bk.tmp / "mirrors.toml",
        f'[registry."{origin.host}"]\nmirrors = ["{down}", "{mirror.host}"]\n',
    )
    out = bk.tmp / "out1"
    # Only the mirror has tag 1: the build succeeds, so the pull went to the mirror.
    bk.build(llb.image(f"{origin.host}/lib/app:1"), out=out, env=env)
    assert (out / "hello.txt").read_text() == "from the mirror\n"
    # Tag 2 is only on the origin: after the mirrors fail, the origin serves it.
    out = bk.tmp / "out2"
    bk.build(llb.image(f"{origin.host}/lib/app:2"), out=out, env=env)
    assert (out / "hello.txt").read_text() == "from the origin\n"
    # Without the hosts file tag 1 does not exist at the origin.
    run = bk.build(llb.image(f"{origin.host}/lib/app:1"), out=bk.tmp / "out3", check=False,
                   env={"BKCORE_REGISTRY_CONFIG": str(bk.tmp / "none.toml")})  # fmt: skip
    assert "not found" in one_error_line(run)


def test_bad_hosts_file_is_one_line_naming_file_and_line(bk: Any, registry_host: str) -> None:
    path = bk.tmp / "registries.toml"
    env = hosts_file(path, f'[registry."{registry_host}"]\nhttp = true\nmirrors = [oops]\n')
    run = bk.build(llb.image(f"{registry_host}/x:1"), out=bk.tmp / "out", env=env, check=False)
    line = one_error_line(run)
    assert f"{path}:3: " in line, line


@pytest.fixture
def registry_host() -> str:
    return f"127.0.0.1:{_free_port()}"


def test_registry_config_in_the_config_dir(bk: Any, start_registry: Any) -> None:
    """Without the environment variable the file is <root>/config/registries.toml."""
    origin, mirror = start_registry("origin2"), start_registry("mirror2")
    image = make_image("config dir\n")
    push(mirror.host, "m/app:1", image, bk.tmp / "push")
    (bk.root / "config").mkdir(parents=True, exist_ok=True)
    (bk.root / "config" / "registries.toml").write_text(
        f'[registry."{origin.host}"]\nmirrors = ["{mirror.host}"]\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "BKCORE_REGISTRY_CONFIG"}
    out = bk.tmp / "out"
    proc = subprocess.run(
        bk.argv(out=out),
        input=bk.definition(llb.image(f"{origin.host}/m/app:1")),
        capture_output=True,
        env=env,
        cwd=bk.tmp,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert (out / "hello.txt").read_text() == "config dir\n"
