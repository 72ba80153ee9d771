"""Image pull throughput: a cold ``bkcore build`` of a ~200 MB multi-layer image from a local
registry, next to ``skopeo copy`` of the same image in the same invocation.

Starts Debian's ``docker-registry`` on a free loopback port and pushes one image of
``--layers`` gzip layers (files of random and of zero bytes, deterministic; layer size is
``--size-mb`` / layers uncompressed). Then, in interleaved rounds (so background load hits
every case alike), each case on a fresh state root / destination:

* ``bkcore build (pull+unpack)``: ``bkcore build`` of the LLB ``docker-image://REF`` with no
  output: resolve, concurrent layer downloads verified against their digests, each layer
  extracted into its snapshot as soon as it is there and checked against its diff ID, commit;
* ``bkcore build (no image)``: the same command building one small file on scratch (process
  start-up and solve floor, to read the pull cost off);
* ``skopeo copy -> oci:`` and ``-> dir:``: download (and verify) the blobs only;
* ``skopeo oci: + tar -xzf``: the same download, then every layer extracted in order with
  GNU tar into one directory (what a pull has to do as well; no whiteout handling needed here).

MB/s is compressed bytes of the image per second of wall time (the ``unpacked`` column gives
uncompressed MB/s for the cases that extract); ratio is the case's time over skopeo's
``oci:`` copy. No figure is asserted. Needs root (snapshots keep owners), docker-registry,
skopeo, GNU tar.

    python bench/pull.py [--size-mb 200] [--layers 8] [--rounds 5] [--nice -10]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _registry import running_registry, sha


def layer_tar(index: int, size: int) -> bytes:
    """One layer: a directory of files, alternately random and zero bytes, ~``size`` bytes."""
    rng = random.Random(index)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"layer{index}")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        left, n = size, 0
        while left > 0:
            chunk = min(left, rng.choice((256 << 10, 1 << 20, 4 << 20)))
            data = rng.randbytes(chunk) if n % 2 else bytes(chunk)
            info = tarfile.TarInfo(f"layer{index}/file{n:03d}.bin")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
            left -= chunk
            n += 1
    return buf.getvalue()


def build_image(host: str, work: Path, size_mb: int, layers: int) -> tuple[str, int, int]:
    """Push the image; returns (reference, compressed bytes, uncompressed bytes)."""
    import json

    from bkcore.layers.compress import compress_file
    from bkcore.registry_client import ImageReference, RegistryClient

    blobs: list[tuple[Path, str, int]] = []
    diff_ids, total_tar = [], 0
    for i in range(layers):
        tar = layer_tar(i, size_mb * 1_000_000 // layers)
        total_tar += len(tar)
        diff_ids.append(sha(tar))
        path = work / f"layer{i}.gz"
        with open(path, "wb") as out:
            blob = compress_file(io.BytesIO(tar), out, "gzip")
        blobs.append((path, blob.digest, blob.size))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        sort_keys=True,
    ).encode()
    (work / "config.json").write_bytes(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest,
                    "size": size,
                }
                for _, digest, size in blobs
            ],
        },
        sort_keys=True,
    ).encode()
    ref = ImageReference.parse(f"{host}/bench/big:1")

    async def push() -> None:
        async with RegistryClient() as client:
            for path, digest, _ in blobs:
                await client.push_blob(ref, digest, path)
            await client.push_blob(ref, sha(config), work / "config.json")
            await client.put_manifest(ref, manifest, "application/vnd.oci.image.manifest.v1+json")

    asyncio.run(push())
    compressed = sum(size for _, _, size in blobs) + len(config) + len(manifest)
    return str(ref), compressed, total_tar


def definition(ref: str | None) -> bytes:
    from bkcore import llb

    if ref:
        state = llb.image(ref, platform="linux/amd64")
    else:
        state = llb.scratch().file(llb.mkfile("/floor", 0o644, b"x"))
    data: bytes = state.marshal(platform="linux/amd64").to_bytes()
    return data


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=200, help="uncompressed image size")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    ap.add_argument(
        "--nice", type=int, default=0, help="niceness increment for this process and every case"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (the image's snapshots keep file owners)")
    for tool in ("skopeo", "tar"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    if args.nice:
        os.nice(args.nice)
    with tempfile.TemporaryDirectory(prefix="bk-pull-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        with running_registry(work / "registry") as host:
            ref, compressed, unpacked = build_image(host, work, args.size_mb, args.layers)
            run_cases(work, ref, compressed, unpacked, args.rounds, args.layers)


def run_cases(work: Path, ref: str, compressed: int, unpacked: int, rounds: int, n: int) -> None:
    bk = [sys.executable, "-m", "bkcore"]
    image_def, scratch_def = definition(ref), definition(None)
    skopeo = ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}"]
    counter = iter(range(1_000_000))

    def fresh(name: str) -> Path:
        path = work / f"{name}-{next(counter)}"
        return path

    def build(graph: bytes) -> Callable[[], None]:
        def run() -> None:
            root = fresh("root")
            cmd = [*bk, "--root", str(root), "build", "--progress", "plain"]
            done = subprocess.run(cmd, input=graph, capture_output=True)
            if done.returncode:
                sys.exit(f"bkcore build failed: {done.stderr.decode()[-2000:]}")
            shutil.rmtree(root)

        return run

    def copy(kind: str, extract: bool = False) -> Callable[[], None]:
        def run() -> None:
            dest = fresh(kind)
            subprocess.run([*skopeo, f"{kind}:{dest}"], check=True, capture_output=True)
            if extract:
                import json

                tree = fresh("tree")
                tree.mkdir()
                index = json.loads((dest / "index.json").read_text())
                mdigest = index["manifests"][0]["digest"].split(":", 1)[1]
                manifest = json.loads((dest / "blobs/sha256" / mdigest).read_text())
                for layer in manifest["layers"]:
                    blob = dest / "blobs/sha256" / layer["digest"].split(":", 1)[1]
                    subprocess.run(["tar", "-xzf", str(blob), "-C", str(tree)], check=True)
                shutil.rmtree(tree)
            shutil.rmtree(dest)

        return run

    cases: list[tuple[str, Callable[[], None], bool]] = [
        ("bkcore build (pull+unpack)", build(image_def), True),
        ("bkcore build (no image)", build(scratch_def), False),
        ("skopeo copy -> oci:", copy("oci"), False),
        ("skopeo copy -> dir:", copy("dir"), False),
        ("skopeo oci: + tar -xzf", copy("oci", True), True),
    ]
    wall: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(rounds):
        for name, run, _ in cases:
            subprocess.run(["sync"], check=True)
            c0, t0 = child_cpu(), time.perf_counter()
            run()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(child_cpu() - c0)
    anchor = statistics.median(wall["skopeo copy -> oci:"])
    print(
        f"image: {n} layers, {compressed / 1e6:.1f} MB compressed, {unpacked / 1e6:.1f} MB "
        f"unpacked; {rounds} rounds, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'case':30} {'median s':>9} {'min s':>7} {'cpu s':>7} {'MB/s':>7} "
        f"{'unpacked':>9} {'ratio':>6}"
    )
    for name, _, extracts in cases:
        med, low = statistics.median(wall[name]), min(wall[name])
        speed = f"{compressed / 1e6 / med:7.1f}" if name != "bkcore build (no image)" else " " * 7
        unp = f"{unpacked / 1e6 / med:9.1f}" if extracts else " " * 9
        print(
            f"{name:30} {med:9.2f} {low:7.2f} {statistics.median(cpu[name]):7.2f} {speed} "
            f"{unp} {med / anchor:6.2f}"
        )


if __name__ == "__main__":
    main()
