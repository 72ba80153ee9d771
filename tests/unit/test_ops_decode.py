"""The fast op decoder leaves exactly the state betterproto's parser leaves."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import betterproto
import pytest

from bkcore.llb import pb
from bkcore.llb.digest import marshal, present
from bkcore.ops import decode
from bkcore.ops.decode import parse_message, parse_op

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"
LLB_FILES = sorted(VECTORS.glob("v*.llb"))


def _same(a: Any, b: Any, where: str = "") -> None:
    """Deep comparison of raw instance state (placeholders, flags and oneof records too)."""
    assert type(a) is type(b), where
    if isinstance(a, betterproto.Message):
        da, db = a.__dict__, b.__dict__
        assert da.keys() == db.keys(), where
        for key in da:
            _same(da[key], db[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    else:
        assert a is b or a == b, f"{where}: {a!r} != {b!r}"


def _vector_ops() -> list[bytes]:
    ops = []
    for path in LLB_FILES:
        ops.extend(pb.Definition().parse(path.read_bytes()).def_)
    return ops


@pytest.mark.parametrize("index", range(len(_vector_ops())))
def test_every_golden_op_decodes_like_betterproto(index: int) -> None:
    raw = _vector_ops()[index]
    fast = parse_op(raw)
    _same(fast, pb.Op().parse(raw))
    assert marshal(fast) == raw
    assert betterproto.which_one_of(fast, "op") == betterproto.which_one_of(
        pb.Op().parse(raw), "op"
    )


@pytest.mark.parametrize("path", LLB_FILES, ids=lambda p: p.name)
def test_whole_definitions_with_maps_decode_like_betterproto(path: Path) -> None:
    data = path.read_bytes()
    _same(parse_message(pb.Definition, data), pb.Definition().parse(data))


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_negative_ints_enums_unknown_fields_and_oneof_replacement() -> None:
    mount = pb.Mount(
        input=-1,
        dest="/c",
        output=-1,
        mount_type=pb.MountType(pb.MountType.CACHE),
        cache_opt=pb.CacheOpt(id="c", sharing=pb.CacheSharingOpt(pb.CacheSharingOpt.LOCKED)),
    )
    ulimit = pb.Ulimit(name="nofile", soft=-5, hard=1 << 40)
    exec_op = pb.ExecOp(
        meta=pb.Meta(args=["a"], ulimit=[ulimit], remove_mount_stubs_recursive=True),
        mounts=[mount],
        network=pb.NetMode(2),
        security=pb.SecurityMode(1),
    )
    op = pb.Op(exec=exec_op, constraints=present(pb.WorkerConstraints()))
    raw = marshal(op)
    # an enum value newer than the schema, an unknown field, then a second oneof member
    extra = bytes([0x18]) + _varint(77)  # ExecOp.network = 77 (unknown enum value)
    body = marshal(exec_op) + extra
    mutated = (
        bytes([0x12])
        + _varint(len(body))
        + body  # Op.exec
        + bytes([0xF8, 0x06])
        + _varint(-3)  # unknown field 111, varint
        + raw[raw.index(b"\x5a\x00") :]  # constraints
    )
    for data in (
        raw,
        mutated,
        mutated + marshal(pb.Op(merge=pb.MergeOp(inputs=[pb.MergeInput(input=0)]))),
    ):
        _same(parse_op(data), pb.Op().parse(data))
    fast = parse_op(mutated)
    assert fast.exec.meta.ulimit[0].soft == -5 and fast.exec.mounts[0].input == -1
    assert fast.exec.network == 77 and fast.__dict__["_unknown_fields"] != b""


def test_random_file_ops_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(200):
        actions = []
        for i in range(rng.randint(1, 4)):
            kind = rng.choice(["copy", "mkfile", "mkdir", "rm"])
            owner = pb.ChownOpt(
                user=pb.UserOpt(by_name=pb.NamedUserOpt(name="u", input=rng.randint(0, 2)))
                if rng.random() < 0.5
                else pb.UserOpt(by_id=rng.randint(0, 70000)),
            )
            bodies: dict[str, dict[str, Any]] = {
                "copy": {
                    "copy": pb.FileActionCopy(
                        src="/s",
                        dest="/d",
                        owner=owner,
                        mode=rng.choice([-1, 0o755]),
                        include_patterns=["*.py"] * rng.randint(0, 2),
                        timestamp=rng.randint(-1, 1 << 40),
                    )
                },
                "mkfile": {
                    "mkfile": pb.FileActionMkFile(
                        path="/f", mode=0o600, data=rng.randbytes(rng.randint(0, 40)), owner=owner
                    )
                },
                "mkdir": {
                    "mkdir": pb.FileActionMkDir(
                        path="/d", mode=0o755, make_parents=rng.random() < 0.5
                    )
                },
                "rm": {
                    "rm": pb.FileActionRm(
                        path="/x", allow_not_found=True, allow_wildcard=rng.random() < 0.5
                    )
                },
            }
            body = bodies[kind]
            actions.append(
                pb.FileAction(
                    input=i - 1,
                    secondary_input=rng.randint(-1, 3),
                    output=rng.choice([-1, 0]),
                    **body,
                )
            )
        op = pb.Op(
            file=pb.FileOp(actions=actions),
            platform=pb.Platform(os="linux", architecture="arm", variant="v7"),
        )
        raw = marshal(op)
        fast = parse_op(raw)
        _same(fast, pb.Op().parse(raw))
        assert marshal(fast) == raw


def test_malformed_bytes_fall_back_to_betterproto(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    original = pb.Op.parse

    def spy(self: pb.Op, data: bytes) -> pb.Op:
        calls.append(data)
        return original(self, data)

    monkeypatch.setattr(pb.Op, "parse", spy)
    truncated = marshal(pb.Op(source=pb.SourceOp(identifier="local://x")))[:-3]
    parse_op(truncated)  # length runs past the end: betterproto decides
    assert calls == [truncated]
    calls.clear()
    parse_op(marshal(pb.Op(source=pb.SourceOp(identifier="local://x"))))
    assert calls == []
    assert decode._table(pb.Op).fields[3].name == "source"


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_deep_nesting_is_refused_and_shallow_nesting_matches() -> None:
    def nest(levels: int) -> bytes:  # Definition.Source.infos[0].definition ...
        data = b""
        for _ in range(levels):
            data = _len_field(3, _len_field(2, _len_field(3, data)))
        return data

    shallow = nest(10)
    _same(parse_message(pb.Definition, shallow), pb.Definition().parse(shallow))
    with pytest.raises(ValueError, match="nested deeper than 100 levels"):
        parse_message(pb.Definition, nest(1000))
    op = _len_field(5, _len_field(3, nest(1000)))  # Op.build.def
    with pytest.raises(ValueError, match="nested deeper"):
        parse_op(op)
