"""OCI and docker tarball layouts (spec/exporters.md §5) from an image in a content store."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bkcore.cache.content import ContentStore
from bkcore.cache.db import Database
from bkcore.errors import ExportError
from bkcore.layers.chain import LayerBlob
from bkcore.llb.platforms import Platform
from bkcore.plugins.exporters.imagecommon import (
    BuiltImage,
    PlatformImage,
    image_config,
    index_bytes,
    manifest_bytes,
    sha256,
)
from bkcore.plugins.exporters.imagecommon_archive import (
    archive_chunks,
    archive_entries,
    familiar_name,
)
from bkcore.registry_client import Descriptor, ImageReference
from bkcore.registry_client import mediatypes as mt

PLAT = Platform("linux", "amd64")


def built(tmp_path: Path, *, oci: bool, index: bool = False) -> BuiltImage:
    db = Database(tmp_path / "m.db")
    content = ContentStore(tmp_path / "content", db)
    layer_bytes = b"\x1f\x8b fake layer"
    layer_digest = content.ingest(io.BytesIO(layer_bytes))
    lb = LayerBlob(layer_digest, len(layer_bytes), "sha256:" + "1" * 64, "gzip", 0.0, "x", "s")
    config = image_config(None, PLAT, [lb], epoch=0, buildinfo=None)
    config_desc = Descriptor(
        mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG, content.ingest(io.BytesIO(config)), len(config)
    )
    layer_desc = Descriptor(
        mt.OCI_LAYER_GZIP if oci else mt.DOCKER_LAYER_GZIP, layer_digest, len(layer_bytes)
    )
    manifest = manifest_bytes(config_desc, [layer_desc], oci, {})
    mtype = mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST
    desc = Descriptor(
        mtype, content.ingest(io.BytesIO(manifest)), len(manifest), PLAT, {"d.k": "v"}
    )
    image = PlatformImage(desc, manifest, config_desc, config, [lb], [layer_desc])
    store: Any = SimpleNamespace(content=content)
    if not index:
        top = Descriptor(mtype, desc.digest, desc.size)
        return BuiltImage(top, manifest, [image], store, oci)
    data = index_bytes([desc], oci, {})
    top = Descriptor(mt.OCI_INDEX, content.ingest(io.BytesIO(data)), len(data))
    return BuiltImage(top, data, [image], store, oci)


def read(entries: Any) -> tuple[list[tarfile.TarInfo], dict[str, bytes], bytes]:
    raw = b"".join(archive_chunks(entries))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
        files = {m.name: tf.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
    return members, files, raw


def test_oci_layout(tmp_path: Path) -> None:
    image = built(tmp_path, oci=True)
    entries = archive_entries(image, ["example.com/team/app:v1"], docker=False, epoch=1_000_000_000)
    members, files, raw = read(entries)
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[:2] == ["blobs", "blobs/sha256"]  # written as "blobs/" and "blobs/sha256/"
    assert raw[:6] == b"blobs/"
    assert names[-3:] == ["index.json", "manifest.json", "oci-layout"]
    blobs = [m for m in members if m.name.startswith("blobs/sha256/")]
    assert len(blobs) == 3  # layer, config, manifest
    for m in members:
        assert (m.uid, m.gid, m.mtime, m.uname, m.gname) == (0, 0, 0, "", "")
        expected = {"index.json": 0o644, "manifest.json": 0o644}.get(m.name, 0o444)
        assert m.mode == (0o755 if m.isdir() else expected)
        if m.isfile() and m.name.startswith("blobs/"):
            assert sha256(files[m.name]) == "sha256:" + m.name.rsplit("/", 1)[1]
    assert raw[257:263] == b"ustar\x00" and raw.endswith(bytes(1024))
    assert files["oci-layout"] == b'{"imageLayoutVersion":"1.0.0"}'
    index = json.loads(files["index.json"])
    assert files["index.json"].startswith(b'{"schemaVersion":2,"manifests":[{"mediaType":')
    (desc,) = index["manifests"]
    assert desc["digest"] == image.top.digest and desc["platform"] == {
        "architecture": "amd64",
        "os": "linux",
    }
    assert desc["annotations"] == {
        "d.k": "v",  # an annotation-manifest-descriptor attr
        "io.containerd.image.name": "example.com/team/app:v1",
        "org.opencontainers.image.created": "2001-09-09T01:46:40Z",
        "org.opencontainers.image.ref.name": "v1",
    }
    manifest = json.loads(files["manifest.json"])
    assert manifest == [
        {
            "Config": "blobs/sha256/" + image.images[0].config.digest[7:],
            "RepoTags": None,
            "Layers": ["blobs/sha256/" + image.images[0].layers[0].digest[7:]],
        }
    ]
    # the same image and epoch give the same bytes
    again = archive_entries(image, ["example.com/team/app:v1"], docker=False, epoch=1_000_000_000)
    assert read(again)[2] == raw


def test_docker_repo_tags_and_no_name(tmp_path: Path) -> None:
    image = built(tmp_path, oci=False)
    entries = archive_entries(image, ["busybox", "example.com/a/b:t"], docker=True, epoch=None)
    _, files, _ = read(entries)
    assert json.loads(files["manifest.json"])[0]["RepoTags"] == [
        "busybox:latest",
        "example.com/a/b:t",
    ]
    index = json.loads(files["index.json"])
    assert [d["annotations"]["io.containerd.image.name"] for d in index["manifests"]] == [
        "docker.io/library/busybox:latest",
        "example.com/a/b:t",
    ]
    _, files, _ = read(archive_entries(image, [], docker=False, epoch=5))
    (desc,) = json.loads(files["index.json"])["manifests"]
    assert desc["annotations"] == {
        "d.k": "v",
        "org.opencontainers.image.created": "1970-01-01T00:00:05Z",
    }


def test_index_layout_and_docker_refuses_it(tmp_path: Path) -> None:
    image = built(tmp_path, oci=True, index=True)
    members, files, _ = read(archive_entries(image, [], docker=False, epoch=0))
    assert "manifest.json" not in files
    assert len([m for m in members if m.name.startswith("blobs/sha256/")]) == 4
    assert "platform" not in json.loads(files["index.json"])["manifests"][0]
    with pytest.raises(ExportError, match="manifest lists"):
        archive_entries(image, [], docker=True, epoch=0)


def test_missing_blob_is_an_error_before_any_byte(tmp_path: Path) -> None:
    image = built(tmp_path, oci=True)
    image.store.content.delete(image.images[0].layers[0].digest)
    with pytest.raises(ExportError, match="missing from the content store"):
        archive_entries(image, [], docker=False, epoch=0)


def test_image_without_layers_needs_no_store(tmp_path: Path) -> None:
    image = built(tmp_path, oci=True)
    part = image.images[0]
    empty = PlatformImage(part.descriptor, part.manifest, part.config, part.config_bytes, [], [])
    scratch = BuiltImage(image.top, image.top_bytes, [empty], None, True)
    _, files, _ = read(archive_entries(scratch, [], docker=False, epoch=0))
    assert files["blobs/sha256/" + part.config.digest[7:]] == part.config_bytes
    assert json.loads(files["manifest.json"])[0]["Layers"] == []


def test_familiar_names() -> None:
    assert familiar_name(ImageReference.parse("busybox")) == "busybox:latest"
    assert familiar_name(ImageReference.parse("docker.io/spec-probe/x1:v1")) == "spec-probe/x1:v1"
    assert familiar_name(ImageReference.parse("127.0.0.1:5000/a:b")) == "127.0.0.1:5000/a:b"
