"""Layer export throughput: a 256 MB layer (half zeros, half random) compressed with gzip and
zstd by bkcore, next to ``gzip -6`` and ``zstd -3`` on the same tar in the same run.

Measured in ``--rounds`` interleaved rounds (every case once per round, so background load
hits all cases alike), output written to a file on the same disk:

* ``bkcore tar``: snapshot tree → uncompressed layer tar with its diff ID (no compression);
* ``bkcore gzip`` / ``bkcore zstd``: tree → tar → compressed blob in one pass (what an
  export does, tar writing and both digests included);
* ``bkcore gzip (tar in)`` / ``bkcore zstd (tar in)``: compression of the ready tar only,
  the like-for-like comparison with the command-line tools;
* ``gzip -6``, ``zstd -3`` (the CLI default: one worker thread beside its I/O thread) and
  ``zstd -3 -T0`` (a worker per CPU); bkcore's zstd uses zstd's multi-threaded mode with
  ``zstd_workers()`` workers (CPUs - 1, at least 1), whose frames do not depend on that number;
* a floor: sha256 over the tar and over half as many bytes (the diff ID and the blob
  digest that an export must compute and the command-line tools do not).

Then extraction of those blobs: ``bkcore apply`` (:func:`apply_layer`, diff ID included)
next to ``tar -xzf`` and ``tar --zstd -xf``, each into an empty directory.

MB/s is uncompressed MB per second of wall time (1 MB = 10^6 bytes) from the best and the
median round; ``cpu s`` is the median CPU time (all threads, and child processes for the
command-line tools); ``vs CLI`` is the case's best time over its command-line counterpart's
(``gzip -6``, ``zstd -3``, GNU tar): below 1 is faster. ``ratio`` is tar size / blob size.
Needs the ``gzip`` and ``zstd`` commands (``apt-get install zstd``). No figure is asserted.

    python bench/layer_export.py [--size-mb 256] [--rounds 5] [--dir /var/tmp] [--nice -10]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bkcore.layers.apply import apply_layer
from bkcore.layers.compress import compress_file, compress_tar, zstd_workers
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


def cpu_now() -> float:
    """CPU seconds of this process (all threads) and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(
    rounds: int, cases: list[tuple[str, Callable[[], int]]]
) -> dict[str, tuple[list[float], list[float], int]]:
    """Every case once per round: name -> (wall times, CPU times, output size)."""
    out: dict[str, tuple[list[float], list[float], int]] = {n: ([], [], 0) for n, _ in cases}
    for _ in range(rounds):
        for name, run in cases:
            c0, t0 = cpu_now(), time.perf_counter()
            size = run()
            walls, cpus, _ = out[name]
            walls.append(time.perf_counter() - t0)
            cpus.append(cpu_now() - c0)
            out[name] = (walls, cpus, size)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default=None, help="scratch directory (default: system temp)")
    ap.add_argument(
        "--nice", type=int, default=0, help="niceness increment for this process and the tools"
    )
    args = ap.parse_args()
    if args.nice:
        os.nice(args.nice)
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

        tar_size = tar_only()
        data = memoryview(tar_path.read_bytes())

        def hash_floor() -> int:
            # what any exporter pays on top of compressing: the diff ID over the tar and
            # the digest over a blob of half its size (the CLI tools compute neither)
            hashlib.sha256(data).hexdigest()
            hashlib.sha256(data[: len(data) // 2]).hexdigest()
            return tar_size

        # extraction of the blobs (what a pull does per layer) next to GNU tar
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
            def run() -> int:
                apply_layer(blobs[comp], fresh(), digest="sha256:bench")
                return blobs[comp].stat().st_size

            return run

        def gnu_tar(flag: str, comp: str) -> Callable[[], int]:
            def run() -> int:
                subprocess.run(
                    ["tar", flag, "-xf", str(blobs[comp]), "-C", str(fresh())], check=True
                )
                return blobs[comp].stat().st_size

            return run

        cases: list[tuple[str, Callable[[], int]]] = [
            ("bkcore tar (diff ID, no compression)", tar_only),
            ("sha256 of tar + half-size blob (floor)", hash_floor),
            ("bkcore gzip (tree -> blob)", ours("gzip", False)),
            ("bkcore gzip (tar in)", ours("gzip", True)),
            ("gzip -6", cli("gzip", "-6", "-c")),
            ("bkcore zstd (tree -> blob)", ours("zstd", False)),
            ("bkcore zstd (tar in)", ours("zstd", True)),
            ("zstd -3", cli("zstd", "-3", "-q", "-c")),
            ("zstd -3 -T0", cli("zstd", "-3", "-T0", "-q", "-c")),
            ("bkcore apply gzip", apply("gzip")),
            ("tar -xzf", gnu_tar("-z", "gzip")),
            ("bkcore apply zstd", apply("zstd")),
            ("tar --zstd -xf", gnu_tar("--zstd", "zstd")),
        ]
        anchors = {
            "bkcore gzip (tree -> blob)": "gzip -6",
            "bkcore gzip (tar in)": "gzip -6",
            "bkcore zstd (tree -> blob)": "zstd -3",
            "bkcore zstd (tar in)": "zstd -3",
            "zstd -3 -T0": "zstd -3",
            "bkcore apply gzip": "tar -xzf",
            "bkcore apply zstd": "tar --zstd -xf",
        }
        results = measure(args.rounds, cases)
        mb = tar_size / 1e6
        print(
            f"layer: {mb:.1f} MB tar (half zeros, half random), {args.rounds} interleaved "
            f"rounds, {os.cpu_count()} CPUs (zstd workers {zstd_workers()}), "
            f"load {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'case':40} {'best s':>7} {'med s':>7} {'cpu s':>6} {'MB/s':>7} {'med':>7} "
            f"{'vs CLI':>6} {'ratio':>6}"
        )
        for name, _ in cases:
            walls, cpus, size = results[name]
            low, med = min(walls), statistics.median(walls)
            anchor = anchors.get(name)
            versus = f"{low / min(results[anchor][0]):6.2f}" if anchor else " " * 6
            print(
                f"{name:40} {low:7.2f} {med:7.2f} {statistics.median(cpus):6.2f} "
                f"{mb / low:7.1f} {mb / med:7.1f} {versus} {tar_size / size:6.3f}"
            )


if __name__ == "__main__":
    main()
