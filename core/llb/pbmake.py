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


def _dict_of(obj: object) -> dict[str, Any]:
    """``obj.__dict__`` without betterproto's ``__getattribute__`` (a Python-level call)."""
    return cast(dict[str, Any], object.__getattribute__(obj, "__dict__"))


class _Spec(NamedTuple):
    template: dict[str, Any]  # every field unset, as __init__ leaves it
    order: tuple[str, ...]  # field names in betterproto's order
    group_of: dict[str, str]  # oneof member -> group
    groups: dict[str, str | None]  # every group, nothing selected
    optional: frozenset[str]  # proto3 optional fields (None = unset)


_SPECS: dict[type, _Spec] = {}


def _spec(cls: type) -> _Spec:
    meta = cast(Any, cls)._betterproto
    by_name = meta.meta_by_field_name
    template: dict[str, Any] = {"_serialized_on_wire": False}
    template.update(dict.fromkeys(by_name, _PLACEHOLDER))
    template["_unknown_fields"] = b""
    group_of = {name: f.group for name, f in by_name.items() if f.group}
    spec = _Spec(
        template,
        tuple(by_name),
        group_of,
        dict.fromkeys(group_of.values(), None),
        frozenset(name for name, f in by_name.items() if f.optional),
    )
    _SPECS[cls] = spec
    return spec


def make(cls: type[M], /, **fields: Any) -> M:
    """``cls(**fields)`` without betterproto's per-field bookkeeping (same resulting object)."""
    spec = _SPECS.get(cls)
    if spec is None:
        spec = _spec(cls)
    obj = object.__new__(cls)
    values = _dict_of(obj)
    values.update(spec.template)
    groups = dict(spec.groups)
    if fields:
        for name in fields:
            if name not in spec.template or name.startswith("_"):
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {name!r}")
        values.update(fields)
        given = False
        for name in spec.order:  # betterproto's __post_init__ order: the last member given wins
            value = fields.get(name, _PLACEHOLDER)
            if value is _PLACEHOLDER or (value is None and name in spec.optional):
                continue
            given = True
            group = spec.group_of.get(name)
            if group is not None:
                groups[group] = name
            if isinstance(value, betterproto.Message):  # a message class without fields
                vspec = _SPECS.get(type(value)) or _spec(type(value))
                if not vspec.order:
                    _dict_of(value)["_serialized_on_wire"] = True
        values["_serialized_on_wire"] = given
    values["_group_current"] = groups
    return obj
