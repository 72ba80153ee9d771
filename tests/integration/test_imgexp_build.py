"""The image, oci and docker exporters end to end: builds on a busybox image pulled from a
Debian ``docker-registry``, pushed back and pulled again, OCI archives read by skopeo,
docker tarballs loaded (and run) by a real dockerd 20.10, reproducible digests with
SOURCE_DATE_EPOCH, and failures that leave no tag and no file behind.

The busybox test image is made here (with ``--import-mode=importlib`` test modules cannot
import each other): one deterministic gzip layer pushed with bkcore's registry client.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bkcore import llb
from bkcore.llb.platforms import Platform
from bkcore.registry_client import Descriptor, ImageReference, RegistryClient
from bkcore.registry_client import mediatypes as mt

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "cat", "echo", "ls", "mkdir", "touch", "true")
DOCKER = "/usr/bin/docker"  # the 20.10 client matching Debian's dockerd
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
SKOPEO = shutil.which("skopeo")
EPOCH = 1_000_000_000  # 2001-09-09T01:46:40Z
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- a busybox image in the test registry -------------------------------------------------------
def busybox_layer() -> bytes:
    if not BUSYBOX.exists():
        pytest.skip("busybox-static (/bin/busybox) not installed")
    buf = io.BytesIO()
    entries: list[tuple[str, str, bytes | str, int]] = [
        ("bin", "d", b"", 0o755),
        ("bin/busybox", "f", BUSYBOX.read_bytes(), 0o755),
        ("etc", "d", b"", 0o755),
        ("etc/group", "f", b"root:x:0:\n", 0o644),
        ("etc/passwd", "f", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("tmp", "d", b"", 0o1777),
    ]
    entries += [(f"bin/{a}", "l", "busybox", 0o777) for a in APPLETS]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, content, mode in sorted(entries):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, 946684800
            if kind == "d":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "l":
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                tar.addfile(info)
            else:
                assert isinstance(content, bytes)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


async def _push_base(host: str, workdir: Path) -> tuple[str, str]:
    tar = busybox_layer()
    layer = gzip.compress(tar, compresslevel=6, mtime=0)
    plat = Platform.host()
    config = json.dumps(
        {
            "architecture": plat.architecture,
            "os": plat.os,
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
            "created": "2000-01-01T00:00:00Z",
            "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "busybox layer"}],
            "rootfs": {"type": "layers", "diff_ids": [sha(tar)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": Descriptor(mt.DOCKER_CONFIG, sha(config), len(config)).to_json(),
            "layers": [Descriptor(mt.DOCKER_LAYER_GZIP, sha(layer), len(layer)).to_json()],
        }
    ).encode()
    ref = ImageReference.parse(f"{host}/library/busybox:latest")
    async with RegistryClient() as client:
        for blob in (layer, config):
            path = workdir / sha(blob).replace(":", "-")
            path.write_bytes(blob)
            await client.push_blob(ref, sha(blob), path)
        await client.put_manifest(ref, manifest, mt.DOCKER_MANIFEST)
    return str(ref), sha(layer)


@pytest.fixture
def registry(start_registry: Any) -> Any:
    return start_registry()


@pytest.fixture
def base(registry: Any, tmp_path: Path) -> tuple[str, str]:
    """(reference, layer digest) of the busybox image in ``registry``."""
    workdir = tmp_path / "push"
    workdir.mkdir()
    return asyncio.run(asyncio.wait_for(_push_base(registry.host, workdir), 120))


# -- builds -------------------------------------------------------------------------------------
def app_graph(ref: str) -> Any:
    """A file step and an exec step on the pulled image (two build layers)."""
    st = llb.image(ref).file(llb.mkdir("/app", 0o755), custom_name="mkdir /app")
    return st.sh("echo hi > /hello && touch /app/x", custom_name="write hello")


def build(bk: Any, graph: Any, *outputs: str, env: dict[str, str] | None = None, **kw: Any) -> Any:
    """``bkcore build`` (subprocess) with raw ``--output`` values; returns the BuildRun."""
    argv = bk.argv(**kw)
    for output in outputs:
        argv += ["--output", output]
    proc = subprocess.run(
        argv,
        input=bk.definition(graph),
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=180,
        check=False,
        cwd=bk.tmp,
    )
    return proc


def ok(proc: Any) -> Any:
    err = proc.stderr.decode(errors="replace")
    lines = [ln for ln in err.splitlines() if not ln.startswith("{")]
    assert proc.returncode == 0, "\n".join(lines)
    return proc


def error_lines(proc: Any) -> list[str]:
    err = proc.stderr.decode(errors="replace")
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("{")]


def skopeo(*args: str) -> dict[str, Any]:
    if SKOPEO is None:
        pytest.skip("skopeo not installed")
    proc = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def oci_index(path: Path) -> tuple[list[str], dict[str, Any], dict[str, bytes]]:
    with tarfile.open(path) as tf:
        names = tf.getnames()
        blobs = {
            m.name: tf.extractfile(m).read()  # type: ignore[union-attr]
            for m in tf.getmembers()
            if m.isfile()
        }
    return names, json.loads(blobs["index.json"]), blobs


# -- tests --------------------------------------------------------------------------------------
def test_push_then_pull_back_and_run(bk: Any, registry: Any, base: tuple[str, str]) -> None:
    base_ref, base_layer = base
    name = f"{registry.host}/team/app:v1"
    ok(build(bk, app_graph(base_ref), f"type=image,name={name},push=true"))
    inspect = skopeo("inspect", "--tls-verify=false", f"docker://{name}")
    # the pulled base layer is pushed as the same blob, then one layer per build step
    assert inspect["Layers"][0] == base_layer and len(inspect["Layers"]) == 3
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}")
    assert raw["mediaType"] == mt.DOCKER_MANIFEST
    assert [layer["mediaType"] for layer in raw["layers"]] == [mt.DOCKER_LAYER_GZIP] * 3
    config = skopeo("inspect", "--config", "--tls-verify=false", f"docker://{name}")
    # raw LLB carries no image config: BuildKit's default, one history entry per layer
    assert config["config"] == {"Env": [DEFAULT_PATH], "WorkingDir": "/"}
    history = config["history"]
    assert [h["created_by"] for h in history[1:]] == [
        "mkdir /app",
        "mount / from exec /bin/sh -c echo hi > /hello && touch /app/x",
    ]
    assert {h["comment"] for h in history} == {"buildkit.exporter.image.v0"}
    assert len(config["rootfs"]["diff_ids"]) == 3
    # a second build FROM the pushed image runs busybox and sees the first build's files
    run = llb.image(name).sh(
        "cat /hello > /out/hello && ls /app > /out/app", mounts=[llb.bind("/out", llb.scratch())]
    )
    out = bk.tmp / "out"
    ok(build(bk, run.get_mount("/out"), f"type=local,dest={out}"))
    assert (out / "hello").read_text() == "hi\n"
    assert (out / "app").read_text() == "x\n"


# embedded only: it reads run_build's in-process response (the CLI prints no response keys)
@pytest.mark.embedded_only("calls bkcore.controller.run_build in the test process")
def test_image_response_and_second_repository(
    bk: Any, registry: Any, base: tuple[str, str]
) -> None:
    """In process: the response keys; a second name on the same registry gets the image."""
    from bkcore.controller import BuildOptions, OutputSpec, run_build
    from bkcore.pluginmanager import get_plugin_manager

    names = f"{registry.host}/team/one:v1,{registry.host}/team/two:v2"
    options = BuildOptions(
        definition=bk.definition(app_graph(base[0])),
        locals={"rootfs": str(bk.rootfs_dir)},
        outputs=(OutputSpec("image", {"name": names, "push": "true"}),),
    )
    response = asyncio.run(
        run_build(
            options,
            get_plugin_manager(),
            state_dir=bk.root,
            progress="plain",
            progress_out=io.StringIO(),
        )
    ).exporter_response
    assert response["image.name"] == names
    digest = response["containerimage.digest"]
    for ref in names.split(","):
        inspect = skopeo("inspect", "--tls-verify=false", f"docker://{ref}")
        assert inspect["Digest"] == digest
    config = skopeo("inspect", "--config", "--tls-verify=false", f"docker://{names.split(',')[0]}")
    raw_config = json.dumps(config).encode()
    assert raw_config  # parsed fine
    desc = json.loads(__import__("base64").b64decode(response["containerimage.descriptor"]))
    assert desc["digest"] == digest and desc["mediaType"] == mt.DOCKER_MANIFEST
    assert response["containerimage.config.digest"].startswith("sha256:")
    assert response["containerimage.buildinfo"] == "e30="


def test_oci_archive_is_read_by_skopeo(bk: Any, registry: Any, base: tuple[str, str]) -> None:
    dest = bk.tmp / "image-oci.tar"
    ok(build(bk, app_graph(base[0]), f"type=oci,dest={dest},name=example.com/team/app:v1"))
    names, index, blobs = oci_index(dest)
    assert names[:2] == ["blobs", "blobs/sha256"] and names[-3:] == [
        "index.json",
        "manifest.json",
        "oci-layout",
    ]
    (desc,) = index["manifests"]
    assert desc["mediaType"] == mt.OCI_MANIFEST
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    manifest = json.loads(blobs["blobs/sha256/" + desc["digest"][7:]])
    assert manifest["layers"][0]["digest"] == base[1]  # the pulled blob, unchanged
    assert manifest["layers"][0]["mediaType"] == mt.OCI_LAYER_GZIP  # rewritten to OCI type
    inspect = skopeo("inspect", f"oci-archive:{dest}")
    assert inspect["Digest"] == desc["digest"] and len(inspect["Layers"]) == 3
    # and the archive can be copied into a registry and used as a base again
    target = f"{registry.host}/fromoci/app:v1"
    proc = subprocess.run(
        [
            str(SKOPEO),
            "copy",
            "--dest-tls-verify=false",
            f"oci-archive:{dest}",
            f"docker://{target}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    run = llb.image(target).sh("cat /hello > /out/h", mounts=[llb.bind("/out", llb.scratch())])
    out = bk.tmp / "out"
    ok(build(bk, run.get_mount("/out"), f"type=local,dest={out}"))
    assert (out / "h").read_text() == "hi\n"


def test_reproducible_digest_with_source_date_epoch(
    bk: Any, base: tuple[str, str], tmp_path: Path
) -> None:
    digests = []
    configs = []
    for n in range(2):
        dest = bk.tmp / f"repro-{n}.tar"
        env = {"SOURCE_DATE_EPOCH": str(EPOCH)}
        ok(build(bk, app_graph(base[0]), f"type=oci,dest={dest}", env=env, no_cache=True))
        _, index, blobs = oci_index(dest)
        (desc,) = index["manifests"]
        assert desc["annotations"]["org.opencontainers.image.created"] == "2001-09-09T01:46:40Z"
        digests.append(desc["digest"])
        manifest = json.loads(blobs["blobs/sha256/" + desc["digest"][7:]])
        configs.append(json.loads(blobs["blobs/sha256/" + manifest["config"]["digest"][7:]]))
        if n == 0:
            time.sleep(1.1)  # the second build's files get later mtimes (clamped away)
    assert digests[0] == digests[1]
    assert configs[0]["created"] == "2001-09-09T01:46:40Z"
    assert [h["created"] for h in configs[0]["history"]] == ["2001-09-09T01:46:40Z"] * 3


def test_failed_push_is_one_error_and_no_tag(
    bk: Any, start_registry: Any, base: tuple[str, str], tmp_path: Path
) -> None:
    htpasswd = tmp_path / "htpasswd"
    # bcrypt entry for user "u", password "p" (apache2-utils' htpasswd -nbB)
    htpasswd.write_text(
        subprocess.run(
            ["htpasswd", "-nbB", "u", "p"], capture_output=True, text=True, check=True
        ).stdout
    )
    locked = start_registry("locked", htpasswd=htpasswd)
    name = f"{locked.host}/team/app:v1"
    proc = build(bk, app_graph(base[0]), f"type=image,name={name},push=true")
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "push failed" in lines[0] and locked.host in lines[0], lines
    tags = locked.storage / "docker/registry/v2/repositories/team/app/_manifests/tags"
    assert not tags.exists()


def test_failed_tarball_export_leaves_no_file(bk: Any, base: tuple[str, str]) -> None:
    dest = bk.tmp / "out.tar"
    dest.write_text("old")
    proc = build(bk, app_graph(base[0]), f"type=docker,dest={dest},compression=lz4")
    assert proc.returncode == 1
    assert "compression" in error_lines(proc)[0]
    assert dest.read_text() == "old"
    fresh = bk.tmp / "fresh.tar"
    proc = build(bk, app_graph(base[0]), f"type=oci,dest={fresh},annotation-index.a=b")
    assert proc.returncode == 1 and "multi-platform" in error_lines(proc)[0]
    assert not fresh.exists()
    assert sorted(p.name for p in bk.tmp.iterdir() if p.name.startswith(".bkexport")) == []


# -- docker load against a real dockerd ---------------------------------------------------------
def _docker(host: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER, "-H", host, *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def dockerd() -> Iterator[str]:
    """The ``-H`` address of a Docker daemon: a reachable one, else one started here on
    private directories (no iptables, no bridge) and stopped afterwards."""
    if not os.path.exists(DOCKER):
        pytest.skip("docker client not installed (apt-get install docker.io)")
    default = "unix:///var/run/docker.sock"
    if (
        os.path.exists("/var/run/docker.sock")
        and _docker(default, "info", timeout=20).returncode == 0
    ):
        yield default
        return
    if not os.path.exists(DOCKERD) or os.geteuid() != 0:
        pytest.skip("no reachable Docker daemon and dockerd cannot be started here")
    base = Path(tempfile.mkdtemp(prefix="bkd-", dir="/tmp"))  # short: socket path limit
    host = f"unix://{base}/docker.sock"
    log = open(base / "dockerd.log", "wb")
    proc = subprocess.Popen(
        [
            DOCKERD,
            "--iptables=false",
            "--bridge=none",
            "--data-root",
            str(base / "data"),
            "--exec-root",
            str(base / "exec"),
            "--pidfile",
            str(base / "docker.pid"),
            "-H",
            host,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while _docker(host, "info", timeout=20).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "dockerd did not start: " + (base / "dockerd.log").read_text()[-2000:]
                )
            time.sleep(0.2)
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(base / "data")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_docker_load_accepts_the_docker_tarball(
    bk: Any, base: tuple[str, str], dockerd: str
) -> None:
    dest = bk.tmp / "image-docker.tar"
    tag = "bkcore-imgexp-test/app:v1"
    ok(build(bk, app_graph(base[0]), f"type=docker,dest={dest},name={tag}"))
    _names, index, blobs = oci_index(dest)
    assert json.loads(blobs["manifest.json"])[0]["RepoTags"] == [tag]
    assert index["manifests"][0]["mediaType"] == mt.DOCKER_MANIFEST
    try:
        loaded = _docker(dockerd, "load", "-i", str(dest))
        assert loaded.returncode == 0, loaded.stderr
        assert f"Loaded image: {tag}" in loaded.stdout
        inspect = _docker(dockerd, "image", "inspect", tag)
        assert inspect.returncode == 0, inspect.stderr
        (image,) = json.loads(inspect.stdout)
        manifest = json.loads(blobs["blobs/sha256/" + index["manifests"][0]["digest"][7:]])
        assert image["Id"] == manifest["config"]["digest"]
        assert len(image["RootFS"]["Layers"]) == 3
        ran = _docker(dockerd, "run", "--rm", "--network", "none", tag, "cat", "/hello")
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout == "hi\n"
    finally:
        _docker(dockerd, "image", "rm", "-f", tag)


# -- the config the Dockerfile frontend sets reaches the pushed image ---------------------------
DOCKERFILE = """\
FROM {base}
ENV FOO=bar
LABEL l1=v1
RUN echo built > /built
USER 1000:1000
WORKDIR /app
EXPOSE 8080/udp
VOLUME /data
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /built"]
"""


def test_dockerfile_config_reaches_the_pushed_image(
    bk: Any, registry: Any, base: tuple[str, str]
) -> None:
    context = bk.tmp / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base[0]))
    name = f"{registry.host}/team/df:v1"
    argv = [*bk.cli(), "build", "--progress"]
    argv += ["plain", "--output", f"type=image,name={name},push=true", str(context)]
    proc = subprocess.run(argv, capture_output=True, timeout=180, check=False, cwd=bk.tmp)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    doc = skopeo("inspect", "--config", "--tls-verify=false", f"docker://{name}")
    config = doc["config"]
    assert config["Env"][-1] == "FOO=bar" and config["Labels"] == {"l1": "v1"}
    assert config["User"] == "1000:1000" and config["WorkingDir"] == "/app"
    assert config["ExposedPorts"] == {"8080/udp": {}} and config["Volumes"] == {"/data": {}}
    assert config["StopSignal"] == "SIGINT"
    assert config["Entrypoint"] == ["/bin/sh", "-c"] and config["Cmd"] == ["cat /built"]
    history = doc["history"]
    layers = [h for h in history if not h.get("empty_layer")]
    assert len(layers) == len(doc["rootfs"]["diff_ids"]) == 3  # base, RUN, WORKDIR
    assert history[0]["created_by"] == "busybox layer"  # the base image's own history
    assert history[0]["created"] == "2000-01-01T00:00:00Z"
    run_entry = next(h for h in history if h["created_by"].startswith("RUN "))
    assert run_entry["comment"] == "buildkit.dockerfile.v0"
    # WORKDIR on a new directory is a layer; ENV/LABEL/... are empty entries
    assert [h["created_by"].split()[0] for h in layers] == ["busybox", "RUN", "WORKDIR"]
    run = llb.image(name).sh("cat /built > /out/built", mounts=[llb.bind("/out", llb.scratch())])
    out = bk.tmp / "out"
    ok(build(bk, run.get_mount("/out"), f"type=local,dest={out}"))
    assert (out / "built").read_text() == "built\n"


# -- push traffic through a logging proxy: cross-repository mounts ------------------------------
class _LoggingProxy:
    """A plain-HTTP reverse proxy in front of the registry recording (method, path?query)."""

    def __init__(self, upstream: str) -> None:
        import http.client
        import http.server
        import threading

        self.log: list[tuple[str, str]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                proxy.log.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = self.headers.get("Host", upstream)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_push_mounts_layers_from_the_base_repository(
    bk: Any, registry: Any, tmp_path: Path
) -> None:
    proxy = _LoggingProxy(registry.host)
    try:
        workdir = tmp_path / "push-proxy"
        workdir.mkdir()
        base_ref, base_layer = asyncio.run(asyncio.wait_for(_push_base(proxy.host, workdir), 120))
        proxy.log.clear()
        name = f"{proxy.host}/team/app:v1"
        ok(build(bk, app_graph(base_ref), f"type=image,name={name},push=true"))
        posts = [parse_qs(urlsplit(p).query) for m, p in proxy.log if m == "POST"]
        assert {"mount": [base_layer], "from": ["library/busybox"]} in posts, proxy.log
        uploads = [p for m, p in proxy.log if m == "PUT" and "/blobs/uploads/" in p]
        assert len(uploads) == 3  # the two build layers and the config; not the base layer
        assert not any(base_layer.replace(":", "%3A") in p for p in uploads)
        # the manifest is the last request that writes
        writes = [(m, p) for m, p in proxy.log if m in ("PUT", "POST")]
        assert writes[-1] == ("PUT", "/v2/team/app/manifests/v1")
        # the same image to a second repository: every layer mounted, the config uploaded
        proxy.log.clear()
        other = f"{proxy.host}/team/other:v1"
        ok(build(bk, app_graph(base_ref), f"type=image,name={other},push=true"))
        mounts = [p for m, p in proxy.log if m == "POST" and "mount=" in p]
        assert len(mounts) == 3, proxy.log
        uploads = [p for m, p in proxy.log if m == "PUT" and "/blobs/uploads/" in p]
        assert len(uploads) == 1
        inspect = skopeo("inspect", "--tls-verify=false", f"docker://{other}")
        assert inspect["Layers"][0] == base_layer
    finally:
        proxy.close()


def test_push_to_a_stopped_registry_is_one_error(bk: Any, base: tuple[str, str]) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"127.0.0.1:{port}/team/app:v1"
    proc = build(bk, app_graph(base[0]), f"type=image,name={name},push=true")
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("error: push failed") and name in lines[0]
