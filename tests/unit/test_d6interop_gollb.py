"""A definition marshalled by BuildKit's own Go ``client/llb`` (v0.11.6; recorded in
tests/data/buildctl/llb_go.def, what ``buildctl build`` read from stdin in llb_go.json) loads
in bkcore: every op re-encodes to Go's bytes (so bkcore's digests are BuildKit's), and the
local, secret, SSH and mount settings read back as written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import betterproto

from bkcore.llb import pb
from bkcore.llb.digest import marshal
from bkcore.llb.dump import load_definition

DEF = Path(__file__).resolve().parents[1] / "data" / "buildctl" / "llb_go.def"


def test_go_definition_loads_and_reencodes_byte_for_byte() -> None:
    data = DEF.read_bytes()
    definition = load_definition(data, "stdin")
    assert marshal(definition) == data
    ops = {}
    for raw in definition.def_:
        op = pb.Op().parse(raw)
        assert marshal(op) == raw
        ops["sha256:" + hashlib.sha256(raw).hexdigest()] = op
    # the metadata map is keyed by those digests, as BuildKit computed them
    assert set(definition.metadata) <= set(ops)
    kinds_of = {d: betterproto.which_one_of(op, "op")[0] for d, op in ops.items()}
    sources = {op.source.identifier: op.source for d, op in ops.items() if kinds_of[d] == "source"}
    src = sources["local://src"]
    assert json.loads(src.attrs["local.includepattern"]) == ["*.txt", "sub"]
    assert json.loads(src.attrs["local.excludepatterns"]) == ["sub/c.txt"]
    assert src.attrs["local.sharedkeyhint"] == "src"
    assert "local://rootfs" in sources
    (run,) = [op.exec for d, op in ops.items() if kinds_of[d] == "exec"]
    assert run.meta.args[:2] == ["/bin/sh", "-c"]
    kinds = {m.dest: m.mount_type for m in run.mounts}
    assert kinds["/run/secrets/x"] == pb.MountType.SECRET
    assert kinds["/src"] == pb.MountType.BIND
    assert pb.MountType.SSH in kinds.values()
    (secret,) = [m for m in run.mounts if m.mount_type == pb.MountType.SECRET]
    assert secret.secret_opt.id == "x"
    assert [(e.name, e.id) for e in run.secretenv] == [("SENV", "x")]
    (bind,) = [m for m in run.mounts if m.dest == "/src"]
    assert bind.readonly
