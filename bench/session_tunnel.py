"""Benchmark: the Control.Session gRPC tunnel against the in-process session transport.

In one invocation, on the same generated tree (default 10,000 files / 100 MB), each row
timed ``--rounds`` times alternating the transports so background load hits both alike:

* first sync of the whole tree (FileSync DiffCopy: STATs, REQs, 32 KiB DATA chunks), also
  as MB/s and files/s (per wall second and per CPU second of the process);
* a one-file incremental re-sync;
* a 64 MiB file export through FileSend (raw BytesMessage chunks of 1 MiB);
* 1,000 sequential unary Health/Check calls.

The tunnel runs over a real unix socket in this process (grpclib server hosting only
Control.Session, grpclib client serving the session), so both inner and outer HTTP/2 and
protobuf framing are included. Prints median wall seconds (and CPU seconds of the process)
per transport and the tunnel/in-process ratio. No figure is asserted.

Usage: python bench/session_tunnel.py [--files N] [--mb M] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bkcore.session import Caller, Session, SessionManager
from bkcore.session.filesync import send_file_to_client, sync_dir
from bkcore.session.filesync.walker import RACY_NS
from bkcore.session.health import HEALTH_CHECK, HealthCheckRequest, HealthCheckResponse
from bkcore.sessions.filesync import FileSendTarget, FileSyncProvider


def generate(root: Path, files: int, total: int) -> list[Path]:
    rng = random.Random(7)
    blob = os.urandom(max(1, total // files) * 4)
    paths = []
    for i in range(files):
        d = root / f"d{i // 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(0, 2 * (total // files))
        p = d / f"f{i:05d}"
        off = rng.randint(0, len(blob) - size - 1) if size < len(blob) - 1 else 0
        p.write_bytes(blob[off : off + size])
        paths.append(p)
    return paths


@asynccontextmanager
async def tunnel(session: Session) -> AsyncIterator[Caller]:
    from grpclib.client import Channel
    from grpclib.server import Server

    from bkcore.api.codec import GoCodec
    from bkcore.session.grpc_transport import SessionService, attach_session

    sockdir = tempfile.mkdtemp(prefix="bkst", dir="/tmp")
    manager = SessionManager()
    server = Server([SessionService(manager)], codec=GoCodec())
    await server.start(path=os.path.join(sockdir, "s"))
    channel = Channel(path=os.path.join(sockdir, "s"), codec=GoCodec())
    try:
        async with attach_session(channel, session):
            yield (await manager.get(session.id)).caller
    finally:
        channel.close()
        server.close()
        await server.wait_closed()
        shutil.rmtree(sockdir)


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    await fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"load average: {os.getloadavg()}")
    work = Path(tempfile.mkdtemp(prefix="bkst-tree"))
    try:
        src = work / "src"
        paths = generate(src, args.files, args.mb << 20)
        time.sleep(RACY_NS / 1e9 + 0.01)
        session = Session()
        session.allow(FileSyncProvider({"ctx": str(src)}))
        session.allow(FileSendTarget(file=str(work / "out.bin")))
        big = os.urandom(1 << 20)
        rows: dict[str, dict[str, list[tuple[float, float]]]] = {}

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(64):
                yield big

        async def one_round(name: str, caller: Caller, r: int) -> None:
            dst = work / f"dst-{name}-{r}"

            def add(row: str, t: tuple[float, float]) -> None:
                rows.setdefault(row, {}).setdefault(name, []).append(t)

            add("first sync", await timed(lambda: sync_dir(caller, "ctx", str(dst))))
            victim = paths[r * 37 % len(paths)]
            os.utime(victim, ns=(time.time_ns(), time.time_ns() - 10**9 * (r + 2)))
            time.sleep(RACY_NS / 1e9 + 0.01)
            add("one-file re-sync", await timed(lambda: sync_dir(caller, "ctx", str(dst))))
            add(
                "64 MiB file export",
                await timed(lambda: send_file_to_client(caller, chunks())),
            )

            async def health() -> None:
                for _ in range(1000):
                    await caller.call_unary(HEALTH_CHECK, HealthCheckRequest(), HealthCheckResponse)

            add("1000 unary calls", await timed(health))
            shutil.rmtree(dst)

        async def run_all() -> None:
            for r in range(args.rounds):
                await one_round("in-process", session.caller(), r)
                async with tunnel(session) as caller:
                    await one_round("grpc tunnel", caller, r)

        asyncio.run(run_all())
        print(f"{args.files} files, {args.mb} MB, {args.rounds} rounds (median wall s / cpu s)")
        print(f"{'row':22} {'in-process':>18} {'grpc tunnel':>18} {'ratio':>7}")
        for row, by in rows.items():
            med = {
                k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
                for k, v in by.items()
            }
            a, b = med["in-process"], med["grpc tunnel"]
            print(
                f"{row:22} {a[0]:8.3f} / {a[1]:7.3f} {b[0]:8.3f} / {b[1]:7.3f} "
                f"{b[0] / a[0] if a[0] else float('nan'):6.2f}x"
            )
        total = sum(p.stat().st_size for p in paths)
        first = rows["first sync"]
        print(f"first sync throughput (median wall; {total / 1e6:.1f} MB, {len(paths)} files):")
        for name, times in first.items():
            wall = statistics.median(w for w, _ in times)
            cpu = statistics.median(c for _, c in times)
            print(
                f"  {name:12} {total / 1e6 / wall:8.1f} MB/s {len(paths) / wall:9.0f} files/s"
                f"   per CPU second: {total / 1e6 / cpu:8.1f} MB/s {len(paths) / cpu:9.0f} files/s"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
