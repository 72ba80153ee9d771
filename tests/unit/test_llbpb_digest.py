"""Go-compatible encoding (spec/llb.md §2) and digests of ops built from scratch."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import betterproto

from bkcore.llb import pb
from bkcore.llb.digest import digest_op, marshal, op_digest, present
from bkcore.llb.dump import load_definition

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"
V1_OP0 = "sha256:61428d78668746c1b72be9c73c1d6d4655a33f66a9796ba2f19caa071357d5a2"
V1_TERMINAL = "sha256:153c79e1ff706c4cb0c1ff07e33de53b8bba678fff99ee7c7041a5d79e0d37ec"
MINUS_ONE = b"\xff" * 9 + b"\x01"


def test_op_digest_format() -> None:
    assert op_digest(b"") == "sha256:" + hashlib.sha256(b"").hexdigest()
    assert op_digest(b"\x5a\x00") == "sha256:" + hashlib.sha256(b"\x5a\x00").hexdigest()


def _v1_ops() -> tuple[pb.Op, pb.Op]:
    mkfile = pb.FileActionMkFile(path="/hello.txt", mode=0o644, data=b"hello\n", timestamp=-1)
    action = pb.FileAction(input=-1, secondary_input=-1, output=0, mkfile=mkfile)
    op0 = pb.Op(
        file=pb.FileOp(actions=[action]),
        platform=pb.Platform(architecture="amd64", os="linux"),
        constraints=present(pb.WorkerConstraints()),
    )
    terminal = pb.Op(inputs=[pb.Input(digest=digest_op(op0)[1], index=0)])
    return op0, terminal


def test_v1_built_from_scratch_matches_go_digests() -> None:
    op0, terminal = _v1_ops()
    raw0, d0 = digest_op(op0)
    raw1, d1 = digest_op(terminal)
    assert (d0, d1) == (V1_OP0, V1_TERMINAL)
    assert raw0.endswith(b"\x52\x0e\x0a\x05amd64\x12\x05linux\x5a\x00")
    assert raw1 == b"\x0a\x49\x0a\x47" + V1_OP0.encode()


def test_v1_whole_definition_from_scratch_equals_go_bytes() -> None:
    op0, terminal = _v1_ops()
    raw0, d0 = digest_op(op0)
    raw1, d1 = digest_op(terminal)
    defn = pb.Definition(
        def_=[raw0, raw1],
        # Insertion order deliberately unsorted: marshal sorts map keys like Go.
        metadata={
            d1: pb.OpMetadata(caps={"platform": True, "constraints": True}),
            d0: pb.OpMetadata(caps={"file.base": True}),
        },
        source=pb.Source(locations={d0: pb.Locations()}),
    )
    assert marshal(defn) == (VECTORS / "v1_scratch_mkfile.llb").read_bytes()


def test_dependency_free_generator_reproduces_v1(tmp_path: Path) -> None:
    out = tmp_path / "v1.llb"
    subprocess.run(
        [sys.executable, str(VECTORS / "gen_v1_scratch_mkfile.py"), str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == (VECTORS / "v1_scratch_mkfile.llb").read_bytes()


def test_pitfall_empty_submessage_needs_present() -> None:
    # betterproto drops an empty sub-message built without arguments; Go writes `5a 00`.
    assert bytes(pb.Op(constraints=pb.WorkerConstraints())) == b""
    assert marshal(pb.Op(constraints=pb.WorkerConstraints())) == b""
    assert marshal(pb.Op(constraints=present(pb.WorkerConstraints()))) == b"\x5a\x00"
    assert marshal(pb.Op(constraints=pb.WorkerConstraints(filter=[]))) == b"\x5a\x00"
    op0, _ = _v1_ops()
    op0.constraints = pb.WorkerConstraints()
    op0.constraints._serialized_on_wire = False
    assert digest_op(op0)[1] != V1_OP0


def test_submessage_mutated_in_place_is_written() -> None:
    meta = pb.Meta()
    meta.args.append("true")  # no __setattr__, so betterproto does not mark it as set
    assert marshal(pb.ExecOp(meta=meta)) == b"\x0a\x06\x0a\x04true"


def test_diff_and_merge_empty_inputs_are_written() -> None:
    diff = pb.DiffOp(lower=present(pb.LowerDiffInput()), upper=pb.UpperDiffInput(input=1))
    assert marshal(diff) == b"\x0a\x00\x12\x02\x08\x01"
    merge = pb.MergeOp(inputs=[pb.MergeInput(), pb.MergeInput(input=1)])
    assert marshal(merge) == b"\x0a\x00\x0a\x02\x08\x01"


def test_negative_values_are_ten_byte_varints() -> None:
    assert marshal(pb.FileActionCopy(mode=-1)) == b"\x20" + MINUS_ONE
    assert marshal(pb.Mount(input=-1, output=-1)) == b"\x08" + MINUS_ONE + b"\x20" + MINUS_ONE


def test_zero_scalars_are_omitted_but_selected_oneof_is_written() -> None:
    assert marshal(pb.Input(digest="", index=0)) == b""
    assert marshal(pb.Mount(input=0, readonly=False, dest="/")) == b"\x1a\x01/"
    assert marshal(pb.UserOpt(by_id=0)) == b"\x10\x00"
    assert marshal(pb.UserOpt(by_name=pb.NamedUserOpt())) == b"\x0a\x00"
    assert marshal(pb.UserOpt()) == b""


def test_maps_sorted_with_both_key_and_value() -> None:
    src = pb.SourceOp(identifier="x", attrs={"b": "2", "a": "1", "c": ""})
    expected = (
        b"\x0a\x01x"
        + b"\x12\x06\x0a\x01a\x12\x011"
        + b"\x12\x06\x0a\x01b\x12\x012"
        + b"\x12\x05\x0a\x01c\x12\x00"
    )
    assert marshal(src) == expected
    assert bytes(src) != expected  # betterproto: insertion order and a dropped empty value
    caps = pb.OpMetadata(caps={"z": True, "a": False})
    assert marshal(caps) == b"\x2a\x05\x0a\x01a\x10\x00" + b"\x2a\x05\x0a\x01z\x10\x01"


def test_range_start_and_end_always_written() -> None:
    assert marshal(pb.Range()) == b"\x0a\x00\x12\x00"
    assert marshal(pb.Range(start=pb.Position(line=3))) == b"\x0a\x02\x08\x03\x12\x00"


def test_numeric_repeated_fields_are_packed() -> None:
    @dataclass(eq=False, repr=False)
    class Packed(betterproto.Message):
        nums: list[int] = betterproto.int32_field(1)  # noqa: RUF009
        flags: list[bool] = betterproto.bool_field(2)  # noqa: RUF009

    assert marshal(Packed(nums=[1, -1], flags=[])) == b"\x0a\x0b\x01" + MINUS_ONE
    assert marshal(Packed(nums=[], flags=[True, False])) == b"\x12\x02\x01\x00"


def test_unknown_fields_survive_and_are_accepted() -> None:
    # A field from a newer BuildKit (number 12 on Op) is kept and does not break loading.
    op0, _ = _v1_ops()
    raw0 = marshal(op0) + b"\x62\x03abc"
    assert marshal(pb.Op().parse(raw0)) == raw0
    terminal = pb.Op(inputs=[pb.Input(digest=op_digest(raw0))])
    defn = pb.Definition(def_=[raw0, marshal(terminal)])
    loaded = load_definition(marshal(defn), "newer")
    assert loaded.def_[0] == raw0
