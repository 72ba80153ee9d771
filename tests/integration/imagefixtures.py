"""Deterministic test images and the servers the integration tests run (not a test module).

``conftest.py`` puts this directory on ``sys.path`` and exposes everything here through
fixtures (``images``, ``registry``, ``auth_registry``, ``token_registry``, ``git_server``,
``http_server``); a test module may also ``import imagefixtures`` for the types and helpers.

Images are built in memory, byte for byte the same on every run: sorted PAX tar entries owned
by root with mtime 0, gzip with mtime 0 at level 6, sorted JSON. The busybox-static base has
``/bin/busybox`` and applet links, ``/etc/passwd`` and ``/etc/group`` (root, nobody and
``bkuser`` 1000:1000 in group ``bkgroup``), ``/home/bkuser`` owned by 1000:1000, ``/tmp``
mode 1777 and empty ``/dev``, ``/proc``, ``/sys``, ``/root``. A multi-platform index gets one
marker image per platform (``/etc/arch`` holds the platform string) and, for the host
platform, the busybox base underneath the marker.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import gzip
import hashlib
import http.server
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "cat", "echo", "date", "ls", "mkdir", "true", "id", "whoami", "stat", "env")
#: Credentials of the htpasswd registry and of the token server.
USER, PASSWORD = "alice", "s3cret-pw"
#: The unprivileged user of the fixture images.
BKUSER_UID = BKUSER_GID = 1000

PASSWD = (
    b"root:x:0:0:root:/root:/bin/sh\n"
    b"nobody:x:65534:65534:nobody:/:/bin/false\n"
    b"bkuser:x:1000:1000:bk test user:/home/bkuser:/bin/sh\n"
)
GROUP = b"root:x:0:\nnogroup:x:65534:\nbkgroup:x:1000:bkuser\n"

#: name -> (kind, content or link target, mode[, uid, gid]); kind "d" dir, "f" file, "l"
#: symlink, "h" hard link (content = target name).
Entry = tuple[Any, ...]
Files = dict[str, Entry]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    """Whether a listener could bind ``port`` on loopback (SO_REUSEADDR like Go's
    listeners, so TIME_WAIT connections of an earlier server do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# -- layers and images ------------------------------------------------------------------------
def layer_tar(files: Files) -> bytes:
    """An uncompressed layer tar of ``files``: sorted, mtime 0, root-owned unless given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            kind, content, mode, *owner = files[name]
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 0, mode
            info.uid, info.gid = (owner[0], owner[1]) if owner else (0, 0)
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind in ("l", "h"):
                info.type = tarfile.SYMTYPE if kind == "l" else tarfile.LNKTYPE
                info.linkname = str(content)
                tar.addfile(info)
            else:
                data = content if isinstance(content, bytes) else str(content).encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return out.getvalue()


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _platform_json(plat: Any) -> dict[str, str]:
    """``{"architecture", "os"[, "variant"]}`` of a ``bkcore.llb.platforms.Platform`` or a
    ``os/arch[/variant]`` string."""
    if isinstance(plat, str):
        os_, arch, *variant = plat.split("/")
    else:
        os_, arch, variant = plat.os, plat.architecture, [plat.variant] if plat.variant else []
    out = {"architecture": arch, "os": os_}
    if variant and variant[0]:
        out["variant"] = variant[0]
    return out


def _desc(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data), **extra}


@dataclass
class FixtureImage:
    """One image manifest with its config and gzip layers, all as bytes."""

    platform: Any  # bkcore.llb.platforms.Platform
    layers: list[bytes]  # gzip blobs
    diff_ids: list[str]
    config: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha(self.config)

    @property
    def layer_digests(self) -> list[str]:
        return [sha(layer) for layer in self.layers]

    # single-layer conveniences
    @property
    def layer(self) -> bytes:
        return self.layers[0]

    @property
    def layer_digest(self) -> str:
        return sha(self.layers[0])

    @property
    def diff_id(self) -> str:
        return self.diff_ids[0]

    @property
    def size(self) -> int:
        """Bytes the registry stores for this image (manifest, config, layers)."""
        return len(self.manifest) + len(self.config) + sum(map(len, self.layers))


def make_image(
    plat: Any,
    layer_files: Iterable[Files],
    *,
    env: str = "PATH=/bin",
    config: Mapping[str, Any] | None = None,
    history: bool = False,
) -> FixtureImage:
    """An image of ``layer_files`` (one ``Files`` per layer) for platform ``plat``
    (a ``Platform`` or ``"os/arch[/variant]"``); ``config`` adds keys to the runtime
    config (``User``, ``Entrypoint``, ...)."""
    from bkcore.llb.platforms import Platform

    platform = Platform.parse(plat) if isinstance(plat, str) else plat
    layers, diff_ids = [], []
    for files in layer_files:
        tar = layer_tar(files)
        layers.append(gzip_bytes(tar))
        diff_ids.append(sha(tar))
    doc: dict[str, Any] = {
        **_platform_json(platform),
        "config": {"Env": [env], "Cmd": ["/bin/sh"], "WorkingDir": "/", **(config or {})},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    if history:
        doc["history"] = [{"created_by": "bkcore test fixture"} for _ in diff_ids]
    config_bytes = json.dumps(doc, sort_keys=True).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _desc(OCI_CONFIG, config_bytes),
            "layers": [_desc(OCI_LAYER_GZIP, blob) for blob in layers],
        },
        sort_keys=True,
    ).encode()
    return FixtureImage(platform, layers, diff_ids, config_bytes, manifest)


def etc_files() -> Files:
    """``/etc/passwd``, ``/etc/group``, ``/home/bkuser`` (1000:1000) and ``/tmp`` (1777)."""
    return {
        "etc": ("d", b"", 0o755),
        "etc/passwd": ("f", PASSWD, 0o644),
        "etc/group": ("f", GROUP, 0o644),
        "home": ("d", b"", 0o755),
        "home/bkuser": ("d", b"", 0o755, BKUSER_UID, BKUSER_GID),
        "tmp": ("d", b"", 0o1777),
    }


def busybox_files(applets: Iterable[str] = APPLETS) -> Files:
    """The busybox-static base layer: ``/bin/busybox``, applet links, :func:`etc_files` and,
    as in Docker Hub's busybox, empty ``/dev``, ``/proc``, ``/sys`` and ``/root`` (so a
    container's runtime mount points are not new directories of an exec's output)."""
    files: Files = {
        "bin": ("d", b"", 0o755),
        "bin/busybox": ("f", BUSYBOX.read_bytes(), 0o755),
        "dev": ("d", b"", 0o755),
        "proc": ("d", b"", 0o555),
        "root": ("d", b"", 0o700),
        "sys": ("d", b"", 0o555),
        **etc_files(),
    }
    for applet in applets:
        files[f"bin/{applet}"] = ("l", "busybox", 0o777)
    return files


def busybox_image(plat: Any = None, *extra_layers: Files, **options: Any) -> FixtureImage:
    """The busybox-static image for ``plat`` (default: the host), ``extra_layers`` on top."""
    from bkcore.llb.platforms import Platform

    return make_image(plat or Platform.host(), [busybox_files(), *extra_layers], **options)


def marker_files(plat: str) -> Files:
    return {"etc": ("d", b"", 0o755), "etc/arch": ("f", plat.encode(), 0o644)}


def index_of(images: Mapping[str, FixtureImage]) -> bytes:
    """An OCI index of ``images`` (platform string -> image), entries in the given order."""
    entries = [
        _desc(OCI_MANIFEST, image.manifest, platform=_platform_json(plat))
        for plat, image in images.items()
    ]
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, sort_keys=True
    ).encode()


def multiplatform_images(
    platforms: Iterable[str] = ("linux/amd64", "linux/arm64"),
) -> dict[str, FixtureImage]:
    """One image per platform with ``/etc/arch`` naming it; the host platform's image also
    has the busybox base below the marker (so it can run an exec)."""
    from bkcore.llb.platforms import Platform

    host = str(Platform.host())
    out = {}
    for plat in platforms:
        base = [busybox_files()] if plat == host else []
        out[plat] = make_image(plat, [*base, marker_files(plat)])
    return out


# -- pushing ----------------------------------------------------------------------------------
async def push_async(
    host: str,
    name: str,
    images: list[FixtureImage],
    workdir: Path,
    *,
    index: bytes | None = None,
    credentials: tuple[str, str] | None = None,
) -> None:
    """Push ``images`` (and ``index`` under ``name``'s tag) to the registry at ``host``
    with bkcore's own client; with an index each manifest is pushed by digest."""
    from bkcore.registry_client import ImageReference, RegistryClient

    ref = ImageReference.parse(f"{host}/{name}")
    workdir.mkdir(parents=True, exist_ok=True)
    creds = (lambda _host: credentials) if credentials else None
    async with RegistryClient(credentials=creds) as client:
        for image in images:
            for blob in [*image.layers, image.config]:
                path = workdir / sha(blob).replace(":", "-")
                path.write_bytes(blob)
                await client.push_blob(ref, sha(blob), path)
            tag = image.digest if index is not None else None
            await client.put_manifest(ref, image.manifest, OCI_MANIFEST, tag)
        if index is not None:
            await client.put_manifest(ref, index, OCI_INDEX)


def _run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, 300))


class Images:
    """The ``images`` fixture: build deterministic images and push them to a registry
    fixture (anything with ``.host``; its ``.credentials`` are used when it has some)."""

    BUSYBOX = BUSYBOX
    PASSWD = PASSWD
    GROUP = GROUP
    make_image = staticmethod(make_image)
    busybox_files = staticmethod(busybox_files)
    busybox_image = staticmethod(busybox_image)
    etc_files = staticmethod(etc_files)
    marker_files = staticmethod(marker_files)
    multiplatform_images = staticmethod(multiplatform_images)
    index_of = staticmethod(index_of)
    sha = staticmethod(sha)

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._pushes = 0

    def _dir(self) -> Path:
        self._pushes += 1
        return self.workdir / f"push-{self._pushes}"

    def push(self, registry: Any, name: str, image: FixtureImage) -> str:
        """Push ``image`` as ``host/name`` (``name`` with tag); returns the reference."""
        creds = getattr(registry, "credentials", None)
        _run(push_async(registry.host, name, [image], self._dir(), credentials=creds))
        return f"{registry.host}/{name}"

    def push_index(
        self, registry: Any, name: str, images: Mapping[str, FixtureImage]
    ) -> tuple[str, str]:
        """Push a multi-platform index of ``images`` (platform -> image) as ``host/name``;
        returns the reference and the index digest."""
        index = index_of(images)
        creds = getattr(registry, "credentials", None)
        run = push_async(
            registry.host, name, list(images.values()), self._dir(), index=index, credentials=creds
        )
        _run(run)
        return f"{registry.host}/{name}", sha(index)


# -- docker-registry ----------------------------------------------------------------------------
REGISTRY_BIN = shutil.which("docker-registry")


@dataclass
class RegistryServer:
    host: str  # 127.0.0.1:PORT
    storage: Path
    credentials: tuple[str, str] | None = None  # what pushes to it need, if anything
    tokens: TokenServer | None = None  # the token server, for a registry with token auth

    def blob_data_path(self, digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / algo / hexd[:2] / hexd / "data"


def wait_registry(host: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # 401 from an auth-enabled registry: it is up
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("docker-registry did not start within 20 s")


def plain_registry_problem(host: str) -> str:
    """ "" when ``host`` answers like a registry without auth (``GET /v2/`` is 200 with the
    ``Docker-Distribution-API-Version`` header), else what is wrong."""
    try:
        with urllib.request.urlopen(f"http://{host}/v2/", timeout=5) as resp:
            if resp.headers.get("Docker-Distribution-API-Version", "").startswith("registry/2"):
                return ""
            return "it does not answer GET /v2/ like a registry"
    except urllib.error.HTTPError as exc:
        return f"it answers GET /v2/ with {exc.code} (auth?), not 200"
    except OSError as exc:
        return f"it does not answer HTTP ({exc})"


def start_registry_process(
    base: Path, host: str, auth_yaml: str = ""
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``docker-registry serve`` listening on ``host`` with storage under ``base``;
    returns the process (up and answering) and the storage directory."""
    assert REGISTRY_BIN is not None
    storage = base / "storage"
    storage.mkdir(parents=True)
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}\n{auth_yaml}"
    )
    log = base / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_registry(host, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, storage


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line (``htpasswd -Bbn``; Debian's apache2-utils)."""
    tool = shutil.which("htpasswd")
    if tool is None:
        raise FileNotFoundError("htpasswd not installed (apt-get install apache2-utils)")
    out = subprocess.run(
        [tool, "-Bbn", user, password], check=True, capture_output=True, text=True
    ).stdout
    return out.strip()


# -- the registry's token server (RS256 JWTs with an x5c chain the registry trusts) ----------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Issues the bearer tokens of ``docker-registry``'s ``auth: token:`` mode.

    Basic credentials ``USER``/``PASSWORD`` are required; the token grants every scope asked
    for (``access`` claims), signed RS256 with a throw-away key whose self-signed certificate
    is the registry's ``rootcertbundle`` and travels in the JWT header (``x5c``).
    """

    realm: str
    key: Path
    cert: Path
    cert_der: bytes
    service: str = "bk-test"
    issuer: str = "bk-test-issuer"
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    _httpd: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def create(cls, workdir: Path) -> TokenServer:
        """Make the key and certificate (``openssl``) and start serving on a free port."""
        if shutil.which("openssl") is None:
            raise FileNotFoundError("openssl not installed (needed to sign registry tokens)")
        workdir.mkdir(parents=True, exist_ok=True)
        key, cert = workdir / "token.key", workdir / "token.pem"
        req = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        req += ["-subj", "/CN=bk-test-token", "-keyout", str(key), "-out", str(cert)]
        subprocess.run(req, check=True, capture_output=True)
        der = subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        port = free_port()
        server = cls(f"http://127.0.0.1:{port}/token", key, cert, der)
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _token_handler(server))
        httpd.daemon_threads = True
        server._httpd = httpd
        server._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        server._thread.start()
        return server

    def auth_yaml(self) -> str:
        return (
            f"auth:\n  token:\n    realm: {self.realm}\n    service: {self.service}\n"
            f"    issuer: {self.issuer}\n    rootcertbundle: {self.cert}\n"
        )

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        head = b64url(json.dumps(header).encode())
        signing_input = f"{head}.{b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{b64url(sig)}"

    def claims(self, query: dict[str, list[str]]) -> dict[str, Any]:
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        return {
            "iss": self.issuer,
            "sub": USER,
            "aud": query.get("service", [""])[0],
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


def _token_handler(server: TokenServer) -> type[http.server.BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            server.requests.append(query)
            if self.headers.get("Authorization") != expected:
                body, code = b'{"details":"bad credentials"}', 401
            else:
                token = server.sign(server.claims(query))
                body, code = json.dumps({"token": token, "expires_in": 300}).encode(), 200
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


# -- git: a bare repository over git daemon and the file transport -----------------------------
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
}


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}
    argv = ["git", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always", *args]
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


@dataclass
class GitRepo:
    """A working repository ``work`` pushed to the bare ``bare`` that ``git_server``
    serves as ``url`` (git daemon) and ``file_url``."""

    name: str
    work: Path
    bare: Path
    url: str
    file_url: str

    def commit(
        self, files: Mapping[str, str | bytes], message: str = "commit", branch: str = "main"
    ) -> str:
        """Write ``files`` on ``branch`` (created from the current HEAD when new), commit,
        push; returns the commit ID."""
        current = git("symbolic-ref", "--short", "HEAD", cwd=self.work)
        if branch != current:
            known = git("branch", "--list", branch, cwd=self.work)
            git("checkout", "-q", *([] if known else ["-b"]), branch, cwd=self.work)
        for rel, content in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        git("add", "-A", ".", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        git("push", "-q", "origin", branch, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def tag(self, name: str, *, message: str | None = None, ref: str = "HEAD") -> str:
        """Tag ``ref`` (annotated with ``message``), push; returns the tagged commit."""
        extra = ["-a", "-m", message] if message is not None else []
        git("tag", *extra, name, ref, cwd=self.work)
        git("push", "-q", "origin", f"refs/tags/{name}", cwd=self.work)
        return git("rev-parse", f"{name}^{{commit}}", cwd=self.work)

    def add_submodule(
        self, other: GitRepo, path: str, message: str = "submodule", *, url: str | None = None
    ) -> str:
        """Add ``other`` as a submodule at ``path``, commit, push; returns the commit. The
        submodule URL is ``other.url`` (git daemon) unless ``url`` is given: bkcore refuses
        file:// submodules of a network remote."""
        git("submodule", "add", "-q", url or other.url, path, cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        git("push", "-q", "origin", "HEAD", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@dataclass
class GitServer:
    """``git daemon --export-all`` over a directory of bare repositories, on loopback."""

    base: Path  # served directory (bare repositories)
    workdir: Path  # working repositories
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, root: Path) -> GitServer:
        if shutil.which("git") is None:
            raise FileNotFoundError("git not installed")
        base, workdir = root / "served", root / "work"
        base.mkdir(parents=True)
        workdir.mkdir()
        server = cls(base, workdir, free_port())
        server.proc = subprocess.Popen(
            ["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={base}",
             "--listen=127.0.0.1", f"--port={server.port}", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            if server.proc.poll() is not None:
                err = server.proc.stderr.read().decode() if server.proc.stderr else ""
                raise RuntimeError(f"git daemon exited: {err.strip()}")
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    server.stop()
                    raise RuntimeError("git daemon did not come up within 10 s") from None
                time.sleep(0.05)
        return server

    def repo(self, name: str, files: Mapping[str, str | bytes] | None = None) -> GitRepo:
        """A new repository ``name`` (served as ``NAME.git``) with a first commit of
        ``files`` on ``main`` (an empty README when none are given)."""
        bare = self.base / f"{name}.git"
        work = self.workdir / name
        git("init", "-q", "--bare", str(bare), cwd=self.workdir)
        git("init", "-q", "-b", "main", str(work), cwd=self.workdir)
        git("remote", "add", "origin", str(bare), cwd=work)
        repo = GitRepo(
            name, work, bare, f"git://127.0.0.1:{self.port}/{name}.git", f"file://{bare}"
        )
        repo.commit(files or {"README.md": f"# {name}\n"}, "initial")
        git("symbolic-ref", "HEAD", "refs/heads/main", cwd=bare)
        return repo

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- a small HTTP file server with ETag / Last-Modified / conditional GET ------------------------
@dataclass
class HTTPServer:
    """Serves ``files`` (URL path -> bytes) from memory; ``requests`` records every request
    as (method, path, headers). Answers ``If-None-Match`` / ``If-Modified-Since`` with 304."""

    url: str  # http://127.0.0.1:PORT
    files: dict[str, bytes] = field(default_factory=dict)
    modified: dict[str, float] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    _httpd: http.server.ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def put(self, path: str, data: bytes, mtime: float = 1577836800.0) -> str:
        """Serve ``data`` at ``path``; returns its full URL."""
        self.files[path] = data
        self.modified[path] = mtime
        return self.url + path

    @staticmethod
    def etag(data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'

    @classmethod
    def start(cls) -> HTTPServer:
        port = free_port()
        server = cls(f"http://127.0.0.1:{port}")
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _file_handler(server))
        httpd.daemon_threads = True
        server._httpd = httpd
        server._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        server._thread.start()
        return server

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


def _file_handler(server: HTTPServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self, body: bool) -> None:
            path = urlsplit(self.path).path
            server.requests.append((self.command, path, dict(self.headers.items())))
            data = server.files.get(path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag = HTTPServer.etag(data)
            modified = email.utils.formatdate(server.modified[path], usegmt=True)
            match = self.headers.get("If-None-Match")
            since = self.headers.get("If-Modified-Since")
            not_modified = (
                match is not None and etag in [m.strip() for m in match.split(",")]
            ) or (match is None and since is not None and since == modified)
            self.send_response(304 if not_modified else 200)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            if not_modified:
                self.end_headers()
                return
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve(True)

        def do_HEAD(self) -> None:
            self._serve(False)

    return Handler
