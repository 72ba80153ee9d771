"""Layer export throughput: a 256 MB layer (half zeros, half random) compressed with gzip and
zstd by bkcore, next to ``gzip -6`` and ``zstd -3`` on the same tar in the same run.

Measured (each the best of ``--rounds``, output written to a file on the same disk):

* ``bkcore tar``: snapshot tree → uncompressed layer tar with its diff ID (no compression);
* ``bkcore gzip`` / ``bkcore zstd``: tree → tar → compressed blob in one pass (what an
  export does, tar writing and both digests included);
* ``bkcore gzip (tar in)`` / ``bkcore zstd (tar in)``: compression of the ready tar only,
  the like-for-like comparison with the command-line tools;
* ``gzip -6``, ``zstd -3`` (single-threaded, the CLI default) and ``zstd -3 -T0``;
* a floor: sha256 over the tar and over half as many bytes (the diff ID and the blob
  digest that an export must compute and the command-line tools do not).

Then extraction of those blobs: ``bkcore apply`` (:func:`apply_layer`, diff ID included)
next to ``tar -xzf`` and ``tar --zstd -xf``, each into an empty directory.

MB/s is uncompressed MB per second (1 MB = 10^6 bytes); ratio is tar size / blob size.
Needs the ``gzip`` and ``zstd`` commands (``apt-get install zstd``). No figure is asserted.

    python bench/layer_export.py [--size-mb 256] [--rounds 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bkcore.layers.apply import apply_layer
from bkcore.layers.compress import compress_file, compress_tar
from bkcore.layers.write import write_directory


def make_tree(root: Path, size_mb: int) -> None:
    """Half zeros, half random, in 16 MB files (interleaved, so both kinds are spread)."""
    chunk = 16 * 1024 * 1024
    count = max(2, size_mb * 1024 * 1024 // chunk)
    (root / "data").mkdir(parents=True)
    for i in range(count):
        path = root / "data" / f"part-{i:03d}.bin"
        with open(path, "wb") as f:
            f.write(bytes(chunk) if i % 2 == 0 else os.urandom(chunk))


def best(rounds: int, run: Callable[[], int]) -> tuple[float, int]:
    """(best seconds, output size) of ``rounds`` runs."""
    times = []
    size = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        size = run()
        times.append(time.perf_counter() - t0)
    return min(times), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    args = ap.parse_args()
    for tool in ("gzip", "zstd"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    with tempfile.TemporaryDirectory(prefix="bk-layer-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        tree = work / "tree"
        make_tree(tree, args.size_mb)
        tar_path = work / "layer.tar"
        out = work / "out"

        def tar_only() -> int:
            with open(tar_path, "wb") as f:
                return write_directory(tree, f).size

        def ours(compression: str, from_tar: bool) -> Callable[[], int]:
            def run() -> int:
                with open(out, "wb") as f:
                    if from_tar:
                        with open(tar_path, "rb") as src:
                            return compress_file(src, f, compression).size  # type: ignore[arg-type]
                    return compress_tar(
                        lambda s: write_directory(tree, s),
                        f,
                        compression,  # type: ignore[arg-type]
                    ).size

            return run

        def cli(*argv: str) -> Callable[[], int]:
            def run() -> int:
                with open(tar_path, "rb") as src, open(out, "wb") as dst:
                    subprocess.run(argv, stdin=src, stdout=dst, check=True)
                return out.stat().st_size

            return run

        t, tar_size = best(args.rounds, tar_only)
        rows = [("bkcore tar (diff ID, no compression)", t, tar_size)]

        data = memoryview(tar_path.read_bytes())

        def hash_floor() -> int:
            # what any exporter pays on top of compressing: the diff ID over the tar and
            # the digest over a blob of half its size (the CLI tools compute neither)
            hashlib.sha256(data).hexdigest()
            hashlib.sha256(data[: len(data) // 2]).hexdigest()
            return tar_size

        t, _ = best(args.rounds, hash_floor)
        rows.append(("sha256 of tar + half-size blob (floor)", t, tar_size))
        cases = [
            ("bkcore gzip (tree -> blob)", ours("gzip", False)),
            ("bkcore gzip (tar in)", ours("gzip", True)),
            ("gzip -6", cli("gzip", "-6", "-c")),
            ("bkcore zstd (tree -> blob)", ours("zstd", False)),
            ("bkcore zstd (tar in)", ours("zstd", True)),
            ("zstd -3", cli("zstd", "-3", "-q", "-c")),
            ("zstd -3 -T0", cli("zstd", "-3", "-T0", "-q", "-c")),
        ]
        for name, run in cases:
            t, size = best(args.rounds, run)
            rows.append((name, t, size))
        # extraction of the blobs just made (what a pull does per layer) next to GNU tar
        blobs = {}
        for comp in ("gzip", "zstd"):
            blobs[comp] = work / f"layer.{comp}"
            with open(tar_path, "rb") as src, open(blobs[comp], "wb") as f:
                compress_file(src, f, comp)
        dest = work / "dest"

        def fresh() -> Path:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            return dest

        def apply(comp: str) -> Callable[[], int]:
            return lambda: apply_layer(blobs[comp], fresh(), digest="sha256:bench").size

        def gnu_tar(flag: str, comp: str) -> Callable[[], int]:
            def run() -> int:
                subprocess.run(
                    ["tar", flag, "-xf", str(blobs[comp]), "-C", str(fresh())], check=True
                )
                return blobs[comp].stat().st_size

            return run

        for name, comp, run in [
            ("bkcore apply gzip", "gzip", apply("gzip")),
            ("tar -xzf", "gzip", gnu_tar("-z", "gzip")),
            ("bkcore apply zstd", "zstd", apply("zstd")),
            ("tar --zstd -xf", "zstd", gnu_tar("--zstd", "zstd")),
        ]:
            t, _ = best(args.rounds, run)
            rows.append((name, t, blobs[comp].stat().st_size))
        mb = tar_size / 1e6
        print(
            f"layer: {mb:.1f} MB tar (half zeros, half random), best of {args.rounds}, "
            f"{os.cpu_count()} CPUs"
        )
        print(f"{'case':40} {'seconds':>8} {'MB/s':>8} {'ratio':>7}")
        for name, t, size in rows:
            print(f"{name:40} {t:8.2f} {mb / t:8.1f} {tar_size / size:7.3f}")


if __name__ == "__main__":
    main()
