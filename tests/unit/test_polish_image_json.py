"""Image JSON as buildkitd v0.11.6 writes it: history/config ``created`` in RFC3339Nano (Go's
time JSON: nanoseconds, trailing zeros trimmed; epoch-clamped times whole seconds), and the
``containerimage.descriptor`` of an oci/docker tarball in Go's field order (mediaType, digest,
size, annotations, platform)."""

from __future__ import annotations

import base64
import json
import re

from bkcore.layers.chain import LayerBlob
from bkcore.llb.platforms import Platform
from bkcore.plugins.exporters.imagecommon import descriptor_b64, image_config, normalize_history
from bkcore.registry_client import Descriptor
from bkcore.registry_client import mediatypes as mt

AMD64 = Platform("linux", "amd64")
# 2025-11-27T00:22:27.708817285Z as a snapshot's time.time() float
CREATED = 1764202947.708817285


def _layer(created: float = CREATED) -> LayerBlob:
    return LayerBlob(
        digest=f"sha256:{1:064x}",
        size=10,
        diff_id=f"sha256:{2:064x}",
        compression="gzip",
        created=created,
        description="mount / from exec /bin/sh -c echo hi > /hi",
        snapshot="s1",
    )


def test_layer_history_time_has_nanoseconds() -> None:
    (h,) = normalize_history([], [_layer()], None)
    # the float's own value to the nanosecond (microseconds dropped the last three digits)
    assert re.fullmatch(r"2025-11-27T00:22:27\.7088172\d\dZ", h["created"]), h["created"]
    config = json.loads(image_config(None, AMD64, [_layer()], epoch=None, buildinfo=None))
    assert config["created"] == h["created"] == config["history"][0]["created"]


def test_trailing_zeros_trimmed_and_whole_seconds_bare() -> None:
    (h,) = normalize_history([], [_layer(1764202947.5)], None)
    assert h["created"] == "2025-11-27T00:22:27.5Z"
    (h,) = normalize_history([], [_layer(1764202947.0)], None)
    assert h["created"] == "2025-11-27T00:22:27Z"


def test_source_date_epoch_clamps_to_whole_seconds() -> None:
    (h,) = normalize_history([], [_layer()], 1_000_000_000)
    assert h["created"] == "2001-09-09T01:46:40Z"
    config = json.loads(image_config(None, AMD64, [_layer()], epoch=1_000_000_000, buildinfo=None))
    assert config["created"] == "2001-09-09T01:46:40Z"


def test_tarball_descriptor_keeps_go_field_order() -> None:
    desc = Descriptor(mt.OCI_MANIFEST, f"sha256:{3:064x}", 500, AMD64)
    created = {"org.opencontainers.image.created": "2025-11-27T00:22:27Z"}
    doc = json.loads(base64.b64decode(descriptor_b64(desc, created)))
    assert list(doc) == ["mediaType", "digest", "size", "annotations", "platform"]
    assert doc["annotations"] == created
    assert doc["platform"] == {"architecture": "amd64", "os": "linux"}
