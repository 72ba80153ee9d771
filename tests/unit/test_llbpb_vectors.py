"""Golden vectors (BuildKit v0.11.6): decode, re-encode byte for byte, digests, dump-llb."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, cast

import betterproto
import pytest

from bkcore.llb import pb
from bkcore.llb.digest import marshal, op_digest
from bkcore.llb.dump import dump_ops, load_definition

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"
LLB_FILES = sorted(VECTORS.glob("v*.llb"))


def _sidecar(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.with_suffix(".json").read_text())
    return loaded


def _count_empty_map_values(msg: betterproto.Message) -> int:
    """Map entries (at any depth) whose value is "", b"", False or an empty message."""
    count = 0
    for name, field in cast(Any, msg)._betterproto.meta_by_field_name.items():
        value = getattr(msg, name)
        if field.proto_type == "map":
            for v in value.values():
                empty = not marshal(v) if isinstance(v, betterproto.Message) else not v
                count += 1 if empty else 0
                if isinstance(v, betterproto.Message):
                    count += _count_empty_map_values(v)
        elif field.proto_type == "message":
            for item in value if isinstance(value, list) else [value]:
                count += _count_empty_map_values(item)
    return count


def test_all_vectors_present() -> None:
    names = [p.stem for p in LLB_FILES]
    assert len(names) == 7, names
    for p in LLB_FILES:
        assert p.with_suffix(".json").is_file()


@pytest.fixture(params=LLB_FILES, ids=lambda p: p.stem)
def vector(request: pytest.FixtureRequest) -> tuple[bytes, dict[str, Any]]:
    path: Path = request.param
    return path.read_bytes(), _sidecar(path)


def test_definition_file_matches_sidecar(vector: tuple[bytes, dict[str, Any]]) -> None:
    data, side = vector
    assert len(data) == side["definition_len"]
    assert hashlib.sha256(data).hexdigest() == side["definition_sha256"]


def test_ops_decode_and_reencode_byte_identically(vector: tuple[bytes, dict[str, Any]]) -> None:
    data, side = vector
    defn = pb.Definition().parse(data)
    assert len(defn.def_) == len(side["ops"])
    for raw, expected in zip(defn.def_, side["ops"], strict=True):
        assert raw == bytes.fromhex(expected["hex"])
        assert len(raw) == expected["len"]
        assert op_digest(raw) == expected["digest"]
        op = pb.Op().parse(raw)
        kind = betterproto.which_one_of(op, "op")[0] or "terminal"
        assert kind == expected["kind"]
        # Our Go-compatible encoder, and betterproto itself for decoded ops, give the same bytes.
        assert marshal(op) == raw
        assert bytes(op) == raw


def test_terminal_and_head(vector: tuple[bytes, dict[str, Any]]) -> None:
    data, side = vector
    defn = load_definition(data, "vector")
    terminal = pb.Op().parse(defn.def_[-1])
    assert op_digest(defn.def_[-1]) == side["terminal_digest"]
    assert betterproto.which_one_of(terminal, "op")[0] == ""
    assert not betterproto.serialized_on_wire(terminal.platform)
    assert not betterproto.serialized_on_wire(terminal.constraints)
    head = terminal.inputs[0]
    assert {"digest": head.digest, "index": head.index} == side["head"]
    # Ops come after their inputs.
    seen: set[str] = set()
    for raw in defn.def_:
        for inp in pb.Op().parse(raw).inputs:
            assert inp.digest in seen
        seen.add(op_digest(raw))


def test_whole_definition_reencodes_byte_identically(vector: tuple[bytes, dict[str, Any]]) -> None:
    data, _ = vector
    defn = pb.Definition().parse(data)
    # Sorted map keys, both key and value in every entry, present empty sub-messages: the
    # Definition bytes equal Go's exactly, metadata and Source included.
    assert marshal(defn) == data


def test_betterproto_definition_bytes_differ_only_in_empty_map_values(
    vector: tuple[bytes, dict[str, Any]],
) -> None:
    """spec §2: betterproto drops empty map values (Go writes `12 00`); nothing else differs."""
    data, _ = vector
    defn = pb.Definition().parse(data)
    plain = bytes(defn)
    empty_values = _count_empty_map_values(defn)
    assert len(data) - len(plain) == 2 * empty_values
    assert empty_values >= 1  # the Go client writes an empty Locations for ops without a source
    again = pb.Definition().parse(plain)
    assert again.def_ == defn.def_  # the hashed parts (op bytes) are untouched
    assert again.metadata == defn.metadata
    assert marshal(again) == data  # and our encoder restores Go's bytes


def test_dump_llb_equals_buildctl_output(vector: tuple[bytes, dict[str, Any]]) -> None:
    data, side = vector
    assert dump_ops(load_definition(data, "vector")) == side["dump_llb"]


def test_dump_llb_key_order_is_go_struct_order() -> None:
    defn = load_definition((VECTORS / "v3_fileop_chain.llb").read_bytes(), "v3")
    file_op = dump_ops(defn)[1]
    assert list(file_op) == ["Op", "Digest", "OpMetadata"]
    assert list(file_op["Op"]) == ["inputs", "Op", "platform", "constraints"]
    action = file_op["Op"]["Op"]["file"]["actions"][2]
    assert list(action) == ["input", "secondaryInput", "output", "Action"]
    assert list(action["Action"]["mkfile"]) == ["path", "mode", "data", "owner", "timestamp"]
