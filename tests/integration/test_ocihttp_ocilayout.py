"""The oci-layout:// source through `bkcore build --oci-layout NAME=DIR`.

OCI layouts are written here from the deterministic busybox images of imagefixtures.py; the
build reads them through the session's content store (Info/Read). Covered: an exec running
busybox from a layout, a cached second build, platform selection from an index, layer
limit, snapshots shared with the same image pulled from a registry, a corrupted blob refused
with nothing committed, and one-line errors for a missing digest, an unknown store and a
directory that is not a layout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import imagefixtures as imf
import pytest
from imagefixtures import FixtureImage, busybox_files, make_image, sha

from bkcore import llb
from bkcore.cache.store import CacheStore
from bkcore.llb.platforms import Platform

pytestmark = pytest.mark.integration

LAYER_DESC = "image layer "


def write_layout(root: Path, images: list[FixtureImage], index: bytes | None = None) -> Path:
    """An OCI image layout at ``root`` holding ``images`` (and ``index``)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for data in [b for image in images for b in (image.manifest, image.config, *image.layers)]:
        (blobs / sha(data).split(":", 1)[1]).write_bytes(data)
    top = index if index is not None else images[0].manifest
    if index is not None:
        (blobs / sha(index).split(":", 1)[1]).write_bytes(index)
    media = imf.OCI_INDEX if index is not None else imf.OCI_MANIFEST
    entry = {"mediaType": media, "digest": sha(top), "size": len(top)}
    (root / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": imf.OCI_INDEX, "manifests": [entry]})
    )
    return root


def serve(bk: Any, **layouts: Path) -> None:
    """Make every later ``bk.build`` pass ``--oci-layout NAME=DIR`` for ``layouts``."""
    argv = type(bk).argv.__get__(bk)

    def with_layouts(**options: Any) -> list[str]:
        extra = [a for name, d in layouts.items() for a in ("--oci-layout", f"{name}={d}")]
        return [*argv(**options), *extra]

    bk.argv = with_layouts


def statuses(run: Any) -> set[str]:
    return {s["id"] for event in run.events for s in event.get("statuses", [])}


def image_snapshots(root: Path) -> list[Any]:
    with CacheStore.open(root) as store:
        return [s for s in store.snapshots.all() if s.description.startswith(LAYER_DESC)]


def echo_graph(ref: str, **options: Any) -> Any:
    run = llb.oci_layout(ref, **options).sh(
        "echo hi > /out/x", mounts=[llb.bind("/out", llb.scratch())]
    )
    return run.get_mount("/out")


def test_exec_runs_busybox_from_a_layout(bk: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    serve(bk, base=write_layout(bk.tmp / "layout", [image]))
    ref = f"base@{image.digest}"
    out = bk.tmp / "out"
    run = bk.build(echo_graph(ref), out=out)
    assert (out / "x").read_text() == "hi\n"
    ids = statuses(run)
    assert f"resolve oci-layout://{ref}" in ids
    assert f"extracting {image.layer_digest}" in ids
    snaps = image_snapshots(bk.root)
    assert len(snaps) == 1 and image.diff_id in snaps[0].description
    with CacheStore.open(bk.root) as store:  # verified and kept in the content store
        assert store.content.path(image.layer_digest).read_bytes() == image.layer

    again = bk.build(echo_graph(ref), out=bk.tmp / "out2")
    assert again.cached()["/bin/sh -c echo hi > /out/x"]
    assert not any(s.startswith("extracting") for s in statuses(again))
    assert len(image_snapshots(bk.root)) == 1


def test_platform_chosen_from_an_index_in_the_layout(bk: Any) -> None:
    plats = ("linux/amd64", "linux/arm64", "linux/arm/v7")
    images = {p: make_image(Platform.parse(p), [imf.marker_files(p)]) for p in plats}
    index = imf.index_of(images)
    serve(bk, multi=write_layout(bk.tmp / "layout", list(images.values()), index))
    for plat in ("linux/arm64", "linux/arm/v7", "linux/amd64"):
        out = bk.tmp / plat.replace("/", "-")
        bk.build(llb.oci_layout(f"multi@{sha(index)}", platform=plat), out=out)
        assert (out / "etc/arch").read_text() == plat
    run = bk.build(
        llb.oci_layout(f"multi@{sha(index)}", platform="linux/s390x"),
        out=bk.tmp / "none",
        check=False,
    )
    assert run.returncode == 1
    assert "no manifest for platform linux/s390x" in run.error_line()


def test_store_attr_and_layer_limit(bk: Any) -> None:
    upper = {"app": ("d", b"", 0o755), "app/hello.txt": ("f", b"upper\n", 0o644)}
    image = make_image(Platform.host(), [busybox_files(), upper])
    serve(bk, store1=write_layout(bk.tmp / "layout", [image]))
    # BuildKit's Dockerfile frontend writes a normalised name and the store in oci.store.
    ref = f"docker.io/library/ctx@{image.digest}"
    out = bk.tmp / "out"
    run = bk.build(llb.oci_layout(ref, store_id="store1", layer_limit=1), out=out)
    assert (out / "bin/busybox").exists() and not (out / "app").exists()
    assert image.layer_digests[1] not in statuses(run)  # the cut layer is never read
    full = bk.tmp / "full"
    bk.build(llb.oci_layout(ref, store_id="store1"), out=full)
    assert (full / "app/hello.txt").read_text() == "upper\n"
    assert len(image_snapshots(bk.root)) == 2


def test_layout_and_registry_share_layer_snapshots(bk: Any, registry: Any, images: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    pushed = images.push(registry, "busybox:shared", image)
    serve(bk, base=write_layout(bk.tmp / "layout", [image]))
    bk.build(llb.image(pushed), out=bk.tmp / "from-registry")
    run = bk.build(llb.oci_layout(f"base@{image.digest}"), out=bk.tmp / "from-layout")
    assert not any(s.startswith("extracting") for s in statuses(run))
    assert image.layer_digest not in statuses(run)  # not even read from the client
    assert len(image_snapshots(bk.root)) == 1
    assert (bk.tmp / "from-layout/bin/busybox").read_bytes() == imf.BUSYBOX.read_bytes()


def test_corrupted_blob_refused_nothing_committed(bk: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    layout = write_layout(bk.tmp / "layout", [image])
    blob = layout / "blobs/sha256" / image.layer_digest.split(":", 1)[1]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    serve(bk, base=layout)
    ref = f"base@{image.digest}"
    out = bk.tmp / "out"
    run = bk.build(echo_graph(ref), out=out, check=False)
    assert run.returncode == 1
    line = run.error_line()
    assert f"oci-layout://{ref}: blob digest mismatch: expected {image.layer_digest}" in line
    assert len(line.splitlines()) == 1
    assert image_snapshots(bk.root) == []
    assert not out.exists() or not any(out.iterdir())
    with CacheStore.open(bk.root) as store:
        assert not store.content.has(image.layer_digest)
    assert not any((bk.root / "image-pull").glob("*/*"))  # no partial download left

    # Repaired, the same store builds (nothing stale was cached).
    shutil.rmtree(layout)
    write_layout(layout, [image])
    bk.build(echo_graph(ref), out=out)
    assert (out / "x").read_text() == "hi\n"


def test_missing_digest_is_one_clear_error(bk: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    serve(bk, base=write_layout(bk.tmp / "layout", [image]))
    missing = sha(b"not in the layout")
    run = bk.build(llb.oci_layout(f"base@{missing}"), out=bk.tmp / "out", check=False)
    assert run.returncode == 1
    assert (
        f"oci-layout://base@{missing}: {missing} not found in store 'oci:base'" in run.error_line()
    )


def test_unknown_store_is_one_clear_error(bk: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    serve(bk, base=write_layout(bk.tmp / "layout", [image]))
    ref = f"other@{image.digest}"
    run = bk.build(llb.oci_layout(ref), out=bk.tmp / "out", check=False)
    assert run.returncode == 1
    assert f"oci-layout://{ref}: the client has no store 'oci:other'" in run.error_line()


def test_not_a_layout_is_refused_by_the_cli(bk: Any) -> None:
    empty = bk.tmp / "empty"
    empty.mkdir()
    serve(bk, base=empty)
    image = make_image(Platform.host(), [busybox_files()])
    run = bk.build(llb.oci_layout(f"base@{image.digest}"), out=bk.tmp / "out", check=False)
    assert run.returncode != 0
    assert "--oci-layout base" in run.error_line() and "not an OCI layout" in run.error_line()
