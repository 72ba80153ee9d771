"""What talking to ``bkcore daemon`` costs next to doing the same work embedded.

Starts a daemon on a temporary root and unix socket, fills its store with N small snapshots
(raw LLB FileOps solved through Control.Solve), then measures, interleaved per round:

* ``Info`` round trip on one open connection (anchor: building the same reply in-process,
  i.e. what the wire adds);
* ``DiskUsage`` over the socket (anchor: ``du_cmd.collect`` on the same store in-process);
* ``bkcore --addr ... du`` as a process (anchor: ``bkcore --root ... du``, embedded);
* a cached ``Solve`` of one FileOp over the socket (anchor: none; printed as is).

Prints medians and the ratio to the anchor. No figure is asserted.

    python bench/daemon_control.py [--rounds 5] [--records 50] [--n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def start(tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    root = tmp / "root"
    address = f"unix://{tmp}/bench.sock"
    log = tmp / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bkcore", "--root", str(root), "daemon", "--addr", address],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while b"listening on" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon did not start: {log.read_text()}")
        time.sleep(0.05)
    return proc, address, root


def definition(i: int) -> Any:
    from bkcore import llb
    from bkcore.llb import pb

    graph = llb.scratch().file(llb.mkfile(f"/f{i}", 0o644, str(i).encode() * 100))
    return pb.Definition().parse(graph.marshal().to_bytes())


async def measure(address: str, root: Path, records: int, n: int) -> dict[str, float]:
    from bkcore.api.client import Client
    from bkcore.api.pb import control as cpb
    from bkcore.api.server import ControlServicer
    from bkcore.cli.du_cmd import collect, open_store

    out: dict[str, float] = {}
    async with Client(address) as client:
        for i in range(records):
            await client.solve(cpb.SolveRequest(definition=definition(i)))
        t = time.perf_counter()
        for _ in range(n):
            await client.info()
        out["info_wire"] = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for _ in range(n):
            cpb.InfoResponse(buildkit_version=ControlServicer.version())
        out["info_local"] = (time.perf_counter() - t) / n * 1e6
        k = max(1, n // 20)
        t = time.perf_counter()
        for _ in range(k):
            got = await client.disk_usage()
        out["du_wire"] = (time.perf_counter() - t) / k * 1e3
        assert len(got) >= records
        t = time.perf_counter()
        for _ in range(k):
            store = open_store(root)
            assert store is not None
            try:
                collect(store)
            finally:
                store.close()
        out["du_local"] = (time.perf_counter() - t) / k * 1e3
        t = time.perf_counter()
        for _ in range(k):
            await client.solve(cpb.SolveRequest(definition=definition(0)))
        out["solve_cached"] = (time.perf_counter() - t) / k * 1e3
    return out


def cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bkcore", *args], check=True, capture_output=True)
    return (time.perf_counter() - t) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--records", type=int, default=50)
    parser.add_argument("--n", type=int, default=200)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bkcore-bench-daemon-") as tmp:
        proc, address, root = start(Path(tmp))
        try:
            rows: dict[str, list[float]] = {}
            for r in range(opts.rounds):
                got = asyncio.run(measure(address, root, opts.records if r == 0 else 0, opts.n))
                got["cli_remote"] = cli("--addr", address, "du")
                got["cli_embedded"] = cli("--root", str(root), "du")
                for key, value in got.items():
                    rows.setdefault(key, []).append(value)
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(60)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"daemon Control calls ({opts.records} records, {opts.rounds} rounds, medians)")
    print(
        f"  Info round trip      {med['info_wire']:9.1f} us  in-process {med['info_local']:7.1f} us"
        f"   ratio {med['info_wire'] / med['info_local']:7.1f}x"
    )
    print(
        f"  DiskUsage            {med['du_wire']:9.2f} ms  in-process {med['du_local']:7.2f} ms"
        f"   ratio {med['du_wire'] / med['du_local']:7.2f}x"
    )
    print(
        f"  bkcore du (process)  {med['cli_remote']:9.1f} ms"
        f"  embedded   {med['cli_embedded']:7.1f} ms"
        f"   ratio {med['cli_remote'] / med['cli_embedded']:7.2f}x"
    )
    print(f"  Solve, cached FileOp {med['solve_cached']:9.2f} ms")


if __name__ == "__main__":
    main()
