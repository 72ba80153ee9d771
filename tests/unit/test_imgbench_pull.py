"""The layer chain pull extracts a downloaded layer while its blob is still being copied
into the content store (the copy, a hash and an fsync of the whole blob, is off the path)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from bkcore.cache.store import CacheStore
from bkcore.layers import apply as apply_mod
from bkcore.layers import pull
from bkcore.layers.images import Layer


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(name: str, content: bytes) -> tuple[bytes, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.uid = info.gid = os.getuid()
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = buf.getvalue()
    return gzip.compress(tar_bytes, mtime=0), _sha(tar_bytes)


class _Progress:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def status(self, id: str, **_: Any) -> None:
        self.ids.append(id)


def test_layers_extract_while_blobs_are_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = [_layer("a.txt", b"first\n"), _layer("b.txt", b"second\n")]
    layers = tuple(
        Layer(_sha(blob), len(blob), "application/vnd.oci.image.layer.v1.tar+gzip", diff_id)
        for blob, diff_id in blobs
    )
    by_digest = {layer.digest: blob for layer, (blob, _) in zip(layers, blobs, strict=True)}

    async def fetch(digest: str, dest: Path, size: int | None, progress: Any) -> int:
        dest.write_bytes(by_digest[digest])
        return len(by_digest[digest])

    applied = threading.Event()
    real_apply = apply_mod.apply_layer

    def apply_then_signal(*args: Any, **kwargs: Any) -> Any:
        out = real_apply(*args, **kwargs)
        applied.set()
        return out

    monkeypatch.setattr(apply_mod, "apply_layer", apply_then_signal)

    with CacheStore.open(tmp_path / "state") as store:
        real_ingest = store.content.ingest

        def ingest_after_an_extraction(source: Any, digest: str | None = None) -> str:
            # before, each blob was stored first and extracted after: this waited forever
            assert applied.wait(30), "no layer was extracted while its blob was being stored"
            return real_ingest(source, digest)

        monkeypatch.setattr(store.content, "ingest", ingest_after_an_extraction)

        async def main() -> Any:
            return await asyncio.wait_for(
                pull.pull_layers(store, fetch, "test", layers, _Progress()),  # type: ignore[arg-type]
                60,
            )

        top = asyncio.run(main())
        try:
            for layer in layers:  # stored by the time the pull returned
                assert store.content.has(layer.digest)
            assert not list((store.root / pull.PULL_DIR).iterdir())
        finally:
            asyncio.run(top.release())
