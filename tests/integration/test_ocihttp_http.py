"""The http(s):// source through `bkcore build` against a stdlib HTTP server on loopback.

The server (in this file) counts every request and answers ``If-None-Match`` /
``If-Modified-Since`` with 304, so the tests can prove that an unchanged URL is revalidated
without a second download, that a changed ETag downloads again, that a checksum mismatch
commits nothing, and how the file is named (attr, Content-Disposition, URL), its mode
(default 0600), owner and mtime (Last-Modified).
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bkcore import llb
from bkcore.cache.store import CacheStore

pytestmark = pytest.mark.integration

JAN_2020 = 1577836800  # Wed, 01 Jan 2020 00:00:00 GMT


@dataclass
class Resource:
    body: bytes
    etag: str | None = None
    last_modified: float | None = None
    disposition: str | None = None
    status: int = 200
    gzip: bool = False  # sent with Content-Encoding: gzip when the client accepts it
    head: bool = True  # False: HEAD answers 405


@dataclass
class Server:
    url: str
    resources: dict[str, Resource] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def put(self, path: str, resource: Resource) -> str:
        self.resources[path] = resource
        return self.url + path

    def count(self, method: str, path: str) -> int:
        return sum(1 for m, p, _ in self.requests if m == method and p == path)


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, with_body: bool) -> None:
            path = urlsplit(self.path).path
            server.requests.append((self.command, path, dict(self.headers.items())))
            res = server.resources.get(path)
            if res is not None and not res.head and self.command == "HEAD":
                res = Resource(b"", status=405)
            if res is None or res.status != 200:
                self.send_response(404 if res is None else res.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers: dict[str, str] = {}
            if res.etag is not None:
                headers["ETag"] = res.etag
            if res.last_modified is not None:
                headers["Last-Modified"] = email.utils.formatdate(res.last_modified, usegmt=True)
            if res.disposition is not None:
                headers["Content-Disposition"] = res.disposition
            match = self.headers.get("If-None-Match")
            since = self.headers.get("If-Modified-Since")
            if match is not None:
                tags = [t.strip() for t in match.split(",")]
                not_modified = res.etag is not None and res.etag in tags
            elif since is not None and res.last_modified is not None:
                when = email.utils.parsedate_to_datetime(since).timestamp()
                not_modified = res.last_modified <= when
            else:
                not_modified = False
            body = res.body
            if res.gzip and "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body)
                headers["Content-Encoding"] = "gzip"
            self.send_response(304 if not_modified else 200)
            for key, value in headers.items():
                self.send_header(key, value)
            length = 0 if not_modified else len(body)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if with_body and not not_modified:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    srv = Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler(srv)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def http_snapshots(root: Path) -> list[Any]:
    with CacheStore.open(root) as store:
        return [s for s in store.snapshots.all() if s.description.startswith("http url ")]


def http_vertex(run: Any) -> dict[str, Any]:
    return next(v for v in run.vertices().values() if v["name"].startswith("http://"))


# -- naming, mode, owner, mtime -----------------------------------------------------------------
def test_file_named_after_the_url_with_mode_0600_and_mtime_from_last_modified(
    bk: Any, server: Server
) -> None:
    body = b"payload\n" * 1000
    url = server.put("/files/data.bin", Resource(body, etag='"v1"', last_modified=JAN_2020))
    out = bk.tmp / "out"
    bk.build(llb.http(url), out=out)
    st = (out / "data.bin").lstat()
    assert (out / "data.bin").read_bytes() == body
    assert st.st_mode & 0o7777 == 0o600
    assert st.st_mtime == JAN_2020
    assert [p.name for p in out.iterdir()] == ["data.bin"]


def test_filename_perm_uid_gid_attrs(bk: Any, server: Server) -> None:
    url = server.put("/x", Resource(b"#!/bin/sh\necho hi\n"))
    dl = llb.http(url, filename="run.sh", perm=0o755, uid=1000, gid=1001)
    # The local exporter does not keep owners: look from inside a container.
    run = bk.base().sh(
        "/bin/busybox stat -c '%n %a %u %g %Y' /dl/* > /out/stat",
        mounts=[llb.bind("/dl", dl, readonly=True), llb.bind("/out", llb.scratch())],
    )
    out = bk.tmp / "out"
    bk.build(run.get_mount("/out"), out=out)
    # No Last-Modified: the epoch as mtime, as BuildKit.
    assert (out / "stat").read_text() == "/dl/run.sh 755 1000 1001 0\n"


def test_content_disposition_names_the_file(bk: Any, server: Server) -> None:
    url = server.put(
        "/download", Resource(b"zip?", disposition='attachment; filename="../../evil/report.txt"')
    )
    out = bk.tmp / "out"
    bk.build(llb.http(url), out=out)
    assert [p.name for p in out.iterdir()] == ["report.txt"]  # the base name only
    assert (out / "report.txt").read_bytes() == b"zip?"


def test_gzip_content_encoding_is_decoded_like_go(bk: Any, server: Server) -> None:
    body = b"compressible " * 500
    url = server.put("/enc.txt", Resource(body, gzip=True))
    out = bk.tmp / "out"
    bk.build(llb.http(url, checksum=sha256(body)), out=out)
    assert (out / "enc.txt").read_bytes() == body
    assert server.requests[0][2]["Accept-Encoding"] == "gzip"


def test_file_runs_in_an_exec(bk: Any, server: Server) -> None:
    url = server.put("/tool.sh", Resource(b"#!/bin/sh\necho from-http > /out/x\n"))
    tool = llb.http(url, perm=0o755)
    run = bk.base().run(
        ["/tool/tool.sh"],
        mounts=[llb.bind("/tool", tool, readonly=True), llb.bind("/out", llb.scratch())],
    )
    out = bk.tmp / "out"
    bk.build(run.get_mount("/out"), out=out)
    assert (out / "x").read_text() == "from-http\n"


# -- revalidation -------------------------------------------------------------------------------
def test_unchanged_etag_is_revalidated_without_a_second_download(bk: Any, server: Server) -> None:
    res = Resource(b"version 1\n", etag='"e1"', last_modified=JAN_2020)
    url = server.put("/f.txt", res)
    out1 = bk.tmp / "out1"
    first = bk.build(llb.http(url), out=out1)
    assert not http_vertex(first).get("cached")
    assert server.count("GET", "/f.txt") == 1

    out2 = bk.tmp / "out2"
    second = bk.build(llb.http(url), out=out2)
    assert http_vertex(second).get("cached")
    assert (out2 / "f.txt").read_text() == "version 1\n"
    assert server.count("GET", "/f.txt") == 1  # no second download
    heads = [h for m, p, h in server.requests if m == "HEAD" and p == "/f.txt"]
    assert len(heads) == 1 and heads[0]["If-None-Match"] == '"e1"'
    assert len(http_snapshots(bk.root)) == 1

    # A new ETag: the HEAD no longer matches, the GET (still conditional) downloads.
    server.put("/f.txt", Resource(b"version 2\n", etag='"e2"', last_modified=JAN_2020 + 60))
    out3 = bk.tmp / "out3"
    third = bk.build(llb.http(url), out=out3)
    assert not http_vertex(third).get("cached")
    assert (out3 / "f.txt").read_text() == "version 2\n"
    assert (out3 / "f.txt").lstat().st_mtime == JAN_2020 + 60
    assert server.count("GET", "/f.txt") == 2
    gets = [h for m, p, h in server.requests if m == "GET" and p == "/f.txt"]
    assert gets[1]["If-None-Match"] == '"e1"'
    assert len(http_snapshots(bk.root)) == 2

    # Back to the first version: both ETags are offered, the 304 names the old download.
    server.put("/f.txt", res)
    out4 = bk.tmp / "out4"
    fourth = bk.build(llb.http(url), out=out4)
    assert http_vertex(fourth).get("cached")
    assert (out4 / "f.txt").read_text() == "version 1\n"
    assert server.count("GET", "/f.txt") == 2
    last_head = [h for m, p, h in server.requests if m == "HEAD"][-1]
    assert sorted(t.strip() for t in last_head["If-None-Match"].split(",")) == ['"e1"', '"e2"']


def test_last_modified_alone_is_revalidated_with_if_modified_since(bk: Any, server: Server) -> None:
    url = server.put("/plain.txt", Resource(b"no etag\n", last_modified=JAN_2020))
    bk.build(llb.http(url), out=bk.tmp / "out1")
    second = bk.build(llb.http(url), out=bk.tmp / "out2")
    assert http_vertex(second).get("cached")
    assert server.count("GET", "/plain.txt") == 1
    head = next(h for m, p, h in server.requests if m == "HEAD")
    assert head["If-Modified-Since"] == email.utils.formatdate(JAN_2020, usegmt=True)


def test_server_without_head_is_revalidated_by_the_conditional_get(bk: Any, server: Server) -> None:
    url = server.put("/nohead.txt", Resource(b"v\n", etag='"n1"', head=False))
    bk.build(llb.http(url), out=bk.tmp / "out1")
    second = bk.build(llb.http(url), out=bk.tmp / "out2")
    assert http_vertex(second).get("cached")
    assert (bk.tmp / "out2" / "nohead.txt").read_text() == "v\n"
    methods = [(m, h.get("If-None-Match")) for m, p, h in server.requests]
    assert methods == [("GET", None), ("HEAD", '"n1"'), ("GET", '"n1"')]  # the last got a 304


def test_snapshot_pruned_since_is_downloaded_again(bk: Any, server: Server) -> None:
    """The remembered download is only a hint: after a prune the 304 still gives the key, the
    cache record is gone, so the file is fetched again and checked against the digest."""
    url = server.put("/p.txt", Resource(b"kept\n", etag='"p"'))
    bk.build(llb.http(url), out=bk.tmp / "out1")
    with CacheStore.open(bk.root) as store:
        store.prune()
    assert http_snapshots(bk.root) == []
    out2 = bk.tmp / "out2"
    bk.build(llb.http(url), out=out2)
    assert (out2 / "p.txt").read_text() == "kept\n"
    assert server.count("GET", "/p.txt") == 2


# -- checksum -----------------------------------------------------------------------------------
def test_checksum_keys_without_any_request_when_cached(bk: Any, server: Server) -> None:
    body = b"pinned content\n"
    url = server.put("/pinned", Resource(body, etag='"x"'))
    graph = llb.http(url, checksum=sha256(body))
    bk.build(graph, out=bk.tmp / "out1")
    assert len(server.requests) == 1  # one GET when the op ran; keying asked nothing
    second = bk.build(graph, out=bk.tmp / "out2")
    assert http_vertex(second).get("cached")
    assert len(server.requests) == 1
    assert (bk.tmp / "out2" / "pinned").read_bytes() == body


def test_checksum_mismatch_is_one_error_and_nothing_is_committed(bk: Any, server: Server) -> None:
    url = server.put("/tampered", Resource(b"not what you expect\n"))
    wanted = sha256(b"what you expect\n")
    out = bk.tmp / "out"
    run = bk.build(llb.http(url, checksum=wanted), out=out, check=False)
    assert run.returncode == 1
    line = run.error_line()
    assert url in line and "digest mismatch" in line and wanted in line
    assert not out.exists() or not any(out.iterdir())
    assert http_snapshots(bk.root) == []
    assert not (bk.root / "http-sources").exists()  # nothing remembered either


def test_http_error_status_names_the_url(bk: Any, server: Server) -> None:
    url = server.url + "/missing.txt"
    run = bk.build(llb.http(url), out=bk.tmp / "out", check=False)
    assert run.returncode == 1
    assert f"{url}: invalid response status 404" in run.error_line()
    assert http_snapshots(bk.root) == []


def test_credentials_in_the_url_stay_out_of_descriptions_and_source_errors(
    bk: Any, server: Server
) -> None:
    """The snapshot description and the source's error say ``***@``. (The vertex name is the
    identifier as written, as in BuildKit; the CLI prefixes errors with it.)"""
    server.put("/secret.txt", Resource(b"s\n"))
    url = server.url.replace("http://", "http://user:hunter2@") + "/secret.txt"
    bk.build(llb.http(url), out=bk.tmp / "out")
    assert (bk.tmp / "out" / "secret.txt").read_bytes() == b"s\n"
    snaps = http_snapshots(bk.root)
    assert len(snaps) == 1 and "***@" in snaps[0].description
    assert "hunter2" not in snaps[0].description
    bad = url.replace("secret.txt", "nope.txt")
    run = bk.build(llb.http(bad), out=bk.tmp / "out2", check=False)
    assert run.returncode == 1
    error = http_vertex(run)["error"]
    assert "hunter2" not in error and "http://***@" in error and "404" in error
