"""tests/dockerdiff: the recorder's ``docker save`` normalisation and the consistency of the
recorded data (no Docker, no root: what CI can check without building)."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DIFF = Path(__file__).resolve().parents[1] / "dockerdiff"
CASES = sorted(p for p in (DIFF / "cases").iterdir() if p.is_dir())


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


REC = _load("dfdiff_record_docker", DIFF / "record_docker.py")
RUN = REC.conformance_harness()


def _tar(members: list[tuple[str, bytes | None, dict[str, Any]]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, attrs in members:
            ti = tarfile.TarInfo(name)
            for k, v in attrs.items():
                setattr(ti, k, v)
            if data is None:
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def test_docker_save_archive_normalises_like_an_oci_image(tmp_path: Path) -> None:
    layer1 = _tar(
        [
            ("etc/", None, {"type": tarfile.DIRTYPE, "mode": 0o755}),
            ("etc/app.conf", b"x=1\n", {"mode": 0o640, "uid": 1000, "gid": 1000}),
            ("etc/old", b"old", {"mode": 0o644}),
        ]
    )
    layer2 = _tar(
        [
            ("etc/", None, {"type": tarfile.DIRTYPE, "mode": 0o755}),
            ("etc/.wh.old", b"", {"mode": 0o644}),
            ("srv/.wh..wh..opq", b"", {"mode": 0o644}),
        ]
    )
    config = {
        "os": "linux",
        "architecture": "amd64",
        "config": {"Env": ["A=1"], "Cmd": ["sh"], "Labels": {}, "User": ""},
        "history": [{"created": "2026-01-01T00:00:00Z"}],
    }
    manifest = [{"Config": "cfg.json", "Layers": ["l1/layer.tar", "l2/layer.tar", "l1/layer.tar"]}]
    saved = tmp_path / "image.tar"
    with tarfile.open(saved, "w") as tf:
        for name, data in [
            ("manifest.json", json.dumps(manifest).encode()),
            ("cfg.json", json.dumps(config).encode()),
            ("l1/layer.tar", layer1),
            ("l2/layer.tar", layer2),
        ]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))

    image = REC.normalize_docker_save(RUN, str(saved))

    assert image["platform"] == "linux/amd64"
    # only the compared keys, empty values dropped, as run.normalize_image does
    assert image["config"] == {"Env": ["A=1"], "Cmd": ["sh"]}
    # a layer listed twice in the manifest (an empty layer docker deduplicated) counts twice
    assert image["layer_count"] == 3
    assert image["layers"][0] == image["layers"][2]
    conf = next(e for e in image["layers"][0] if e["path"] == "/etc/app.conf")
    assert (conf["mode"], conf["uid"], conf["gid"], conf["size"]) == ("0640", 1000, 1000, 4)
    kinds = {(e["path"], e["type"]) for e in image["layers"][1]}
    assert kinds == {("/etc", "dir"), ("/etc/old", "whiteout"), ("/srv", "opaque-whiteout")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_has_a_consistent_recording(case: Path) -> None:
    spec = json.loads((case / "case.json").read_text()) if (case / "case.json").exists() else {}
    num = case.name.split("-", 1)[0]
    doc = json.loads((DIFF / "expected" / f"{num}.json").read_text())
    source = spec.get("source", "docker")
    assert doc["source"] == source, "recorded from another Dockerfile than case.json says"
    assert bool(doc.get("expect_error")) == bool(spec.get("expect_error"))
    if source == "reference":
        assert spec.get("notes"), "a reference case says what it is equivalent to"
        if not spec.get("expect_error"):
            assert (case / "Dockerfile.docker").exists()
    if spec.get("expect_error"):
        assert spec.get("error_contains")
        assert doc["error_contains"] == spec["error_contains"]
        if source == "docker":  # Docker's own error line holds the expected text
            assert spec["error_contains"] in doc["error"]
        return
    v011 = spec.get("v011")
    if v011:
        assert v011.get("reason"), "each deliberate difference from Docker says why"
        full = RUN.expand(doc, RUN.load_base)
        paths = {e["path"] for e in full["fs"]}
        for path in v011.get("fs") or {}:
            assert path in paths, f"v011 changes {path}, which Docker's recording lacks"
        for index, change in (v011.get("layers") or {}).items():
            layer = full["image"]["layers"][int(index)]
            for e in change.get("remove", []):
                assert {"path": e["path"], "type": e["type"]} in [
                    {"path": x["path"], "type": x["type"]} for x in layer
                ]
