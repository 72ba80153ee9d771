"""Go ``encoding/json`` of the LLB wire types, byte for byte.

BuildKit writes gogo-generated structs with Go's ``encoding/json`` in two places that bkcore
must reproduce exactly: ``buildctl debug dump-llb`` and the solver's cache-map documents
(spec/solver.md §2). The rules are the same in both:

* fields in declaration order, named as in the .proto files (= the Go JSON tags);
* ``omitempty`` everywhere except the non-nullable Go fields in :data:`NO_OMITEMPTY` (the
  index fields ``input``/``secondaryInput``/``output`` and friends), which always print;
* a sub-message prints when its Go pointer would be non-nil (see :func:`is_present`);
* a oneof prints as ``"<GoName>":{"<member>":…}`` (``null`` when unset);
* enums as numbers, ``bytes`` as standard base64, map keys sorted;
* strings escaped like Go's encoder, HTML characters and U+2028/U+2029 included.

:func:`message_json` turns a betterproto message into plain JSON values; :func:`go_json`
encodes plain values (and, for convenience, messages and ``bytes``) to compact text.
"""

from __future__ import annotations

import base64
from typing import Any, Final, cast

import betterproto

from bkcore.llb.digest import marshal
from bkcore.llb.pb.names import PROTO_NAMES

__all__ = ["NO_OMITEMPTY", "JSONValue", "go_json", "is_present", "message_json"]

JSONValue = Any


def _oneof(msg: betterproto.Message, group: str) -> tuple[str, Any]:
    """(selected member name or "", its value) of a oneof group."""
    return cast(tuple[str, Any], betterproto.which_one_of(msg, group))


# Fields whose Go type is non-nullable (gogoproto customtype / nullable=false): their JSON tag
# has no omitempty, so zero values print (0, "", {} or null for an empty map).
NO_OMITEMPTY: Final = frozenset(
    {
        ("Input", "digest"),
        ("Input", "index"),
        ("Mount", "input"),
        ("Mount", "output"),
        ("BuildOp", "builder"),
        ("BuildInput", "input"),
        ("OpMetadata", "caps"),
        ("Range", "start"),
        ("Range", "end"),
        ("Definition", "metadata"),
        ("FileAction", "input"),
        ("FileAction", "secondaryInput"),
        ("FileAction", "output"),
        ("NamedUserOpt", "input"),
        ("MergeInput", "input"),
        ("LowerDiffInput", "input"),
        ("UpperDiffInput", "input"),
    }
)


def _go_field_name(proto_name: str) -> str:
    """Go's CamelCase of a proto name, as used for oneof interface fields."""
    parts = proto_name.split("_")
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def is_present(msg: betterproto.Message) -> bool:
    return bool(msg._serialized_on_wire) or bool(marshal(msg))


def _scalar_json(proto_type: str, value: Any) -> JSONValue:
    if proto_type == "bytes":
        return base64.b64encode(bytes(value)).decode("ascii")
    if proto_type == "bool":
        return bool(value)
    if proto_type == "string":
        return str(value)
    if proto_type in ("float", "double"):
        return float(value)
    return int(value)


def _is_empty_scalar(proto_type: str, value: Any) -> bool:
    if proto_type in ("string", "bytes"):
        return len(value) == 0
    return not value


def _value_json(proto_type: str, value: Any) -> JSONValue:
    if proto_type == "message":
        return message_json(value)
    return _scalar_json(proto_type, value)


def message_json(msg: betterproto.Message) -> dict[str, JSONValue]:
    cls_name = type(msg).__name__
    names = PROTO_NAMES[cls_name]
    meta = cast(Any, msg)._betterproto
    out: dict[str, JSONValue] = {}
    for fname in meta.sorted_field_names:
        field = meta.meta_by_field_name[fname]
        if field.group:
            key = _go_field_name(field.group)
            if key in out:
                continue
            selected, value = _oneof(msg, field.group)
            if not selected:
                out[key] = None
                continue
            member = meta.meta_by_field_name[selected]
            wrapper: dict[str, JSONValue] = {}
            if member.proto_type == "message" or not _is_empty_scalar(member.proto_type, value):
                wrapper[names[member.number]] = _value_json(member.proto_type, value)
            out[key] = wrapper
            continue
        jname = names[field.number]
        always = (cls_name, jname) in NO_OMITEMPTY
        value = getattr(msg, fname)
        ptype = field.proto_type
        if ptype == "map":
            assert field.map_types is not None
            if value:
                vtype = field.map_types[1]
                out[jname] = {str(k): _value_json(vtype, value[k]) for k in sorted(value)}
            elif always:
                out[jname] = None
        elif isinstance(value, list):
            if value:
                out[jname] = [_value_json(ptype, v) for v in value]
            elif always:
                out[jname] = None
        elif ptype == "message":
            if always or is_present(value):
                out[jname] = message_json(value)
        elif always or not _is_empty_scalar(ptype, value):
            out[jname] = _scalar_json(ptype, value)
    return out


def _json_escape_table() -> dict[int, str]:
    table = {c: f"\\u{c:04x}" for c in range(0x20)}
    table.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
    table.update({ord('"'): '\\"', ord("\\"): "\\\\"})
    # Go's json.Encoder escapes HTML characters and JS line separators by default.
    for ch in "<>&\u2028\u2029":
        table[ord(ch)] = f"\\u{ord(ch):04x}"
    return table


_JSON_ESCAPES: Final = _json_escape_table()


def go_json(value: JSONValue) -> str:
    """Encode like Go's ``json.Marshal`` (compact, HTML-escaped; no trailing newline).

    Accepts None, bool, int, float, str, dict (keys keep their order: sort map keys first, as
    Go does), list/tuple, ``bytes`` (base64, as Go encodes ``[]byte``) and betterproto
    messages (through :func:`message_json`).
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    if isinstance(value, str):
        return '"' + value.translate(_JSON_ESCAPES) + '"'
    if isinstance(value, bytes | bytearray | memoryview):
        return '"' + base64.b64encode(bytes(value)).decode("ascii") + '"'
    if isinstance(value, dict):
        items = (go_json(str(k)) + ":" + go_json(v) for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, betterproto.Message):
        return go_json(message_json(value))
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
