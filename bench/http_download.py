"""http(s) source throughput: a cold ``bkcore build`` of ``llb.http(URL)`` next to ``curl``
downloading the same file, in the same invocation.

Serves one file of ``--size-mb`` MB (half random, half zero bytes, deterministic) with
``busybox httpd`` on a free loopback port. Then, in interleaved rounds (so background load
hits every case alike), each case on a fresh state root / destination:

* ``bkcore build (http)``: ``bkcore build`` of the LLB ``http://...`` source with no output:
  keying downloads the file into a new snapshot (sha256 while writing), commit;
* ``bkcore build (tiny file)``: the same command fetching a 1-byte file (process start-up
  and solve floor, to read the download cost off);
* ``curl -o FILE`` and ``curl -o FILE && sha256sum FILE`` (what the source does: fetch and
  hash).

MB/s is file bytes per second of wall time (minimum over rounds); ratio is the case's time
over ``curl + sha256sum``. No figure is asserted. Needs busybox (httpd applet) and curl.

    python bench/http_download.py [--size-mb 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def definition(url: str) -> bytes:
    sys.path.insert(0, str(REPO))
    from bkcore import llb

    data: bytes = llb.http(url).marshal().to_bytes()
    return data


def timed(argv: list[str], stdin: bytes | None = None, shell: bool = False) -> float:
    start = time.perf_counter()
    subprocess.run(
        argv if not shell else " ".join(argv),
        input=stdin,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        shell=shell,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    busybox, curl = shutil.which("busybox"), shutil.which("curl")
    if busybox is None or curl is None:
        print("needs busybox and curl", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bk-http-bench-") as tmp_name:
        tmp = Path(tmp_name)
        www = tmp / "www"
        www.mkdir()
        size = args.size_mb << 20
        rng = random.Random(1)
        with open(www / "big.bin", "wb") as f:
            f.write(rng.randbytes(size // 2))
            f.write(bytes(size - size // 2))
        (www / "tiny.bin").write_bytes(b"x")
        port = free_port()
        server = subprocess.Popen(
            [busybox, "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(www)]
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/tiny.bin", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.05)
            big_def, tiny_def = definition(base + "/big.bin"), definition(base + "/tiny.bin")
            bk = [sys.executable, "-m", "bkcore"]
            cases: dict[str, list[float]] = {
                "bkcore build (http)": [],
                "bkcore build (tiny file)": [],
                "curl -o FILE": [],
                "curl + sha256sum": [],
            }
            for n in range(args.rounds):
                root = tmp / f"root-{n}"
                cases["bkcore build (http)"].append(
                    timed([*bk, "--root", str(root), "build", "--progress", "plain"], big_def)
                )
                root2 = tmp / f"root-tiny-{n}"
                cases["bkcore build (tiny file)"].append(
                    timed([*bk, "--root", str(root2), "build", "--progress", "plain"], tiny_def)
                )
                dest = tmp / f"curl-{n}.bin"
                cases["curl -o FILE"].append(
                    timed([curl, "-s", "-o", str(dest), base + "/big.bin"])
                )
                dest.unlink()
                cases["curl + sha256sum"].append(
                    timed(
                        [
                            curl,
                            "-s",
                            "-o",
                            str(dest),
                            base + "/big.bin",
                            "&&",
                            "sha256sum",
                            str(dest),
                        ],
                        shell=True,
                    )
                )
                dest.unlink()
                shutil.rmtree(root, ignore_errors=True)
                shutil.rmtree(root2, ignore_errors=True)
        finally:
            server.terminate()
            server.wait(10)
    anchor = min(cases["curl + sha256sum"])
    floor = min(cases["bkcore build (tiny file)"])
    print(f"file: {args.size_mb} MB, rounds: {args.rounds} (minimum wall time)")
    print(f"{'case':28} {'seconds':>8} {'MB/s':>8} {'ratio':>6}")
    for name, times in cases.items():
        best = min(times)
        mbs = "" if "tiny" in name else f"{args.size_mb / best:8.0f}"
        print(f"{name:28} {best:8.3f} {mbs:>8} {best / anchor:6.2f}")
    net = min(cases["bkcore build (http)"]) - floor
    print(f"bkcore download cost without start-up: {net:.3f} s = {args.size_mb / net:.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
