"""Record what buildctl and a daemon say to each other (the gRPC messages of every top-level
HTTP/2 stream), for the replay tests in tests/integration/test_d6interop_*.py.

Usage (as root, beside a running daemon -- bkcore's or BuildKit's own)::

    python tests/data/buildctl/record.py --listen /tmp/rec.sock --upstream /tmp/daemon.sock \\
        --out tests/data/buildctl/NAME.json &
    buildctl --addr unix:///tmp/rec.sock build ...
    kill %1      # the file is written when each connection closes

Every gRPC message on a stream of the connection is written as one sample
``{"conn", "stream", "path", "direction", "hex"}`` in arrival order (``direction`` is
``client->daemon`` or ``daemon->client``), plus the request headers of each stream
(``metadata``, without pseudo-headers) and its trailers (``grpc-status``, ``grpc-message``).
The bytes of Control.Session (the nested HTTP/2 connection of the session tunnel) are left
out: a replay serves the session with bkcore's own attachables.

Plain Python (hpack for the header blocks); no Go, nothing of BuildKit's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
from pathlib import Path
from typing import Any

import hpack

SESSION_PATH = "/moby.buildkit.v1.Control/Session"
HEADERS, DATA, CONTINUATION = 0x1, 0x0, 0x9
END_STREAM, END_HEADERS, PADDED, PRIORITY = 0x1, 0x4, 0x8, 0x20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Direction:
    """Passive HTTP/2 parser of one direction of a connection."""

    def __init__(self, rec: Recorder, conn: int, name: str, preface: bool) -> None:
        self.rec = rec
        self.conn = conn
        self.name = name
        self.buf = bytearray()
        self.need_preface = preface
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 1 << 20
        self.block: dict[int, bytearray] = {}
        self.data: dict[int, bytearray] = {}

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        if self.need_preface:
            if len(self.buf) < len(PREFACE):
                return
            del self.buf[: len(PREFACE)]
            self.need_preface = False
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            kind, flags = self.buf[3], self.buf[4]
            stream = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
            payload = bytes(self.buf[9 : 9 + length])
            del self.buf[: 9 + length]
            self.frame(kind, flags, stream, payload)

    def frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind in (HEADERS, DATA) and flags & PADDED:
            pad = payload[0]
            payload = payload[1 : len(payload) - pad]
        if kind == HEADERS:
            if flags & PRIORITY:
                payload = payload[5:]
            self.block[stream] = bytearray(payload)
            if flags & END_HEADERS:
                self.headers(stream)
        elif kind == CONTINUATION:
            self.block.setdefault(stream, bytearray()).extend(payload)
            if flags & END_HEADERS:
                self.headers(stream)
        elif kind == DATA:
            buf = self.data.setdefault(stream, bytearray())
            buf += payload
            while len(buf) >= 5:
                size = int.from_bytes(buf[1:5], "big")
                if len(buf) < 5 + size:
                    break
                self.rec.message(self.conn, stream, self.name, bytes(buf[5 : 5 + size]))
                del buf[: 5 + size]

    def headers(self, stream: int) -> None:
        block = bytes(self.block.pop(stream))
        fields = [(str(k), str(v)) for k, v in self.decoder.decode(block)]
        self.rec.headers(self.conn, stream, self.name, fields)


class Recorder:
    def __init__(self, upstream: str, out: Path) -> None:
        self.upstream = upstream
        self.out = out
        self.samples: list[dict[str, Any]] = []
        self.streams: dict[tuple[int, int], dict[str, Any]] = {}
        self.conns = 0

    def headers(
        self, conn: int, stream: int, direction: str, fields: list[tuple[str, str]]
    ) -> None:
        key = (conn, stream)
        info = self.streams.setdefault(key, {"conn": conn, "stream": stream})
        pseudo = dict(f for f in fields if f[0].startswith(":"))
        if ":path" in pseudo:
            info["path"] = pseudo[":path"]
            info["metadata"] = [
                [k, v]
                for k, v in fields
                if not k.startswith(":") and k not in ("te", "user-agent", "grpc-timeout")
            ]
            self.samples.append({**info, "direction": direction, "kind": "headers"})
        else:
            status = [[k, v] for k, v in fields if k.startswith("grpc-")]
            if status:
                self.samples.append(
                    {
                        "conn": conn,
                        "stream": stream,
                        "path": info.get("path", ""),
                        "direction": direction,
                        "kind": "trailers",
                        "trailers": status,
                    }
                )

    def message(self, conn: int, stream: int, direction: str, body: bytes) -> None:
        path = self.streams.get((conn, stream), {}).get("path", "")
        if path == SESSION_PATH:
            return
        self.samples.append(
            {
                "conn": conn,
                "stream": stream,
                "path": path,
                "direction": direction,
                "kind": "message",
                "hex": body.hex(),
            }
        )

    def save(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"samples": self.samples}, indent=1) + "\n")
        os.replace(tmp, self.out)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conns += 1
        conn = self.conns
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        to_daemon = Direction(self, conn, "client->daemon", preface=True)
        to_client = Direction(self, conn, "daemon->client", preface=False)

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, parser: Direction
        ) -> None:
            try:
                while chunk := await src.read(1 << 16):
                    parser.feed(chunk)
                    dst.write(chunk)
                    await dst.drain()
            finally:
                dst.close()

        await asyncio.gather(
            pipe(reader, up_writer, to_daemon),
            pipe(up_reader, writer, to_client),
            return_exceptions=True,
        )
        self.save()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    rec = Recorder(args.upstream, args.out)
    server = await asyncio.start_unix_server(rec.serve, args.listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
