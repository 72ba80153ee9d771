"""Frontend inputs as states: a definition rebuilt into a graph marshals to the same ops."""

from __future__ import annotations

import base64
import json

import pytest

from bkcore import llb
from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile.inputs import definition_state, input_configs
from bkcore.llb import pb


def sample() -> llb.State:
    base = llb.image("docker.io/library/busybox:latest", platform="linux/amd64")
    ran = base.run("echo hi > /x", custom_name="make x").root()
    other = llb.scratch().file(llb.mkfile("/y", 0o644, b"y"), custom_name="make y")
    return ran.file(llb.copy(other, "/y", "/z"), ignore_cache=True)


def test_rebuilt_graph_marshals_to_the_same_ops_and_metadata() -> None:
    original = sample().marshal(platform="linux/amd64")
    state = definition_state(original.to_pb(), "in")
    again = state.marshal(platform="linux/amd64")
    assert again.digests == original.digests
    assert again.ops == original.ops
    for digest in original.digests[:-1]:
        assert again.metadata[digest].description == original.metadata[digest].description
        assert again.metadata[digest].ignore_cache == original.metadata[digest].ignore_cache
        assert again.metadata[digest].caps == original.metadata[digest].caps


def test_the_state_can_be_built_on() -> None:
    base = definition_state(sample().marshal(platform="linux/amd64").to_pb())
    more = base.file(llb.mkdir("/more", 0o755)).marshal(platform="linux/amd64")
    assert len(more.digests) == len(sample().marshal(platform="linux/amd64").digests) + 1


def test_empty_definition_is_scratch() -> None:
    assert definition_state(pb.Definition()).is_scratch


def test_malformed_definitions_are_frontend_errors() -> None:
    good = sample().marshal(platform="linux/amd64").to_pb()
    no_terminal = pb.Definition(def_=list(good.def_[:-1]))
    with pytest.raises(FrontendError, match="input 'x': the definition has no terminal op"):
        definition_state(no_terminal, "x")
    missing = pb.Definition(def_=list(good.def_[1:]))
    with pytest.raises(FrontendError, match="which is missing"):
        definition_state(missing, "x")


def test_input_configs_from_input_metadata_options() -> None:
    config = b'{"config":{"Env":["A=1"]}}'
    meta = json.dumps({"containerimage.config": base64.b64encode(config).decode()})
    assert input_configs({"input-metadata:base": meta, "target": "x"}) == {"base": config}
    with pytest.raises(FrontendError):
        input_configs({"input-metadata:bad": "not json"})
