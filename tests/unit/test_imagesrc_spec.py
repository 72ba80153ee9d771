"""docker-image:// op parsing, the two cache keys of spec/solver.md §2.3, and the chain table."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bkcore.errors import SourceError
from bkcore.llb.platforms import Platform
from bkcore.sources.image.chains import (
    PULL_DIR,
    lookup,
    pull_dir,
    record,
    sweep_pull_dirs,
)
from bkcore.sources.image.source import ImageInstance, ImageSource
from bkcore.sources.image.spec import chain_ids, parse, root_key

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_root_key_is_the_digest_of_the_go_json() -> None:
    amd64 = Platform("linux", "amd64")
    assert root_key(D1, amd64, None) == _sha(f'{{"Digest":"{D1}","OS":"linux","Arch":"amd64"}}')
    arm = Platform("linux", "arm", "v7")
    assert root_key(D1, arm, None) == _sha(
        f'{{"Digest":"{D1}","OS":"linux","Arch":"arm","Variant":"v7"}}'
    )
    assert root_key(D1, amd64, 2) == _sha(
        f'{{"Digest":"{D1}","OS":"linux","Arch":"amd64","Limit":2}}'
    )
    assert root_key(D1, amd64, None) != root_key(D2, amd64, None)


def test_chain_ids() -> None:
    assert chain_ids([]) == []
    assert chain_ids([D1]) == [D1]
    two = _sha(f"{D1} {D2}")
    assert chain_ids([D1, D2, D3]) == [D1, two, _sha(f"{two} {D3}")]


def test_parse_identifier_attrs_and_platform() -> None:
    spec = parse("docker-image://busybox", {}, "linux/arm64")
    assert str(spec.ref) == "docker.io/library/busybox:latest"
    assert spec.platform == Platform("linux", "arm64")
    assert spec.resolve_mode == "default" and spec.layer_limit is None
    spec = parse(
        "docker-image://127.0.0.1:5000/x/y:t",
        {"image.resolvemode": "pull", "image.layerlimit": "3"},
        None,
    )
    assert spec.ref.domain == "127.0.0.1:5000" and spec.ref.repository == "x/y"
    assert spec.ref.tag == "t" and spec.resolve_mode == "pull" and spec.layer_limit == 3
    assert spec.platform == Platform.host()
    pinned = parse(f"docker-image://busybox:1@{D1}", {"image.resolvemode": "local"}, None)
    assert pinned.ref.digest == D1 and pinned.ref.tag == "1"


@pytest.mark.parametrize(
    ("identifier", "attrs", "match"),
    [
        ("git://x", {}, "expected docker-image://REF"),
        ("docker-image://", {}, "reference is empty"),
        ("docker-image://Bad Ref", {}, "invalid image reference"),
        ("docker-image://busybox", {"image.resolvemode": "never"}, "image.resolvemode"),
        ("docker-image://busybox", {"image.layerlimit": "-1"}, "image.layerlimit"),
    ],
)
def test_bad_ops_are_source_errors(identifier: str, attrs: dict[str, str], match: str) -> None:
    with pytest.raises(SourceError, match=match):
        ImageSource().identify(identifier, attrs, None)


def test_identify_gives_an_instance_without_io() -> None:
    inst = ImageSource().identify("docker-image://127.0.0.1:1/none:1", {}, "linux/amd64")
    assert isinstance(inst, ImageInstance)


def test_chain_table_record_and_lookup(tmp_path: Path) -> None:
    assert lookup(tmp_path, D1) is None
    record(tmp_path, D1, "snap-a")
    record(tmp_path, D2, "snap-b")
    record(tmp_path, D1, "snap-c")  # replaced atomically
    assert lookup(tmp_path, D1) == "snap-c" and lookup(tmp_path, D2) == "snap-b"
    assert sorted(p.name for p in (tmp_path / "image-chains").iterdir()) == [
        "sha256-" + "1" * 64,
        "sha256-" + "2" * 64,
    ]


def test_sweep_keeps_live_download_dirs_only(tmp_path: Path) -> None:
    mine = pull_dir(tmp_path)
    (mine / "blob").write_bytes(b"x")
    dead = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path; import sys;"
         "from bkcore.sources.image.chains import pull_dir;"
         "print(pull_dir(Path(sys.argv[1])))", str(tmp_path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    stray = tmp_path / PULL_DIR / "not-a-pull-dir"
    stray.mkdir()
    assert os.path.isdir(dead)
    sweep_pull_dirs(tmp_path)
    assert sorted(p.name for p in (tmp_path / PULL_DIR).iterdir()) == [mine.name]
    assert (mine / "blob").read_bytes() == b"x"
