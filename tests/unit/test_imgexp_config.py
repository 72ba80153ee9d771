"""Image config, history reconciliation, manifest and index bytes (spec/exporters.md §2, §7)."""

from __future__ import annotations

import json

import pytest

from bkcore.errors import ExportError
from bkcore.layers.chain import LayerBlob
from bkcore.llb.platforms import Platform
from bkcore.plugins.exporters.imagecommon import (
    DEFAULT_PATH,
    go_time,
    image_config,
    index_bytes,
    manifest_bytes,
    normalize_history,
    parse_options,
    parse_time,
    resolve_epoch,
    split_names,
)
from bkcore.registry_client import Descriptor
from bkcore.registry_client import mediatypes as mt

AMD64 = Platform("linux", "amd64")
T0 = 1_700_000_000.25  # 2023-11-14T22:13:20.25Z


def layer(n: int, created: float = T0, description: str = "step") -> LayerBlob:
    return LayerBlob(
        digest=f"sha256:{n:064x}",
        size=100 + n,
        diff_id=f"sha256:{n + 1000:064x}",
        compression="gzip",
        created=created + n,
        description=f"{description} {n}",
        snapshot=f"s{n}",
    )


def test_go_time_and_parse_time() -> None:
    assert go_time(1_000_000_000 * 1_000_000_000) == "2001-09-09T01:46:40Z"
    assert go_time(1_700_000_000_250_000_000) == "2023-11-14T22:13:20.25Z"
    assert go_time(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"
    assert parse_time("2001-09-09T01:46:40Z") == 1_000_000_000 * 10**9
    assert parse_time("2001-09-09T03:46:40.5+02:00") == 1_000_000_000 * 10**9 + 500_000_000
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_default_config_for_raw_llb() -> None:
    data = image_config(None, AMD64, [layer(0)], epoch=None, buildinfo=b"{}")
    doc = json.loads(data)
    # compact, top-level keys sorted; nested keys in the order written
    assert data.startswith(b'{"architecture":"amd64","config":{"Env":["PATH=')
    assert list(doc) == sorted(doc)
    assert doc["config"] == {"Env": [DEFAULT_PATH], "WorkingDir": "/"}
    assert doc["os"] == "linux" and "variant" not in doc
    assert doc["rootfs"] == {"type": "layers", "diff_ids": [layer(0).diff_id]}
    assert doc["moby.buildkit.buildinfo.v1"] == "e30="
    assert doc["history"] == [
        {
            "created": "2023-11-14T22:13:20.25Z",
            "created_by": "step 0",
            "comment": "buildkit.exporter.image.v0",
        }
    ]
    assert doc["created"] == "2023-11-14T22:13:20.25Z"
    no_info = json.loads(image_config(None, AMD64, [], epoch=None, buildinfo=None))
    assert "moby.buildkit.buildinfo.v1" not in no_info
    assert no_info["rootfs"] == {"type": "layers", "diff_ids": None}


def test_frontend_config_is_kept_and_html_escaped() -> None:
    base = (
        b'{"os":"linux","architecture":"arm64","variant":"v8",'
        b'"config":{"Cmd":["sh","-c","a && b > c"],"OnBuild":null,"ArgsEscaped":true},'
        b'"rootfs":{"type":"layers","diff_ids":["sha256:old"]}}'
    )
    data = image_config(base, AMD64, [layer(1)], epoch=None, buildinfo=None)
    assert b'"config":{"Cmd":["sh","-c","a \\u0026\\u0026 b \\u003e c"],"OnBuild":null,' in data
    doc = json.loads(data)
    assert doc["variant"] == "v8" and doc["architecture"] == "arm64"
    assert doc["rootfs"]["diff_ids"] == [layer(1).diff_id]
    with pytest.raises(ExportError, match="image config"):
        image_config(b"[1]", AMD64, [], epoch=None, buildinfo=None)


def test_history_surplus_entries_marked_empty_from_the_bottom() -> None:
    history = [{"created_by": f"h{i}", "created": go_time(i * 10**9)} for i in range(3)]
    out = normalize_history(history, [layer(0)], None)
    assert [h.get("empty_layer", False) for h in out] == [True, True, False]


def test_history_missing_entries_appended_for_top_layers() -> None:
    base = {"created": "2000-01-01T00:00:00Z", "created_by": "base"}
    out = normalize_history([base], [layer(0), layer(1), layer(2)], None)
    assert out[0] == base
    assert [h["created_by"] for h in out[1:]] == ["step 1", "step 2"]
    assert all(h["comment"] == "buildkit.exporter.image.v0" for h in out[1:])
    assert out[2]["created"] == go_time(int((T0 + 2) * 1e6) * 1000)


def test_history_untimed_entries_filled_like_buildkit() -> None:
    # base (timed) / ENV (untimed, empty) / RUN (layer, no time) / LABEL (untimed) / WORKDIR
    history = [
        {"created": "2000-01-01T00:00:00Z", "created_by": "base"},
        {"created_by": "ENV", "empty_layer": True},
        {"created_by": "RUN"},
        {"created_by": "LABEL", "empty_layer": True},
        {"created": "2030-01-01T00:00:00Z", "created_by": "WORKDIR"},
    ]
    out = normalize_history(history, [layer(0), layer(1), layer(2)], None)
    run_time = go_time(int((T0 + 1) * 1e6) * 1000)
    assert out[2]["created"] == run_time  # layer time for a non-empty entry
    # F = the first timed entry after the first untimed one: RUN's filled time
    assert out[1]["created"] == run_time
    assert out[3]["created"] == run_time
    assert list(out[1]) == ["created", "created_by", "empty_layer"]


def test_epoch_clamps_history_and_created() -> None:
    base = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "2030-01-01T00:00:00Z",
            "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "old"}],
        }
    ).encode()
    doc = json.loads(
        image_config(base, AMD64, [layer(0), layer(1)], epoch=1_000_000_000, buildinfo=None)
    )
    stamps = [h["created"] for h in doc["history"]]
    assert stamps == ["2000-01-01T00:00:00Z", "2001-09-09T01:46:40Z"]
    assert doc["created"] == "2001-09-09T01:46:40Z"


def test_manifest_and_index_bytes() -> None:
    config = Descriptor(mt.DOCKER_CONFIG, "sha256:" + "c" * 64, 7)
    layers = [
        Descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", "sha256:" + "a" * 64, 5)
    ]
    data = manifest_bytes(config, layers, False, {})
    assert data.startswith(
        b'{\n  "mediaType": "application/vnd.docker.distribution.manifest.v2+json",\n'
        b'  "schemaVersion": 2,\n  "config": {\n    "mediaType": '
    )
    assert not data.endswith(b"\n")
    assert "annotations" not in json.loads(data)
    oci = json.loads(manifest_bytes(config, layers, True, {"b": "2", "a": "1"}))
    assert oci["mediaType"] == mt.OCI_MANIFEST and list(oci["annotations"]) == ["a", "b"]
    child = Descriptor(mt.OCI_MANIFEST, "sha256:" + "d" * 64, 9, Platform("linux", "arm", "v7"))
    index = json.loads(index_bytes([child], True, {}))
    assert list(index) == ["mediaType", "schemaVersion", "manifests"]
    assert index["manifests"][0]["platform"] == {
        "architecture": "arm",
        "os": "linux",
        "variant": "v7",
    }


def test_epoch_precedence_and_errors() -> None:
    meta = {"source.date.epoch": b"20"}
    env = {"SOURCE_DATE_EPOCH": "30"}
    assert resolve_epoch({"source-date-epoch": "10"}, meta, env) == 10
    assert resolve_epoch({"build-arg:SOURCE_DATE_EPOCH": "15"}, meta, env) == 15
    assert resolve_epoch({}, meta, env) == 20
    assert resolve_epoch({}, {}, env) == 30
    assert resolve_epoch({}, {}, {}) is None
    with pytest.raises(ExportError, match="source-date-epoch"):
        resolve_epoch({"source-date-epoch": "soon"}, {}, {})


def test_options() -> None:
    opts = parse_options(
        {"name": "a:1,b", "compression": "zstd", "force-compression": ""}, {}, oci_default=False
    )
    assert opts.names == ["a:1", "b"] and not opts.oci
    assert opts.chain.compression == "zstd" and opts.chain.force
    assert split_names('"x,y"') == ["x", "y"]
    star = parse_options({"name": "*,c"}, {"image.name": b"a,b"}, oci_default=False, environ={})
    assert star.names == ["a", "b", "c"]
    assert parse_options({}, {}, oci_default=True, environ={}).oci
    # a manifest-descriptor annotation switches OCI types on, like BuildKit
    opts = parse_options(
        {"annotation-manifest-descriptor.k": "v"}, {}, oci_default=False, environ={}
    )
    assert opts.oci and opts.annotations.manifest_descriptor == [(None, "k", "v")]
    with pytest.raises(ExportError, match="compression"):
        parse_options({"compression": "lz4"}, {}, oci_default=False, environ={})
    with pytest.raises(ExportError, match="oci-mediatypes"):
        parse_options({"oci-mediatypes": "maybe"}, {}, oci_default=False, environ={})
