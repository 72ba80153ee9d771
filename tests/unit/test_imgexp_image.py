"""build_image over a real (copy-driver) store: frontend config metadata, multi-platform
results as an index, annotations, and the docker exporter's single-platform rule."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bkcore.cache.results import results_for
from bkcore.cache.snapshots import COPY
from bkcore.cache.store import CacheStore
from bkcore.errors import ExportError
from bkcore.plugins.exporters.imagecommon import build_image, parse_options
from bkcore.plugins.exporters.imagecommon_archive import archive_entries
from bkcore.progress import ProgressStream
from bkcore.registry_client import mediatypes as mt


class Ctx:
    """A minimal :class:`bkcore.exporter.ExportContext`."""

    def __init__(self, metadata: Mapping[str, bytes], refs: Mapping[str, Any]) -> None:
        self.metadata = dict(metadata)
        self.refs = dict(refs)
        self.caller = None
        self.progress = ProgressStream()

    @contextmanager
    def view(self, result: Any) -> Iterator[Path]:  # pragma: no cover - not used here
        raise AssertionError("build_image does not view results")
        yield Path("/")


def snapshot(store: CacheStore, files: dict[str, str]) -> str:
    with store.snapshots.prepare(None, "files") as m:
        for name, text in files.items():
            (m.mount() / name).write_text(text)
        return m.commit()


async def scenario(tmp_path: Path) -> dict[str, Any]:
    store = await asyncio.to_thread(CacheStore.open, tmp_path / "state", COPY)
    results = results_for(store)
    try:
        amd = await results.adopt(snapshot(store, {"arch": "amd64"}))
        arm = await results.adopt(snapshot(store, {"arch": "arm64"}))
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/app"], "Env": ["A=1"], "Labels": {"l": "v"}},
            "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "COPY app /"}],
        }
        meta = {"containerimage.config": json.dumps(config).encode()}
        single = await build_image(
            Ctx(meta, {}), amd, parse_options({}, meta, oci_default=False, environ={})
        )
        multi_meta = {
            "containerimage.config/linux/amd64": json.dumps(config).encode(),
            "containerimage.config/linux/arm64": json.dumps(
                {**config, "architecture": "arm64"}
            ).encode(),
        }
        attrs = {
            "annotation-index.org.example": "idx",
            "annotation[linux/arm64].only": "arm",
            "annotation-index-descriptor.outer": "o",
        }
        multi = await build_image(
            Ctx(multi_meta, {"linux/amd64": amd, "linux/arm64": arm}),
            None,
            parse_options(attrs, multi_meta, oci_default=False, environ={}),
        )
        with pytest.raises(ExportError, match="multi-platform"):
            await build_image(
                Ctx(meta, {}),
                amd,
                parse_options({"annotation-index.a": "b"}, meta, oci_default=False, environ={}),
            )
        await amd.release()
        await arm.release()
        return {"single": single, "multi": multi}
    finally:
        await results.close()
        store.close()


def test_config_from_metadata_and_multi_platform_index(tmp_path: Path) -> None:
    got = asyncio.run(scenario(tmp_path))
    single = got["single"]
    assert not single.is_index and single.top.media_type == mt.DOCKER_MANIFEST
    config = json.loads(single.images[0].config_bytes)
    assert config["config"] == {"Cmd": ["/bin/app"], "Env": ["A=1"], "Labels": {"l": "v"}}
    assert config["history"][0]["created_by"] == "COPY app /"
    assert config["rootfs"]["diff_ids"] == [single.images[0].layers[0].diff_id]
    stored = single.store.content.path(single.top.digest).read_bytes()
    assert stored == single.top_bytes

    multi = got["multi"]
    # annotation-index* switches OCI media types on (as BuildKit does)
    assert multi.is_index and multi.top.media_type == mt.OCI_INDEX
    index = json.loads(multi.top_bytes)
    assert index["annotations"] == {"org.example": "idx"}
    platforms = [m["platform"]["architecture"] for m in index["manifests"]]
    assert platforms == ["amd64", "arm64"]
    arm_manifest = json.loads(multi.images[1].manifest)
    assert arm_manifest["annotations"] == {"only": "arm"}
    assert "annotations" not in json.loads(multi.images[0].manifest)
    assert json.loads(multi.images[1].config_bytes)["architecture"] == "arm64"
    # blobs: 2 layers, 2 configs, 2 manifests below the index
    assert len(multi.blobs()) == 6
    with pytest.raises(ExportError, match="manifest lists"):
        archive_entries(multi, [], docker=True, epoch=None)
    (layout_index,) = [
        e
        for e in archive_entries(multi, [], docker=False, epoch=0)
        if e.data and e.name == "index.json"
    ]
    assert layout_index.data is not None
    (entry,) = json.loads(layout_index.data)["manifests"]
    assert entry["mediaType"] == mt.OCI_INDEX and entry["annotations"]["outer"] == "o"
