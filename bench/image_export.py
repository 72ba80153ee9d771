"""Image export cost: first export (layer tar + gzip), a re-export of the same snapshots
(blob cache: no tar, no compression), and writing the OCI tarball, next to anchors run in
the same invocation: ``tar -cf - DIR | gzip -6`` for the first export and GNU ``tar -cf`` of
the same blob files for the tarball.

The tree is a base snapshot of ``--size-mb`` (half zeros, half random, 8 MB files) and a
child snapshot adding one small file (two layers, like a build on a base image). Figures are
the best of ``--rounds``; no figure is asserted.

    python bench/image_export.py [--size-mb 128] [--rounds 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.layers.blobcache import LayerBlobCache
from bkcore.layers.chain import ChainOptions, layer_chain
from bkcore.layers.compress import media_type
from bkcore.llb.platforms import Platform
from bkcore.plugins.exporters.imagecommon import (
    BuiltImage,
    PlatformImage,
    image_config,
    manifest_bytes,
)
from bkcore.plugins.exporters.imagecommon_archive import archive_chunks, archive_entries
from bkcore.registry_client import Descriptor
from bkcore.registry_client import mediatypes as mt


def best(rounds: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_store(root: Path, size_mb: int) -> tuple[CacheStore, str]:
    store = CacheStore.open(root / "state", COPY)
    chunk = 8 * 1024 * 1024
    with store.snapshots.prepare(None, "base") as m:
        data = m.mount() / "data"
        data.mkdir()
        for i in range(max(2, size_mb * 1024 * 1024 // chunk)):
            (data / f"part-{i:03d}").write_bytes(bytes(chunk) if i % 2 else os.urandom(chunk))
        base = m.commit()
    with store.snapshots.prepare(base, "run") as m:
        (m.mount() / "hello").write_text("hi\n")
        top = m.commit()
    return store, top


def built(store: CacheStore, top: str) -> BuiltImage:
    cache = LayerBlobCache(store.content)
    layers = layer_chain(store.snapshots, cache, top, ChainOptions())
    config = image_config(None, Platform.host(), layers, epoch=None, buildinfo=b"{}")
    config_desc = Descriptor(mt.OCI_CONFIG, store.content.ingest(io.BytesIO(config)), len(config))
    descs = [Descriptor(media_type(x.compression, oci=True), x.digest, x.size) for x in layers]
    manifest = manifest_bytes(config_desc, descs, True, {})
    desc = Descriptor(mt.OCI_MANIFEST, store.content.ingest(io.BytesIO(manifest)), len(manifest))
    part = PlatformImage(desc, manifest, config_desc, config, layers, descs)
    return BuiltImage(desc, manifest, [part], store, True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--size-mb", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bk-imgexp-bench-", dir=args.dir))
    try:
        rows: list[tuple[str, float]] = []
        firsts = []
        for n in range(args.rounds):
            store, top = make_store(tmp / f"r{n}", args.size_mb)
            t0 = time.perf_counter()
            layer_chain(store.snapshots, LayerBlobCache(store.content), top, ChainOptions())
            firsts.append(time.perf_counter() - t0)
            store.close()
        store, top = make_store(tmp / "main", args.size_mb)
        image = built(store, top)  # first export done here
        src = store.snapshots.dir / store.snapshots.get(top).layers[-1]
        anchor_gzip = best(
            args.rounds,
            lambda: subprocess.run(
                f"tar -cf - -C {src} . | gzip -6 > {tmp / 'anchor.tgz'}", shell=True, check=True
            ),
        )
        rows.append(("first export (tar+gzip of 2 layers)", min(firsts)))
        rows.append(("anchor: tar | gzip -6 of the tree", anchor_gzip))
        cache = LayerBlobCache(store.content)
        again = best(args.rounds, lambda: layer_chain(store.snapshots, cache, top, ChainOptions()))
        rows.append(("re-export of the same snapshots (cached)", again))
        entries = archive_entries(image, ["bench/app:v1"], docker=False, epoch=None)
        out = tmp / "image.tar"

        def write() -> None:
            with open(out, "wb") as f:
                for chunk in archive_chunks(entries):
                    f.write(chunk)

        tarball = best(args.rounds, write)
        rows.append(("OCI tarball from the content store", tarball))
        content_root = store.content.root
        anchor_tar = best(
            args.rounds,
            lambda: subprocess.run(
                ["tar", "-cf", str(tmp / "anchor.tar"), "-C", str(content_root), "blobs"],
                check=True,
            ),
        )
        rows.append(("anchor: GNU tar -cf of the blob files", anchor_tar))
        store.close()
        width = max(len(name) for name, _ in rows)
        print(f"tree: {args.size_mb} MB (half random), best of {args.rounds}")
        for name, seconds in rows:
            print(f"  {name:<{width}}  {seconds * 1000:9.1f} ms")
        print(f"  first export / anchor gzip:       {min(firsts) / anchor_gzip:.2f}x")
        print(f"  cached re-export / first export:  {again / min(firsts):.4f}x")
        print(f"  OCI tarball / anchor tar:         {tarball / anchor_tar:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
