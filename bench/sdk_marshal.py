"""Marshal speed of the typed LLB SDK (``State.marshal``) for large graphs, with anchors.

For graphs of 100, 1,500 and 10,000 ops (a chain alternating ``run`` and ``file`` ops, and a
fan-in: N runs on one base copied into one directory), measured in the same invocation:

* ``marshal``: ``state.marshal(platform=..., local_unique_id=...)`` -- the SDK walk, every op's
  pb message, the Go-identical encoding, digests, metadata and the Definition bytes;
* anchor ``betterproto``: ``bytes(op)`` of the same ``pb.Op`` messages (decoded from the
  Definition beforehand; betterproto's own encoder, not Go-identical);
* anchor ``sha256``: ``hashlib.sha256`` over the same op bytes (the digest floor).

Prints the median ops/s of each and the ratio marshal/anchor (time per op). Build time of the
graph itself (``run``/``file`` calls) is printed separately. No figure is asserted.

    python bench/sdk_marshal.py [--rounds 5] [--sizes 100,1500,10000]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
import time
from collections.abc import Callable

PLATFORM = "linux/amd64"
UNIQUE = "benchuniqueid000000000000"


def chain(n: int) -> object:
    from bkcore import llb

    st = llb.image("docker.io/library/busybox:latest").with_cwd("/w")
    for i in range(n - 1):  # + the image source = n ops
        if i % 2:
            st = st.run(
                ["sh", "-c", f"echo {i} > /f{i}"], mounts=[llb.cache("/root/.cache", "c")]
            ).root()
        else:
            st = st.file(llb.mkdir(f"d{i}", parents=True).mkfile(f"d{i}/x", data=f"{i}"))
    return st


def fanin(n: int) -> object:
    from bkcore import llb

    base = llb.image("docker.io/library/busybox:latest")
    act = llb.mkdir("/out")
    for i in range(n - 2):  # + the image and the final file op = n ops
        act = act.copy(base.run(["sh", "-c", f"part {i}"]).root(), f"/p{i}", f"/out/p{i}")
    return llb.scratch().file(act)


def _time(fn: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="100,1500,10000")
    args = parser.parse_args()

    from bkcore import llb
    from bkcore.llb import pb

    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"{'graph':<16}{'ops':>7}{'build ms':>10}{'marshal ops/s':>15}"
        f"{'betterproto ops/s':>19}{'sha256 ops/s':>14}{'x betterproto':>15}{'x sha256':>10}"
    )
    for shape, make in (("chain run/file", chain), ("fan-in copies", fanin)):
        for n in sizes:
            start = time.perf_counter()
            state = make(n)
            build = time.perf_counter() - start
            assert isinstance(state, llb.State)

            def do_marshal(st: llb.State = state) -> llb.Definition:
                return st.marshal(platform=PLATFORM, local_unique_id=UNIQUE)

            defn = do_marshal()
            raw = defn.ops
            msgs = [pb.Op().parse(b) for b in raw]
            ops = len(raw)
            rounds = max(1, args.rounds if ops <= 2000 else args.rounds // 2)
            tm: list[float] = []
            tb: list[float] = []
            ts: list[float] = []

            def encode(msgs: list[pb.Op] = msgs) -> list[bytes]:
                return [bytes(m) for m in msgs]

            def digest(raw: tuple[bytes, ...] = raw) -> list[bytes]:
                return [hashlib.sha256(b).digest() for b in raw]

            for _ in range(rounds):  # interleaved rounds; medians
                tm.append(_time(do_marshal))
                tb.append(_time(encode))
                ts.append(_time(digest))
            t_marshal, t_bp, t_sha = (statistics.median(t) for t in (tm, tb, ts))
            print(
                f"{shape:<16}{ops:>7}{build * 1e3:>10.1f}{ops / t_marshal:>15,.0f}"
                f"{ops / t_bp:>19,.0f}{ops / t_sha:>14,.0f}"
                f"{t_marshal / t_bp:>15.2f}{t_marshal / t_sha:>10.1f}"
            )


if __name__ == "__main__":
    main()
