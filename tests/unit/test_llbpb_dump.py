"""Strict Definition loading, dump-llb JSON details and the --dot output."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bkcore.errors import DefinitionError
from bkcore.llb import pb
from bkcore.llb.digest import marshal, op_digest, present
from bkcore.llb.dump import dump_dot, dump_ops, go_json, go_quote, load_definition

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"
LLB_FILES = sorted(VECTORS.glob("v*.llb"))


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _top_level_fields(data: bytes) -> list[tuple[int, int]]:
    """(field number, end offset) of each top-level field of a well-formed message."""
    fields = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        assert key & 7 == 2  # every top-level Definition field is length-delimited
        length, pos = _varint(data, pos)
        pos += length
        fields.append((key >> 3, pos))
    return fields


def _error(data: bytes, source: str = "in.llb") -> str:
    with pytest.raises(DefinitionError) as info:
        load_definition(data, source)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{source}: ")
    return message


@pytest.mark.parametrize("path", LLB_FILES, ids=lambda p: p.stem)
def test_every_truncation_is_rejected_unless_it_only_drops_trailing_fields(path: Path) -> None:
    data = path.read_bytes()
    full = pb.Definition().parse(data)
    fields = _top_level_fields(data)
    last_def_end = max(end for number, end in fields if number == 1)
    clean_cuts = {end for _, end in fields if end >= last_def_end}
    accepted = 0
    for cut in range(len(data) + 1):
        if cut in clean_cuts:
            # Only metadata/Source were cut off at a field boundary: still a valid definition.
            assert load_definition(data[:cut], "cut").def_ == full.def_
            accepted += 1
        else:
            message = _error(data[:cut])
            assert "LLB definition" in message
    assert accepted == len(clean_cuts)


def test_truncation_messages_are_specific() -> None:
    data = (VECTORS / "v2_image_exec.llb").read_bytes()
    assert _error(data[:40], "<stdin>") == (
        "<stdin>: truncated or corrupt LLB definition: "
        "Definition.def (field 1) runs past the end of the data"
    )
    assert _error(b"", "<stdin>") == "<stdin>: invalid LLB definition: it contains no ops"
    assert "varint runs past the end" in _error(data[:1])


@pytest.mark.parametrize("seed", range(300))
def test_random_garbage_is_rejected(seed: int) -> None:
    rng = random.Random(seed)
    garbage = rng.randbytes(rng.randint(1, 400))
    _error(garbage, "garbage.bin")


def test_wire_type_mismatch_is_rejected() -> None:
    # betterproto alone would accept this and store an int in a bytes list.
    message = _error(b"\x08\x01")
    assert "Definition.def (field 1) has wire type varint, expected length-delimited" in message


def test_mistyped_field_inside_an_op_is_rejected() -> None:
    op = b"\x22\x02\x10\x05"  # Op.file -> FileOp.actions (field 2) encoded as a varint
    defn = marshal(pb.Definition(def_=[op]))
    assert "op 0: FileOp.actions (field 2) has wire type varint" in _error(defn)


def test_bad_wire_details_are_rejected() -> None:
    assert "unsupported wire type 3" in _error(b"\x0b")
    assert "field number 0" in _error(b"\x02\x00")
    assert "varint overflows 64 bits" in _error(b"\x10" + b"\xff" * 9 + b"\x02")
    bad_utf8 = marshal(pb.Op(source=pb.SourceOp(identifier="x"))).replace(b"x", b"\xff")
    assert "SourceOp.identifier (field 1) is not valid UTF-8" in _error(
        marshal(pb.Definition(def_=[bad_utf8]))
    )


def _op(**kwargs: object) -> bytes:
    return marshal(pb.Op(constraints=present(pb.WorkerConstraints()), **kwargs))  # type: ignore[arg-type]


def test_graph_rules() -> None:
    src = _op(source=pb.SourceOp(identifier="local://ctx"))
    good_terminal = marshal(pb.Op(inputs=[pb.Input(digest=op_digest(src))]))
    load_definition(marshal(pb.Definition(def_=[src, good_terminal])), "ok")

    missing = marshal(pb.Op(inputs=[pb.Input(digest="sha256:" + "0" * 64)]))
    message = _error(marshal(pb.Definition(def_=[src, missing])))
    assert "op 1 input 0 refers to missing op sha256:000" in message

    message = _error(marshal(pb.Definition(def_=[src])))
    assert "the last op has a source body, so it is not a terminal op" in message
    message = _error(marshal(pb.Definition(def_=[b""])))
    assert "the last op has no inputs" in message


def test_error_carries_op_digest() -> None:
    missing = marshal(pb.Op(inputs=[pb.Input(digest="sha256:abc")]))
    with pytest.raises(DefinitionError) as info:
        load_definition(marshal(pb.Definition(def_=[missing])), "x")
    assert info.value.digest == op_digest(missing)


def test_missing_metadata_prints_go_zero_value() -> None:
    src = _op(source=pb.SourceOp(identifier="local://ctx"))
    terminal = marshal(pb.Op(inputs=[pb.Input(digest=op_digest(src))]))
    ops = dump_ops(load_definition(marshal(pb.Definition(def_=[src, terminal])), "x"))
    # caps has no omitempty in Go (nullable=false), so a missing entry prints caps: null.
    assert ops[0]["OpMetadata"] == {"caps": None}
    assert ops[1]["Op"] == {"inputs": [{"digest": op_digest(src), "index": 0}], "Op": None}


def test_omitempty_and_oneof_rules() -> None:
    owner = pb.ChownOpt(user=pb.UserOpt(by_id=0), group=pb.UserOpt(by_name=pb.NamedUserOpt()))
    action = pb.FileAction(input=0, secondary_input=-1, output=0, mkdir=pb.FileActionMkDir())
    action.mkdir.owner = owner
    meta = pb.OpMetadata(export_cache=present(pb.ExportCache()), ignore_cache=True)
    src = _op(source=pb.SourceOp(identifier="local://ctx"))
    file_op = _op(inputs=[pb.Input(digest=op_digest(src))], file=pb.FileOp(actions=[action]))
    terminal = marshal(pb.Op(inputs=[pb.Input(digest=op_digest(file_op))]))
    defn = pb.Definition(def_=[src, file_op, terminal], metadata={op_digest(file_op): meta})
    dumped = dump_ops(load_definition(marshal(defn), "x"))[1]
    mkdir = dumped["Op"]["Op"]["file"]["actions"][0]["Action"]["mkdir"]
    # byID 0 is omitempty inside the oneof wrapper; NamedUserOpt.input is not omitempty.
    assert mkdir == {"owner": {"user": {"User": {}}, "group": {"User": {"byName": {"input": 0}}}}}
    assert dumped["OpMetadata"] == {"ignore_cache": True, "export_cache": {}, "caps": None}
    assert "platform" not in dumped["Op"]
    assert dumped["Op"]["constraints"] == {}


def test_bytes_are_base64_and_enums_numbers() -> None:
    data = (VECTORS / "v2_image_exec.llb").read_bytes()
    mounts = dump_ops(load_definition(data, "v2"))[1]["Op"]["Op"]["exec"]["mounts"]
    assert [m.get("mountType", 0) for m in mounts] == [0, 3, 4, 1]
    v1 = dump_ops(load_definition((VECTORS / "v1_scratch_mkfile.llb").read_bytes(), "v1"))
    assert v1[0]["Op"]["Op"]["file"]["actions"][0]["Action"]["mkfile"]["data"] == "aGVsbG8K"


def test_go_json_escaping() -> None:
    text = 'a<b>&c "q" \\ \n\r\t\b\f\x01\x7f é \u2028\u2029 😀'
    encoded = go_json({"k": text, "n": -1, "t": True, "f": False, "z": None, "l": [1, "x"]})
    assert encoded == (
        '{"k":"a\\u003cb\\u003e\\u0026c \\"q\\" \\\\ \\n\\r\\t\\u0008\\u000c\\u0001\x7f é '
        '\\u2028\\u2029 😀","n":-1,"t":true,"f":false,"z":null,"l":[1,"x"]}'
    )
    assert json.loads(encoded)["k"] == text


def test_go_quote() -> None:
    assert go_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert go_quote("\n\t\x01\x7f") == '"\\n\\t\\x01\\x7f"'
    assert go_quote("é\u00a0😀") == '"é\\u00a0😀"'


def test_dot_for_image_exec() -> None:
    defn = load_definition((VECTORS / "v2_image_exec.llb").read_bytes(), "v2")
    img, run, end = (op_digest(raw) for raw in defn.def_)
    argv = "/bin/sh -c cat /run/secrets/s > /out.txt; echo $FOO >> /out.txt; date > /cache/stamp"
    assert dump_dot(defn) == (
        "digraph {\n"
        f'  "{img}" [label="docker-image://127.0.0.1:5000/busybox:latest" shape="ellipse"];\n'
        f'  "{run}" [label="{argv}" shape="box"];\n'
        f'  "{end}" [label="{end}" shape="plaintext"];\n'
        # buildctl labels an exec edge with the last non-root mount using that input index;
        # the secret mount keeps input 0, so it wins.
        f'  "{img}" -> "{run}" [label="/run/secrets/s"];\n'
        f'  "{run}" -> "{end}" [label=""];\n'
        "}\n"
    )


@pytest.mark.parametrize("path", LLB_FILES, ids=lambda p: p.stem)
def test_dot_has_one_node_per_op_and_one_edge_per_input(path: Path) -> None:
    defn = load_definition(path.read_bytes(), path.name)
    text = dump_dot(defn)
    lines = text.splitlines()
    assert lines[0] == "digraph {" and lines[-1] == "}"
    ops = [pb.Op().parse(raw) for raw in defn.def_]
    nodes = [line for line in lines if "shape=" in line]
    edges = [line for line in lines if " -> " in line]
    assert len(nodes) == len(ops)
    assert len(edges) == sum(len(op.inputs) for op in ops)


def test_dot_labels_for_file_merge_diff() -> None:
    v3 = dump_dot(load_definition((VECTORS / "v3_fileop_chain.llb").read_bytes(), "v3"))
    assert (
        '[label="mkdir{path=/a/b},copy{src=/hello.txt, dest=/a/b/},mkfile{path=/a/f},'
        'rm{path=/a/f}" shape="note"]'
    ) in v3
    v4 = dump_dot(load_definition((VECTORS / "v4_merge_diff.llb").read_bytes(), "v4"))
    assert '[label="merge" shape="invtriangle"]' in v4
    assert '[label="diff" shape="doublecircle"]' in v4


def _len_field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 2**14
    length = (
        bytes([len(payload)])
        if len(payload) < 0x80
        else bytes([(len(payload) & 0x7F) | 0x80, len(payload) >> 7])
    )
    return bytes([number << 3 | 2]) + length + payload


def test_deep_nesting_is_refused_not_a_recursion_error() -> None:
    # Definition.Source -> Source.infos -> SourceInfo.definition -> Definition -> ...
    def nest(levels: int) -> bytes:
        data = b""
        for _ in range(levels):
            data = _len_field(3, _len_field(2, _len_field(3, data)))
        return data

    assert "nested deeper than 100 levels" in _error(nest(1000))
    # Shallow nesting is fine as far as the wire check goes (it then fails for having no ops).
    assert "it contains no ops" in _error(nest(20))
