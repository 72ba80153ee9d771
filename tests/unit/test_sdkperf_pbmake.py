"""``pbmake.make`` builds the same message objects as betterproto's constructors."""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass
from typing import Any, cast

import betterproto
import pytest

from bkcore.llb import pb
from bkcore.llb.digest import marshal
from bkcore.llb.pbmake import make

CLASSES = sorted(
    (
        cls
        for cls in vars(pb).values()
        if isinstance(cls, type) and issubclass(cls, betterproto.Message)
    ),
    key=lambda c: c.__name__,
)


def _meta(cls: type[betterproto.Message]) -> Any:
    return cast(Any, cls)._betterproto


def _sample(cls: type[betterproto.Message], name: str, depth: int) -> Any:
    """A non-zero value for field ``name`` of ``cls``."""
    meta = _meta(cls).meta_by_field_name[name]
    hint = typing.get_type_hints(cls)[name]
    if meta.proto_type == "map":
        _, vtype = meta.map_types or ("", "")
        key: Any = "k" if meta.map_types and meta.map_types[0] == "string" else 3
        if vtype == "message":
            vcls = _meta(cls).cls_by_field[f"{name}.value"]
            return {key: _message(vcls, depth + 1)}
        return {key: {"string": "v", "bool": True, "bytes": b"v"}.get(vtype, 7)}
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if isinstance(item, type) and issubclass(item, betterproto.Message):
            return [_message(item, depth + 1)]
        return [{"string": "a", "bytes": b"a"}.get(meta.proto_type, 5)]
    if meta.proto_type == "message":
        return _message(_meta(cls).cls_by_field[name], depth + 1)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(1) if len(hint) > 1 else hint(0)
    return {"string": "s", "bytes": b"b", "bool": True}.get(meta.proto_type, -2)


def _message(cls: type[betterproto.Message], depth: int) -> betterproto.Message:
    if depth > 3:
        return cls()
    return cls(**{n: _sample(cls, n, depth) for n in _plain_fields(cls)})


def _plain_fields(cls: type[betterproto.Message]) -> list[str]:
    by_name = _meta(cls).meta_by_field_name
    return [n for n, f in by_name.items() if not f.group]


def _cases(cls: type[betterproto.Message]) -> list[dict[str, Any]]:
    """No fields; every non-oneof field; each oneof member alone; zero values given."""
    by_name = _meta(cls).meta_by_field_name
    cases: list[dict[str, Any]] = [{}]
    plain = {n: _sample(cls, n, 0) for n in _plain_fields(cls)}
    if plain:
        cases.append(plain)
    for name, f in by_name.items():
        if f.group:
            cases.append({**plain, name: _sample(cls, name, 0)})
    zeros = {n: _meta(cls).default_gen[n]() for n in by_name}
    cases.append({k: v for k, v in zeros.items() if not by_name[k].group})
    return cases


def _state(msg: betterproto.Message) -> dict[str, Any]:
    values = dict(object.__getattribute__(msg, "__dict__"))
    return values


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_make_equals_the_constructor(cls: type[betterproto.Message]) -> None:
    for fields in _cases(cls):
        want = cls(**fields)
        got = make(cls, **fields)
        assert type(got) is cls
        assert _state(got) == _state(want), fields
        assert got == want
        assert marshal(got) == marshal(want)
        assert bytes(got) == bytes(want)


def test_made_messages_behave_like_constructed_ones_after_assignment() -> None:
    op = make(pb.Op, inputs=[make(pb.Input, digest="sha256:x", index=1)])
    assert betterproto.which_one_of(op, "op") == ("", None)
    op.file = make(pb.FileOp, actions=[])
    assert betterproto.which_one_of(op, "op")[0] == "file"
    op.merge = make(pb.MergeOp, inputs=[make(pb.MergeInput, input=0)])
    assert betterproto.which_one_of(op, "op")[0] == "merge"
    with pytest.raises(AttributeError):
        _ = op.file
    ref = pb.Op(inputs=[pb.Input(digest="sha256:x", index=1)])
    ref.file = pb.FileOp(actions=[])
    ref.merge = pb.MergeOp(inputs=[pb.MergeInput(input=0)])
    assert marshal(op) == marshal(ref)
    assert pb.Op().parse(marshal(op)) == op


def test_an_empty_constraints_message_given_explicitly_is_written() -> None:
    # Go always writes Op.constraints (5a 00); only a *given* empty message is present
    assert marshal(make(pb.Op, constraints=make(pb.WorkerConstraints, filter=[]))) == bytes.fromhex(
        "5a00"
    )
    assert marshal(make(pb.Op, constraints=make(pb.WorkerConstraints))) == b""


def test_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        make(pb.Op, nope=1)
    with pytest.raises(TypeError, match="_serialized_on_wire"):
        make(pb.Op, _serialized_on_wire=True)


@dataclass(eq=False, repr=False)
class _Empty(betterproto.Message):
    pass


@dataclass(eq=False, repr=False)
class _Holder(betterproto.Message):
    empty: _Empty = betterproto.message_field(1)  # noqa: RUF009 (betterproto fields)
    name: str = betterproto.string_field(2)


def test_a_given_message_without_fields_is_marked_present_like_the_constructor() -> None:
    got, want = make(_Holder, empty=make(_Empty)), _Holder(empty=_Empty())
    assert _state(got.empty) == _state(want.empty)
    assert object.__getattribute__(got.empty, "__dict__")["_serialized_on_wire"] is True
    assert marshal(got) == marshal(want) == bytes.fromhex("0a00")
    assert marshal(make(_Holder, name="x")) == marshal(_Holder(name="x")) == b"\x12\x01x"
