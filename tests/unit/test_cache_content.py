"""Content store: ingest, verification, deletion, recovery of temp files."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from bkcore.cache.content import ContentStore
from bkcore.cache.db import Database
from bkcore.errors import CacheError


def _store(tmp_path: Path) -> ContentStore:
    return ContentStore(tmp_path, Database(tmp_path / "meta.db"))


def test_ingest_stream_lays_out_oci_blob(tmp_path: Path) -> None:
    cs = _store(tmp_path)
    data = b"hello blob\n" * 1000
    digest = cs.ingest(io.BytesIO(data))
    hexd = hashlib.sha256(data).hexdigest()
    assert digest == f"sha256:{hexd}"
    assert (tmp_path / "blobs" / "sha256" / hexd).read_bytes() == data
    assert cs.has(digest)
    assert cs.size(digest) == len(data)
    assert cs.digests() == [digest]
    assert list((tmp_path / "ingest").iterdir()) == []


def test_ingest_path_with_expected_digest(tmp_path: Path) -> None:
    cs = _store(tmp_path)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    expected = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    assert cs.ingest(src, expected) == expected
    assert cs.path(expected).read_bytes() == src.read_bytes()
    # Known digest: no rewrite, same answer.
    assert cs.ingest(io.BytesIO(b"ignored"), expected) == expected


def test_digest_mismatch_leaves_nothing(tmp_path: Path) -> None:
    cs = _store(tmp_path)
    wrong = "sha256:" + "0" * 64
    actual = "sha256:" + hashlib.sha256(b"data").hexdigest()
    with pytest.raises(CacheError) as info:
        cs.ingest(io.BytesIO(b"data"), wrong)
    assert wrong in str(info.value) and actual in str(info.value)
    assert list((tmp_path / "blobs" / "sha256").iterdir()) == []
    assert list((tmp_path / "ingest").iterdir()) == []
    assert cs.digests() == []
    assert not cs.has(actual)


def test_invalid_digest_rejected(tmp_path: Path) -> None:
    cs = _store(tmp_path)
    with pytest.raises(CacheError):
        cs.path("md5:abc")
    with pytest.raises(CacheError):
        cs.size("sha256:" + "1" * 64)


def test_delete_and_recover(tmp_path: Path) -> None:
    cs = _store(tmp_path)
    d1 = cs.ingest(io.BytesIO(b"one"))
    d2 = cs.ingest(io.BytesIO(b"two"))
    cs.delete(d1)
    assert not cs.has(d1) and cs.digests() == [d2]
    # A temp file of a dead process and a blob file without a row.
    (tmp_path / "ingest" / "999999999-1-abcd").write_bytes(b"partial")
    orphan = hashlib.sha256(b"orphan").hexdigest()
    (tmp_path / "blobs" / "sha256" / orphan).write_bytes(b"orphan")
    cs.path(d2).unlink()
    cs.recover()
    assert list((tmp_path / "ingest").iterdir()) == []
    assert cs.digests() == [f"sha256:{orphan}"]
