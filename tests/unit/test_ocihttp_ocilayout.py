"""oci-layout source pieces without root: identifier parsing, the content-store attachable
(client) and its daemon side over the in-process session transport (Info, streamed Read
verified against the digest, unknown stores, digests that would be paths), resolving an
index for a platform, and the ``--oci-layout`` flag."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from bkcore.cli.build_cmd import UsageError, parse_args
from bkcore.errors import SessionError, SourceError
from bkcore.llb.platforms import Platform
from bkcore.pluginmanager import BkPluginManager
from bkcore.session.session import Session
from bkcore.sources.oci_layout.client import LayoutStores
from bkcore.sources.oci_layout.content import (
    READ,
    READ_CHUNK,
    STORE_ID_HEADER,
    ReadContentRequest,
    ReadContentResponse,
    SessionContentStore,
)
from bkcore.sources.oci_layout.resolve import resolve_layout
from bkcore.sources.oci_layout.spec import parse

LABEL = "oci-layout://test"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layout(root: Path, blobs: list[bytes]) -> Path:
    (root / "blobs" / "sha256").mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    for data in blobs:
        (root / "blobs" / "sha256" / sha(data)[7:]).write_bytes(data)
    return root


def store_for(layouts: dict[str, Path], name: str) -> SessionContentStore:
    session = Session()
    session.allow(LayoutStores({k: str(v) for k, v in layouts.items()}))
    return SessionContentStore(session.caller(), "oci:" + name, LABEL)


# -- identifiers --------------------------------------------------------------------------------
def test_parse_name_digest_store_and_limit() -> None:
    digest = sha(b"x")
    spec = parse(f"oci-layout://base@{digest}", {}, "linux/arm64")
    assert (spec.name, spec.digest, spec.store, spec.store_id) == (
        "base",
        digest,
        "base",
        "oci:base",
    )
    assert spec.platform == Platform("linux", "arm64")
    tagged = parse(
        f"oci-layout://docker.io/library/ctx:v1@{digest}",
        {"oci.store": "mystore", "oci.session": "s1", "oci.layerlimit": "2"},
        None,
    )
    assert tagged.name == "docker.io/library/ctx" and tagged.store == "mystore"
    assert tagged.session == "s1" and tagged.layer_limit == 2
    assert parse(f"oci-layout://host:5000/x@{digest}", {}, None).name == "host:5000/x"


@pytest.mark.parametrize(
    ("identifier", "attrs", "message"),
    [
        ("oci-layout://base:latest", {}, "must name a digest"),
        ("oci-layout://base@sha256:abc", {}, "must name a digest"),
        ("docker-image://base@" + "sha256:" + "0" * 64, {}, "expected oci-layout://"),
        ("oci-layout://@" + "sha256:" + "0" * 64, {}, "no store name"),
        ("oci-layout://b@" + "sha256:" + "0" * 64, {"oci.layerlimit": "0"}, "oci.layerlimit"),
        ("oci-layout://b@" + "sha256:" + "0" * 64, {"oci.layerlimit": "x"}, "oci.layerlimit"),
    ],
)
def test_parse_refuses(identifier: str, attrs: dict[str, str], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse(identifier, attrs, None)


# -- the content store over a session -----------------------------------------------------------
def test_info_and_verified_reads(tmp_path: Path) -> None:
    big = bytes(range(256)) * (3 * READ_CHUNK // 256 + 7)  # several chunks
    small = b'{"hello": 1}'
    store = store_for({"a": make_layout(tmp_path / "a", [big, small])}, "a")

    async def run() -> None:
        assert await store.info(sha(big)) == len(big)
        assert await store.read_bytes(sha(small), None, 1 << 20) == small
        with pytest.raises(SourceError, match="limit"):
            await store.read_bytes(sha(big), len(big), 1024)
        seen: list[int] = []
        dest = tmp_path / "out.bin"
        assert await store.fetch_blob(sha(big), dest, len(big), seen.append) == len(big)
        assert dest.read_bytes() == big
        assert seen[-1] == len(big) and len(seen) >= 3

    asyncio.run(run())


def test_corrupted_or_short_blob_is_refused_and_nothing_left(tmp_path: Path) -> None:
    data = b"layer bytes" * 1000
    layout = make_layout(tmp_path / "a", [data])
    blob = layout / "blobs" / "sha256" / sha(data)[7:]
    blob.write_bytes(data[:-1] + b"X")
    store = store_for({"a": layout}, "a")
    dest = tmp_path / "dest"

    async def run() -> None:
        with pytest.raises(SourceError, match="blob digest mismatch"):
            await store.fetch_blob(sha(data), dest, len(data), None)
        blob.write_bytes(data[:-10])
        with pytest.raises(SourceError, match="has 10990 bytes, expected 11000"):
            await store.fetch_blob(sha(data), dest, len(data), None)
        blob.write_bytes(data + b"more")
        with pytest.raises(SourceError, match="larger than"):
            await store.fetch_blob(sha(data), dest, len(data), None)

    asyncio.run(run())
    assert list(tmp_path.iterdir()) == [tmp_path / "a"]  # no dest, no partial file


def test_missing_blob_unknown_store_and_path_digests(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "a", [b"x"])
    (tmp_path / "secret").write_bytes(b"outside")

    async def run() -> None:
        store = store_for({"a": layout}, "a")
        with pytest.raises(SourceError, match="not found in store 'oci:a'"):
            await store.info(sha(b"y"))
        with pytest.raises(SourceError, match="not found in store"):
            await store.read_bytes(sha(b"y"), 1, 10)
        with pytest.raises(SessionError, match="the client has no store 'oci:b'"):
            await store_for({"a": layout}, "b").info(sha(b"x"))
        with pytest.raises(SourceError, match="malformed digest"):
            await store.info("sha256:../../secret")
        # The client refuses such digests on its own too (a daemon is not trusted).
        session = Session()
        session.allow(LayoutStores({"a": str(layout)}))
        caller = session.caller()
        with pytest.raises(SessionError, match="invalid digest"):
            async with caller.open_stream(
                READ, ReadContentResponse, [(STORE_ID_HEADER, "oci:a")]
            ) as call:
                await call.send(ReadContentRequest(digest="sha256/../../../secret"))
                await call.end()
                await call.recv()

    asyncio.run(run())


def test_read_honours_offset_and_size(tmp_path: Path) -> None:
    data = bytes(range(200))
    session = Session()
    session.allow(LayoutStores({"a": str(make_layout(tmp_path / "a", [data]))}))
    caller = session.caller()

    async def run() -> list[Any]:
        got = []
        async with caller.open_stream(
            READ, ReadContentResponse, [(STORE_ID_HEADER, "oci:a")]
        ) as call:
            await call.send(ReadContentRequest(digest=sha(data), offset=50, size=100))
            await call.end()
            while (msg := await call.recv()) is not None:
                got.append(msg)
        return got

    msgs = asyncio.run(run())
    assert b"".join(m.data for m in msgs) == data[50:150]
    assert msgs[0].offset == 50


def test_layout_stores_refuse_a_plain_directory(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="not an OCI layout"):
        LayoutStores({"x": str(tmp_path)})


# -- resolving ----------------------------------------------------------------------------------
def _image(arch: str, layer: bytes) -> tuple[bytes, bytes]:
    diff = sha(layer)
    config = json.dumps(
        {"os": "linux", "architecture": arch, "rootfs": {"type": "layers", "diff_ids": [diff]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": "x", "digest": sha(layer), "size": len(layer)}],
        }
    ).encode()
    return manifest, config


def test_resolve_index_for_a_platform(tmp_path: Path) -> None:
    m1, c1 = _image("amd64", b"L1")
    m2, c2 = _image("arm64", b"L2")
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "digest": sha(m1),
                    "size": len(m1),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
                {
                    "digest": sha(m2),
                    "size": len(m2),
                    "platform": {"os": "linux", "architecture": "arm64"},
                },
            ],
        }
    ).encode()
    store = store_for({"a": make_layout(tmp_path / "a", [m1, c1, m2, c2, index])}, "a")
    got = asyncio.run(resolve_layout(store, sha(index), Platform("linux", "arm64")))
    assert (got.root_digest, got.manifest_digest, got.config) == (sha(index), sha(m2), c2)
    assert [(layer.digest, layer.diff_id) for layer in got.layers] == [(sha(b"L2"), sha(b"L2"))]
    direct = asyncio.run(resolve_layout(store, sha(m1), Platform("linux", "arm64")))
    assert direct.manifest_digest == sha(m1)  # a manifest is used whatever the platform
    with pytest.raises(SourceError, match="no manifest for platform linux/s390x"):
        asyncio.run(resolve_layout(store, sha(index), Platform("linux", "s390x")))
    with pytest.raises(SourceError, match="neither an index nor a manifest"):
        asyncio.run(resolve_layout(store, sha(c1), Platform("linux", "amd64")))


# -- wiring -------------------------------------------------------------------------------------
def test_cli_flag_and_attachable_registration(tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "lay", [])
    args = parse_args(["--oci-layout", f"base={layout}"])
    assert args.options(b"").oci_layouts == {"base": str(layout)}
    with pytest.raises(UsageError, match="given twice"):
        parse_args(["--oci-layout", f"b={layout}", "--oci-layout", f"b={layout}"])
    with pytest.raises(UsageError, match="not an OCI layout"):
        parse_args(["--oci-layout", f"b={tmp_path}"])
    with pytest.raises(UsageError, match="expected NAME=DIR"):
        parse_args(["--oci-layout", "nodir"])
    manager = BkPluginManager()
    manager.load_builtins()
    target = manager.registry("attachables").load("ocistore")
    attachable = target({"base": str(layout)})
    assert set(attachable.handlers()) == {
        "/containerd.services.content.v1.Content/Info",
        "/containerd.services.content.v1.Content/Read",
    }


def test_source_resolves_a_config_for_frontends(tmp_path: Path) -> None:
    """What a bridge's ``resolve_oci_layout_config`` calls (Dockerfile named contexts)."""
    from types import SimpleNamespace

    from bkcore.session.manager import SessionManager
    from bkcore.sources.oci_layout.source import OCILayoutSource

    manifest, config = _image("arm64", b"L")
    layout = make_layout(tmp_path / "a", [manifest, config])

    async def run() -> tuple[str, bytes]:
        sessions = SessionManager()
        session = Session()
        session.allow(LayoutStores({"ctx": str(layout)}))
        sessions.attach(session)
        other = Session()  # a session without the store is skipped
        sessions.attach(other)
        engine: Any = SimpleNamespace(sessions=sessions, platform="linux/arm64")
        return await OCILayoutSource().resolve_layout_config(
            engine,
            f"docker.io/library/ctx@{sha(manifest)}",
            store_id="ctx",
            session_ids=[other.id, session.id],
        )

    assert asyncio.run(run()) == (sha(manifest), config)
