"""The docker-image:// source through `bkcore build` against Debian's `docker-registry` on
loopback: an exec running busybox from the pulled image, pull by digest, a fully cached
second build, layer snapshots shared between images (with a whiteout in the upper layer), a
corrupted layer refused with nothing cached and a missing tag as one error line. (Golden
vector v2 is built in test_imgbench_vectors.py.)

The registry fixture and the deterministic image helpers are the shared ones (conftest.py,
imagefixtures.py); the images here can have several layers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import imagefixtures as imf
import pytest
from imagefixtures import GROUP, Files, FixtureImage, busybox_files, make_image

from bkcore import llb
from bkcore.cache.store import CacheStore
from bkcore.llb.platforms import Platform

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")
LAYER_DESC = "image layer "


# -- registry (conftest ``registry`` fixture) and deterministic images (imagefixtures) ------------
def push(registry: Any, name: str, image: FixtureImage, workdir: Path) -> str:
    """Push ``image`` as ``host/name`` (name with tag); returns the full reference."""
    asyncio.run(asyncio.wait_for(imf.push_async(registry.host, name, [image], workdir), 120))
    return f"{registry.host}/{name}"


def push_index(
    registry: Any, name: str, images: dict[str, FixtureImage], workdir: Path
) -> tuple[str, str]:
    """Push a multi-platform index of ``images`` (platform string -> image); returns the
    reference and the index digest."""
    index = imf.index_of(images)
    run = imf.push_async(registry.host, name, list(images.values()), workdir, index=index)
    asyncio.run(asyncio.wait_for(run, 120))
    return f"{registry.host}/{name}", imf.sha(index)


# -- helpers on builds and the store ------------------------------------------------------------
def statuses(run: Any) -> set[str]:
    return {s["id"] for event in run.events for s in event.get("statuses", [])}


def image_snapshots(root: Path) -> list[Any]:
    with CacheStore.open(root) as store:
        return [s for s in store.snapshots.all() if s.description.startswith(LAYER_DESC)]


def echo_graph(ref: str) -> Any:
    run = llb.image(ref).sh("echo hi > /out/x", mounts=[llb.bind("/out", llb.scratch())])
    return run.get_mount("/out")


# -- tests --------------------------------------------------------------------------------------
def test_exec_runs_busybox_from_pulled_image(bk: Any, registry: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    ref = push(registry, "busybox:latest", image, bk.tmp / "push")
    out = bk.tmp / "out"
    run = bk.build(echo_graph(ref), out=out)
    assert (out / "x").read_text() == "hi\n"
    ids = statuses(run)
    assert f"resolve {ref}" in ids
    assert f"extracting {image.layer_digests[0]}" in ids
    assert image.layer_digests[0] in ids  # the download
    image_vertex = next(v for v in run.vertices().values() if v["name"].startswith("docker-image"))
    assert not image_vertex.get("cached")
    snaps = image_snapshots(bk.root)
    assert len(snaps) == 1 and image.diff_ids[0] in snaps[0].description
    with CacheStore.open(bk.root) as store:  # the blob is kept, verified, in the content store
        assert store.content.path(image.layer_digests[0]).read_bytes() == image.layers[0]

    # A second build (new process) is cached throughout: nothing downloaded or extracted.
    out2 = bk.tmp / "out2"
    again = bk.build(echo_graph(ref), out=out2)
    assert (out2 / "x").read_text() == "hi\n"
    assert again.cached()["/bin/sh -c echo hi > /out/x"]
    assert not any(
        s.startswith("extracting") or s == image.layer_digests[0] for s in statuses(again)
    )
    assert f"resolve {ref}" in statuses(again)  # the tag is resolved every build

    # By digest: the same root digest and platform, so the same key; cached too.
    pinned = f"{registry.host}/busybox@{image.digest}"
    out3 = bk.tmp / "out3"
    by_digest = bk.build(echo_graph(pinned), out=out3)
    assert (out3 / "x").read_text() == "hi\n"
    assert by_digest.cached()["/bin/sh -c echo hi > /out/x"]
    assert not any(s.startswith("extracting") for s in statuses(by_digest))
    assert len(image_snapshots(bk.root)) == 1


def test_pull_by_digest_in_fresh_store(bk: Any, registry: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    push(registry, "busybox:v1", image, bk.tmp / "push")
    pinned = f"{registry.host}/busybox@{image.digest}"
    out = bk.tmp / "out"
    run = bk.build(echo_graph(pinned), out=out)
    assert (out / "x").read_text() == "hi\n"
    assert f"extracting {image.layer_digests[0]}" in statuses(run)


def test_images_sharing_a_base_layer_share_its_snapshot(bk: Any, registry: Any) -> None:
    base = busybox_files()
    upper: Files = {
        "app": ("d", b"", 0o755),
        "app/hello.txt": ("f", b"from the upper layer\n", 0o644),
        "etc": ("d", b"", 0o755),
        "etc/.wh.group": ("f", b"", 0o644),  # deletes /etc/group of the base
    }
    plat = Platform.host()
    first = make_image(plat, [base])
    second = make_image(plat, [base, upper])
    assert first.layer_digests[0] == second.layer_digests[0]
    ref_a = push(registry, "base:1", first, bk.tmp / "push-a")
    ref_b = push(registry, "app:1", second, bk.tmp / "push-b")

    out_a, out_b = bk.tmp / "a", bk.tmp / "b"
    bk.build(llb.image(ref_a), out=out_a)
    assert len(image_snapshots(bk.root)) == 1
    run_b = bk.build(llb.image(ref_b), out=out_b)
    ids = statuses(run_b)
    # The base layer was neither downloaded nor extracted again; only the upper one was.
    assert f"extracting {second.layer_digests[0]}" not in ids
    assert second.layer_digests[0] not in ids
    assert f"extracting {second.layer_digests[1]}" in ids
    snaps = image_snapshots(bk.root)
    assert len(snaps) == 2, [s.description for s in snaps]
    by_layer = {s.description.split()[2]: s for s in snaps}
    top = by_layer[second.diff_ids[1]]
    assert top.parent == by_layer[second.diff_ids[0]].id

    assert (out_b / "app/hello.txt").read_text() == "from the upper layer\n"
    assert (out_b / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    assert not (out_b / "etc/group").exists() and (out_b / "etc/passwd").exists()
    assert (out_a / "etc/group").read_bytes() == GROUP  # the shared base is untouched
    assert not (out_a / "app").exists()


def test_corrupted_layer_refused_nothing_cached(bk: Any, registry: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    ref = push(registry, "busybox:bad", image, bk.tmp / "push")
    layer = image.layer_digests[0]
    stored = registry.blob_data_path(layer)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    run = bk.build(echo_graph(ref), out=bk.tmp / "out", check=False)
    assert run.returncode != 0
    assert layer in run.error_line() and "digest mismatch" in run.error_line()
    assert image_snapshots(bk.root) == []
    with CacheStore.open(bk.root) as store:
        assert not store.content.has(layer)
    chains = bk.root / "image-chains"
    assert not chains.exists() or not list(chains.iterdir())
    pulls = bk.root / "image-pull"
    assert not pulls.exists() or not list(pulls.iterdir())


def test_missing_tag_is_one_clear_error(bk: Any, registry: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    push(registry, "busybox:latest", image, bk.tmp / "push")
    missing = f"{registry.host}/busybox:nope"
    run = bk.build(echo_graph(missing), out=bk.tmp / "out", check=False)
    assert run.returncode != 0
    lines = run.error_line().strip().splitlines()
    assert len(lines) == 1, lines
    assert missing in lines[0] and "not found" in lines[0]
    assert "Traceback" not in run.stderr


def test_repushed_image_with_same_layers_hits_through_the_chain_key(bk: Any, registry: Any) -> None:
    files = busybox_files()
    first = make_image(Platform.host(), [files])
    second = make_image(Platform.host(), [files], env="PATH=/bin:/usr/bin")
    assert first.digest != second.digest and first.diff_ids == second.diff_ids
    ref = push(registry, "busybox:1", first, bk.tmp / "push-1")
    bk.build(echo_graph(ref), out=bk.tmp / "out1")
    push(registry, "busybox:1", second, bk.tmp / "push-2")  # the tag now names a new manifest
    out = bk.tmp / "out2"
    run = bk.build(echo_graph(ref), out=out)
    assert (out / "x").read_text() == "hi\n"
    assert run.cached()["/bin/sh -c echo hi > /out/x"]  # map 1 changed, map 2 matched
    assert not any(s.startswith("extracting") for s in statuses(run))
    assert len(image_snapshots(bk.root)) == 1


def test_layer_limit_keeps_the_lower_layers(bk: Any, registry: Any) -> None:
    upper: Files = {"app": ("d", b"", 0o755), "app/hello.txt": ("f", b"upper\n", 0o644)}
    image = make_image(Platform.host(), [busybox_files(), upper])
    ref = push(registry, "app:1", image, bk.tmp / "push")
    out = bk.tmp / "out"
    run = bk.build(llb.image(ref, layer_limit=1), out=out)
    assert (out / "bin/busybox").exists() and not (out / "app").exists()
    assert image.layer_digests[1] not in statuses(run)  # the cut layer is not even downloaded
    full = bk.tmp / "full"
    bk.build(llb.image(ref), out=full)
    assert (full / "app/hello.txt").read_text() == "upper\n"
    assert len(image_snapshots(bk.root)) == 2


def _marker_image(plat: str) -> FixtureImage:
    return make_image(Platform.parse(plat), [imf.marker_files(plat)])


def test_platform_chosen_from_index(bk: Any, registry: Any) -> None:
    images = {p: _marker_image(p) for p in ("linux/amd64", "linux/arm64", "linux/arm/v7")}
    ref, index_digest = push_index(registry, "multi:1", images, bk.tmp / "push")
    for plat in ("linux/arm64", "linux/arm/v7", "linux/amd64"):
        out = bk.tmp / plat.replace("/", "-")
        bk.build(llb.image(ref, platform=plat), out=out)
        assert (out / "etc/arch").read_text() == plat

    from bkcore.sources.image.resolve import resolve_image_config

    digest, config = asyncio.run(resolve_image_config(ref, "linux/arm64"))
    assert digest == index_digest
    assert config == images["linux/arm64"].config
    digest, config = asyncio.run(resolve_image_config(f"{ref}@{index_digest}", "linux/arm/v7"))
    assert digest == index_digest and json.loads(config)["architecture"] == "arm"


def test_one_build_pulling_two_images_builds_the_shared_base_once(bk: Any, registry: Any) -> None:
    base = busybox_files()
    plat = Platform.host()
    left = make_image(plat, [base, {"l.txt": ("f", b"left\n", 0o644)}])
    right = make_image(plat, [base, {"r.txt": ("f", b"right\n", 0o644)}])
    ref_l = push(registry, "left:1", left, bk.tmp / "push-l")
    ref_r = push(registry, "right:1", right, bk.tmp / "push-r")
    out = bk.tmp / "out"
    run = bk.build(llb.merge([llb.image(ref_l), llb.image(ref_r)]), out=out)
    assert (out / "l.txt").read_text() == "left\n" and (out / "r.txt").read_text() == "right\n"
    snaps = image_snapshots(bk.root)
    assert len(snaps) == 3, [s.description for s in snaps]  # base, left top, right top
    base_snap = next(s for s in snaps if s.parent is None)
    assert all(s.parent == base_snap.id for s in snaps if s is not base_snap)
    extracted = [
        s for e in run.events for s in e.get("statuses", [])
        if s["id"] == f"extracting {left.layer_digests[0]}" and s.get("completed")
    ]  # fmt: skip
    assert len({s["vertex"] for s in extracted}) == 1  # by one of the two vertices only


def test_two_processes_pulling_one_image_build_each_chain_once(bk: Any, registry: Any) -> None:
    import random

    noise = random.Random(7).randbytes(8 << 20)  # incompressible: extraction takes a while
    layers: list[Files] = [busybox_files()]
    layers += [{f"blob{i}": ("f", noise[i:] + bytes([i]), 0o644)} for i in range(3)]
    image = make_image(Platform.host(), layers)
    ref = push(registry, "big:1", image, bk.tmp / "push")
    procs = [bk.start(llb.image(ref), out=bk.tmp / f"out{i}") for i in range(2)]
    runs = [bk.finish(p).check() for p in procs]
    for i in range(2):
        assert (bk.tmp / f"out{i}" / "blob2").read_bytes() == noise[2:] + b"\x02"
    snaps = image_snapshots(bk.root)
    assert len(snaps) == 4, [s.description for s in snaps]
    # One extraction is one (id, start time): through a daemon the two builds share the pull
    # and both clients are shown its progress; two processes would each report their own.
    extracted = {
        (s["id"], s.get("started")) for r in runs for e in r.events for s in e.get("statuses", [])
        if s["id"].startswith("extracting") and s.get("completed")
    }  # fmt: skip
    assert sorted(i for i, _ in extracted) == sorted(f"extracting {d}" for d in image.layer_digests)


def test_pull_after_prune_rebuilds_from_a_stale_chain_record(bk: Any, registry: Any) -> None:
    image = make_image(Platform.host(), [busybox_files()])
    ref = push(registry, "busybox:latest", image, bk.tmp / "push")
    bk.build(llb.image(ref), out=bk.tmp / "out1")
    [before] = image_snapshots(bk.root)
    pruned = subprocess.run(
        [*bk.cli(), "prune"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    assert image_snapshots(bk.root) == []
    assert (bk.root / "image-chains").is_dir()  # the record is left behind, now stale
    out = bk.tmp / "out2"
    run = bk.build(llb.image(ref), out=out)
    assert (out / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    assert f"extracting {image.layer_digests[0]}" in statuses(run)
    [after] = image_snapshots(bk.root)
    assert after.id != before.id
