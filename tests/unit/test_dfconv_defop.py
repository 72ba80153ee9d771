"""llb.from_definition: a marshalled Definition used again as a State (frontend inputs such as
``context:NAME=input:...``) marshals back to the same ops, digests, metadata and caps."""

from __future__ import annotations

from pathlib import Path

import pytest

from bkcore import llb
from bkcore.errors import DefinitionError
from bkcore.llb import Definition, pb

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"


@pytest.mark.parametrize(
    "name", ["v2_image_exec", "v3_fileop_chain", "v4_merge_diff", "v5_sources", "v6_dockerfile"]
)
def test_golden_definitions_round_trip_exactly(name: str) -> None:
    orig = Definition.from_bytes((VECTORS / f"{name}.llb").read_bytes())
    again = llb.from_definition(orig.to_pb()).marshal(platform="linux/amd64")
    assert again.digests == orig.digests
    assert again.head == orig.head and again.head_index == orig.head_index
    for dg in orig.digests:
        assert dict(again.metadata[dg].description) == dict(orig.metadata[dg].description)
        assert dict(again.metadata[dg].caps) == dict(orig.metadata[dg].caps)


def test_a_state_built_on_a_definition_extends_it() -> None:
    base = llb.image("busybox", platform="linux/arm64").run("true").root()
    orig = base.marshal(platform="linux/amd64")
    st = llb.from_definition(orig.to_pb())
    assert st.platform == llb.Platform("linux", "arm64")
    grown = st.file(llb.mkfile("/x", 0o644, b"x")).marshal(platform="linux/amd64")
    assert grown.digests[: len(orig.digests) - 1] == orig.digests[:-1]
    top = grown.op(grown.head or "")
    assert top.inputs[0].digest == orig.head


def test_empty_and_malformed_definitions() -> None:
    assert llb.from_definition(pb.Definition()).output is None
    orig = llb.image("busybox").run("true").root().marshal(platform="linux/amd64").to_pb()
    broken = pb.Definition(def_=list(orig.def_[1:]), metadata=dict(orig.metadata))
    with pytest.raises(DefinitionError, match="missing op"):
        llb.from_definition(broken)
    no_terminal = pb.Definition(def_=list(orig.def_[:-1]))
    with pytest.raises(DefinitionError, match="no terminal op"):
        llb.from_definition(no_terminal)
