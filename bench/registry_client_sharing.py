"""What one registry client per engine saves over one per image op, in one invocation.

Starts Debian's ``docker-registry`` on a free loopback port, pushes ``--images`` small
one-layer images, then measures (interleaved rounds, so background load hits all alike):

* ``per-op client``: for each image, a new ``RegistryClient`` (its own httpx client and SSL
  context, as every image op made before) resolving the image (HEAD manifest, GET manifest,
  GET config) and closed: what the image source did per op;
* ``shared client``: the same resolves through ``bkcore.session.auth.registry_client`` on one
  engine (one httpx client and SSL context for all ops; what the image source does now);
* ``cached build``: a ``bkcore build`` of a graph copying a file out of every image, run
  again on the same root (every vertex cached; the tags are still resolved), next to the
  anchor ``bkcore --help`` (CLI start-up floor), and the same build with ``--plugin`` of a
  module written here that replaces the ``docker-image`` source by one resolving with a new
  ``RegistryClient`` per op (the behaviour before one client per engine).

Prints median and minimum ms and the ratio per-op / shared. No figure is asserted.

    python bench/registry_client_sharing.py [--rounds 7] [--images 8]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _registry import running_registry, sha


@dataclass
class Image:
    layer: bytes
    config: bytes
    manifest: bytes


def make_image(i: int) -> Image:
    from bkcore.llb.platforms import Platform
    from bkcore.registry_client import Descriptor
    from bkcore.registry_client import mediatypes as mt

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = f"image {i}\n".encode()
        info = tarfile.TarInfo(f"f{i}.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    layer = gzip.compress(raw, mtime=0)
    plat = Platform.host()
    rootfs = {"type": "layers", "diff_ids": [sha(raw)]}
    config = json.dumps(
        {"architecture": plat.architecture, "os": plat.os, "rootfs": rootfs}
    ).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": Descriptor(mt.OCI_CONFIG, sha(config), len(config)).to_json(),
        "layers": [Descriptor(mt.OCI_LAYER_GZIP, sha(layer), len(layer)).to_json()],
    }).encode()  # fmt: skip
    return Image(layer, config, manifest)


async def push_all(host: str, count: int, work: Path) -> list[str]:
    from bkcore.registry_client import ImageReference, RegistryClient
    from bkcore.registry_client import mediatypes as mt

    refs = []
    async with RegistryClient() as client:
        for i in range(count):
            image = make_image(i)
            ref = ImageReference.parse(f"{host}/bench/img{i}:latest")
            for blob in (image.layer, image.config):
                path = work / sha(blob).replace(":", "-")
                path.write_bytes(blob)
                await client.push_blob(ref, sha(blob), path)
            await client.put_manifest(ref, image.manifest, mt.OCI_MANIFEST)
            refs.append(str(ref))
    return refs


async def per_op(refs: list[str]) -> float:
    from bkcore.llb.platforms import Platform
    from bkcore.registry_client import ImageReference, RegistryClient
    from bkcore.sources.image.resolve import resolve_image

    start = time.perf_counter()
    for ref in refs:
        async with RegistryClient() as client:
            await resolve_image(client, ImageReference.parse(ref), Platform.host())
    return time.perf_counter() - start


async def shared(refs: list[str]) -> float:
    from bkcore.llb.platforms import Platform
    from bkcore.registry_client import ImageReference
    from bkcore.session import Session, SessionManager
    from bkcore.session.auth import close_registry_clients, registry_client
    from bkcore.sources.image.resolve import resolve_image

    @dataclass(eq=False)
    class Engine:  # what registry_client needs of an engine
        sessions: SessionManager

    manager = SessionManager()
    session = Session()
    manager.attach(session)
    engine: Any = Engine(manager)
    start = time.perf_counter()
    for ref in refs:
        async with registry_client(engine, [session.id]) as client:
            await resolve_image(client, ImageReference.parse(ref), Platform.host())
    elapsed = time.perf_counter() - start
    await close_registry_clients(engine)
    await manager.close()
    return elapsed


def graph(refs: list[str]) -> bytes:
    from bkcore import llb

    state = llb.scratch()
    for i, ref in enumerate(refs):
        state = state.file(llb.copy(llb.image(ref), f"/f{i}.txt", f"/f{i}.txt"))
    data: bytes = state.marshal().to_bytes()
    return data


#: A plugin replacing the docker-image source by one with a registry client per op.
PER_OP_PLUGIN = """
from bkcore.hookspecs import hookimpl
from bkcore.registry_client import RegistryClient, load_hosts
from bkcore.sources.image.resolve import resolve_image
from bkcore.sources.image.source import ImageInstance, ImageSource


class PerOpInstance(ImageInstance):
    async def fetch_resolved(self, ctx):
        async with RegistryClient(hosts=load_hosts()) as client:
            return await resolve_image(client, self.spec.ref, self.spec.platform, ctx.progress)


class PerOpSource(ImageSource):
    def identify(self, identifier, attrs, platform):
        return PerOpInstance(super().identify(identifier, attrs, platform).spec)


@hookimpl
def bkcore_register_sources(registry):
    registry.add("docker-image", "bkregbench:PerOpSource", replace=True)
"""


def timed(argv: list[str], stdin: bytes | None = None, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, check=False, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{argv} failed: {proc.stderr.decode()[-2000:]}")
    return elapsed


def report(name: str, values: list[float]) -> float:
    med = statistics.median(values) * 1000
    print(f"{name:<28} median {med:8.1f} ms   min {min(values) * 1000:8.1f} ms")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bk-bench-reg-") as tmp:
        base = Path(tmp)
        with running_registry(base / "registry") as host:
            (base / "push").mkdir()
            refs = asyncio.run(push_all(host, args.images, base / "push"))
            root, out = base / "root", base / "out"
            build = [sys.executable, "-m", "bkcore", "--root", str(root), "build",
                     "--progress", "plain", "--output", f"type=local,dest={out}"]  # fmt: skip
            definition = graph(refs)
            timed(build, definition)  # cold build fills the cache
            (base / "plugin").mkdir()
            (base / "plugin" / "bkregbench.py").write_text(PER_OP_PLUGIN)
            old_env = {**os.environ, "PYTHONPATH": str(base / "plugin")}
            old_build = [*build[:3], "--plugin", "bkregbench", *build[3:]]
            keys = ("per", "shared", "build", "old_build", "help")
            results: dict[str, list[float]] = {k: [] for k in keys}
            for _ in range(args.rounds):
                results["per"].append(asyncio.run(per_op(refs)))
                results["shared"].append(asyncio.run(shared(refs)))
                results["build"].append(timed(build, definition))
                results["old_build"].append(timed(old_build, definition, old_env))
                results["help"].append(timed([sys.executable, "-m", "bkcore", "--help"]))
    print(f"{args.images} images, {args.rounds} rounds, loopback docker-registry (plain HTTP)")
    per = report("resolve, per-op client", results["per"])
    one = report("resolve, shared client", results["shared"])
    print(
        f"{'':<28} per-op / shared = {per / one:.2f}x  ({(per - one) / args.images:.1f} ms per op)"
    )
    old = report("cached build, per-op client", results["old_build"])
    cached = report("cached build, shared client", results["build"])
    helpt = report("anchor: bkcore --help", results["help"])
    print(
        f"{'':<28} per-op / shared = {old / cached:.2f}x; shared / --help = {cached / helpt:.2f}x"
    )


if __name__ == "__main__":
    main()
