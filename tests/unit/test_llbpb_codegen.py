"""The committed bkcore.llb.pb code is what scripts/gen_proto.py generates from ops.proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from bkcore.llb import pb
from bkcore.llb.pb.names import ONEOF_NAMES, PROTO_NAMES

REPO = Path(__file__).resolve().parents[2]
PB_DIR = REPO / "core" / "llb" / "pb"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    if shutil.which("protoc") is None:
        pytest.skip("protoc not installed (apt-get install protobuf-compiler)")
    if shutil.which("protoc-gen-python_betterproto") is None:
        pytest.skip("protoc-gen-python_betterproto not installed (betterproto[compiler])")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "gen_proto.py"),
            "--out",
            str(tmp_path),
            "--api-out",
            str(tmp_path / "api"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    generated = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert generated == ["__init__.py", "names.py"]
    for name in generated:
        fresh = (tmp_path / name).read_text()
        committed = (PB_DIR / name).read_text()
        assert fresh == committed, f"core/llb/pb/{name} is stale: run `make proto` and commit"
    api_dir = REPO / "core" / "api" / "pb"
    fresh_api = sorted(p.name for p in (tmp_path / "api").iterdir())
    assert fresh_api == sorted(p.name for p in api_dir.glob("*.py"))
    for name in fresh_api:
        fresh = (tmp_path / "api" / name).read_text()
        committed = (api_dir / name).read_text()
        assert fresh == committed, f"core/api/pb/{name} is stale: run `make proto` and commit"


def test_every_message_class_has_proto_names() -> None:
    import betterproto

    classes = {
        name: obj
        for name, obj in vars(pb).items()
        if isinstance(obj, type) and issubclass(obj, betterproto.Message) and obj.__name__ == name
    }
    assert set(classes) == set(PROTO_NAMES)
    for name, cls in classes.items():
        numbers = set(cast(Any, cls)._betterproto.field_name_by_number)
        assert numbers == set(PROTO_NAMES[name]), name
    assert ONEOF_NAMES == {"Op": ("op",), "FileAction": ("action",), "UserOpt": ("user",)}


def test_upstream_class_spellings_and_field_numbers() -> None:
    assert pb.HostIP is pb.HostIp
    assert pb.SSHOpt is pb.SshOpt
    assert PROTO_NAMES["Mount"][22] == "SSHOpt"
    assert PROTO_NAMES["Meta"] == {
        1: "args", 2: "env", 3: "cwd", 4: "user", 5: "proxy_env", 6: "extraHosts",
        7: "hostname", 9: "ulimit", 10: "cgroupParent", 11: "removeMountStubsRecursive",
    }  # fmt: skip
    assert 1 not in PROTO_NAMES["FileOp"] and 3 not in PROTO_NAMES["OpMetadata"]
    assert int(pb.NetMode.NONE) == 2 and int(pb.MountType.TMPFS) == 4
    assert int(pb.CacheSharingOpt.LOCKED) == 2 and int(pb.SecurityMode.INSECURE) == 1
