"""Cheap construction of betterproto messages for the marshal hot path.

``pb.Op(inputs=..., platform=...)`` runs betterproto's dataclass ``__init__``: one
``__setattr__`` per field (each checking oneof groups through ``__getattribute__``) and a
``__post_init__`` walk -- about 30 us per message, most of the SDK's marshal time for a
large graph. :func:`make` builds the same object directly: the instance ``__dict__`` betterproto's
constructor would leave (unset fields hold its PLACEHOLDER, ``_serialized_on_wire`` is true
when a field was given, the selected member of each oneof group is recorded). The result is
an ordinary message: reading, assigning, ``==`` and encoding behave as for the constructor's
(a unit test compares the two for every LLB message class).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, TypeVar, cast

import betterproto

__all__ = ["make"]

M = TypeVar("M", bound=betterproto.Message)

_PLACEHOLDER: Final[Any] = betterproto.PLACEHOLDER


_new: Final = object.__new__
_raw_get: Final = object.__getattribute__


def _dict_of(obj: object) -> dict[str, Any]:
    """``obj.__dict__`` without betterproto's ``__getattribute__`` (a Python-level call)."""
    return cast(dict[str, Any], object.__getattribute__(obj, "__dict__"))


class _Spec(NamedTuple):
    template: dict[str, Any]  # every field unset, as __init__ leaves it
    names: frozenset[str]  # the message's field names
    members: tuple[tuple[str, str], ...]  # (oneof member, group) in betterproto's order
    groups: dict[str, str | None]  # every group, nothing selected
    optional: frozenset[str]  # proto3 optional fields (None = unset)
    empty_messages: frozenset[str]  # fields whose message class has no fields


_SPECS: dict[type, _Spec] = {}


def _spec(cls: type) -> _Spec:
    meta = cast(Any, cls)._betterproto
    by_name = meta.meta_by_field_name
    template: dict[str, Any] = {"_serialized_on_wire": False}
    template.update(dict.fromkeys(by_name, _PLACEHOLDER))
    template["_unknown_fields"] = b""
    members = tuple((name, f.group) for name, f in by_name.items() if f.group)
    empty = frozenset(
        name
        for name, f in by_name.items()
        if f.proto_type == "message"
        and not cast(Any, meta.cls_by_field[name])._betterproto.meta_by_field_name
    )
    spec = _Spec(
        template,
        frozenset(by_name),
        members,
        dict.fromkeys((g for _, g in members), None),
        frozenset(name for name, f in by_name.items() if f.optional),
        empty,
    )
    _SPECS[cls] = spec
    return spec


def _given(name: str, value: Any, optional: frozenset[str]) -> bool:
    """Whether betterproto's ``__post_init__`` counts ``value`` as set."""
    return value is not _PLACEHOLDER and not (value is None and name in optional)


def make(cls: type[M], /, **fields: Any) -> M:
    """``cls(**fields)`` without betterproto's per-field bookkeeping (same resulting object)."""
    spec = _SPECS.get(cls)
    if spec is None:
        spec = _spec(cls)
    obj = _new(cls)
    values: dict[str, Any] = _raw_get(obj, "__dict__")
    values.update(spec.template)
    groups = dict(spec.groups)
    if fields:
        if not fields.keys() <= spec.names:
            name = min(fields.keys() - spec.names)
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        values.update(fields)
        optional = spec.optional
        if optional:
            given = any(_given(name, value, optional) for name, value in fields.items())
        else:  # some field was given a value (not PLACEHOLDER)
            given = list(fields.values()).count(_PLACEHOLDER) < len(fields)
        values["_serialized_on_wire"] = given
        for name, group in spec.members:  # __post_init__'s order: the last member given wins
            if name in fields and _given(name, fields[name], optional):
                groups[group] = name
        for name in spec.empty_messages.intersection(fields):
            value = fields[name]
            if isinstance(value, betterproto.Message):  # as betterproto's __setattr__ does
                _dict_of(value)["_serialized_on_wire"] = True
    values["_group_current"] = groups
    return obj
