"""Load a serialized LLB Definition strictly, and print it like ``buildctl debug dump-llb``.

* :func:`load_definition` checks the bytes against the schema before betterproto sees them
  (betterproto's parser silently accepts truncated and mistyped input), then checks the graph
  (every input digest present, terminal op last) and raises one-line
  :class:`~bkcore.errors.DefinitionError`\\ s that name the input.
* :func:`dump_ops` gives, per op, the object ``buildctl debug dump-llb`` prints: keys ``Op``,
  ``Digest``, ``OpMetadata`` with the Go JSON names and omitempty rules of BuildKit v0.11.6's
  gogo types. :func:`go_json` (from :mod:`bkcore.llb.gojson`) encodes one such object byte
  for byte like Go's json.Encoder.
* :func:`dump_dot` gives the ``--dot`` Graphviz text, in buildctl's layout.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, Final, cast

import betterproto

from bkcore.errors import DefinitionError
from bkcore.llb import pb
from bkcore.llb.digest import op_digest
from bkcore.llb.gojson import JSONValue, go_json
from bkcore.llb.gojson import message_json as _message_json
from bkcore.llb.pb.names import PROTO_NAMES

__all__ = ["dump_dot", "dump_ops", "go_json", "load_definition"]

_VARINT_TYPES: Final = frozenset(
    {"enum", "bool", "int32", "int64", "uint32", "uint64", "sint32", "sint64"}
)
_FIXED_SIZES: Final = {
    "fixed32": 4,
    "sfixed32": 4,
    "float": 4,
    "fixed64": 8,
    "sfixed64": 8,
    "double": 8,
}
_WIRE_OF_SIZE: Final = {4: 5, 8: 1}
# Nested messages deeper than this are refused (betterproto and this checker recurse; Go
# clients never nest more than a few Definitions inside each other).
MAX_NESTING: Final = 100
_WIRE_NAMES: Final = {0: "varint", 1: "fixed64", 2: "length-delimited", 5: "fixed32"}

# ---------------------------------------------------------------------------------------------
# Strict loading


class _WireError(Exception):
    """A malformed protobuf encoding; str() is the one-line reason."""


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= end:
            raise _WireError("varint runs past the end of the data")
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise _WireError("varint overflows 64 bits")
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
    raise _WireError("varint longer than 10 bytes")


def _expected_wire(proto_type: str) -> int:
    if proto_type in _VARINT_TYPES:
        return 0
    if proto_type in _FIXED_SIZES:
        return _WIRE_OF_SIZE[_FIXED_SIZES[proto_type]]
    return 2


def _check_packed(data: bytes, start: int, end: int, proto_type: str) -> None:
    if proto_type in _FIXED_SIZES:
        if (end - start) % _FIXED_SIZES[proto_type]:
            raise _WireError(f"packed {proto_type} data has a partial element")
        return
    pos = start
    while pos < end:
        _, pos = _read_varint(data, pos, end)


@functools.cache
def _repeated_fields(cls: type[betterproto.Message]) -> frozenset[str]:
    meta = cast(Any, cls)._betterproto
    return frozenset(
        name
        for name, field in meta.meta_by_field_name.items()
        if field.proto_type not in ("message", "map") and isinstance(meta.default_gen[name](), list)
    )


def _check_message(
    data: bytes, start: int, end: int, cls: type[betterproto.Message], depth: int = 0
) -> None:
    """Validate data[start:end] as an encoding of ``cls``; raise _WireError if malformed."""
    if depth > MAX_NESTING:
        raise _WireError(f"messages nested deeper than {MAX_NESTING} levels")
    meta = cast(Any, cls)._betterproto
    repeated_scalars = _repeated_fields(cls)
    pos = start
    while pos < end:
        key, pos = _read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        name = meta.field_name_by_number.get(number)
        label = PROTO_NAMES.get(cls.__name__, {}).get(number, name)
        where = (
            f"{cls.__name__}.{label} (field {number})" if name else f"{cls.__name__} field {number}"
        )
        if number == 0:
            raise _WireError(f"{cls.__name__}: field number 0")
        value_start = pos
        if wire == 0:
            _, pos = _read_varint(data, pos, end)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, value_start = _read_varint(data, pos, end)
            pos = value_start + length
        else:
            raise _WireError(f"{where} uses unsupported wire type {wire}")
        if pos > end:
            raise _WireError(f"{where} runs past the end of the data")
        if name is None:
            continue  # unknown field (for example from a newer BuildKit): skipped, as Go does
        field = meta.meta_by_field_name[name]
        ptype = field.proto_type
        expected = _expected_wire(ptype)
        packed = wire == 2 and expected != 2 and name in repeated_scalars
        if wire != expected and not packed:
            raise _WireError(
                f"{where} has wire type {_WIRE_NAMES.get(wire, wire)}, "
                f"expected {_WIRE_NAMES[expected]}"
            )
        if packed:
            _check_packed(data, value_start, pos, ptype)
        elif ptype in ("message", "map"):
            _check_message(data, value_start, pos, meta.cls_by_field[name], depth + 1)
        elif ptype == "string":
            try:
                data[value_start:pos].decode("utf-8")
            except UnicodeDecodeError:
                raise _WireError(f"{where} is not valid UTF-8") from None


def _check(data: bytes, cls: type[betterproto.Message], what: str) -> None:
    try:
        _check_message(data, 0, len(data), cls)
    except _WireError as exc:
        raise _WireError(f"{what}{exc}") from None


def _length_delimited(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, value) of the length-delimited fields of already-validated bytes."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos, end)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos, end)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            length, pos = _read_varint(data, pos, end)
            yield key >> 3, data[pos : pos + length]
            pos += length


_OP_KINDS: Final = {n: name for n, name in PROTO_NAMES["Op"].items() if 2 <= n <= 7}


def _op_edges(raw: bytes) -> tuple[list[str], str]:
    """Input digests and body kind ("" for none) of validated op bytes, without betterproto."""
    inputs: list[str] = []
    kind = ""
    for number, value in _length_delimited(raw):
        if number == 1:
            digest = ""
            for inner, text in _length_delimited(value):
                if inner == 1:
                    digest = text.decode("utf-8")
            inputs.append(digest)
        elif number in _OP_KINDS:
            kind = _OP_KINDS[number]
    return inputs, kind


def _oneof(msg: betterproto.Message, group: str) -> tuple[str, Any]:
    """(selected member name or "", its value) of a oneof group."""
    return cast(tuple[str, Any], betterproto.which_one_of(msg, group))


def load_definition(data: bytes, source: str) -> pb.Definition:
    """Decode a serialized ``pb.Definition`` strictly.

    ``source`` names the input in error messages (a path or ``<stdin>``). Raises
    :class:`DefinitionError` (one line) for truncated or corrupt bytes, a definition without
    ops, an input digest that names no op of the definition, or a last op that is not a
    terminal op (no op body, at least one input), which is what truncation leaves behind.
    Ops are checked against the ``pb.Op`` schema but returned as bytes (``defn.def_``).
    """
    data = bytes(data)
    try:
        _check(data, pb.Definition, "")
        try:
            defn = pb.Definition().parse(data)
        except Exception as exc:  # betterproto raises assorted types on bad input
            raise _WireError(f"Definition: {type(exc).__name__}: {exc}") from exc
        for i, raw in enumerate(defn.def_):
            _check(raw, pb.Op, f"op {i}: ")
    except _WireError as exc:
        raise DefinitionError(f"{source}: truncated or corrupt LLB definition: {exc}") from None
    if not defn.def_:
        raise DefinitionError(f"{source}: invalid LLB definition: it contains no ops")
    digests = [op_digest(raw) for raw in defn.def_]
    known = set(digests)
    edges = [_op_edges(raw) for raw in defn.def_]
    for i, (inputs, _) in enumerate(edges):
        for j, digest in enumerate(inputs):
            if digest not in known:
                raise DefinitionError(
                    f"{source}: invalid LLB definition: op {i} input {j} refers to "
                    f"missing op {digest or '(empty digest)'}",
                    digests[i],
                )
    inputs, kind = edges[-1]
    if kind or not inputs:
        body = f"has a {kind} body" if kind else "has no inputs"
        raise DefinitionError(
            f"{source}: invalid LLB definition: the last op {body}, so it is not a terminal "
            "op (truncated definition?)",
            digests[-1],
        )
    return defn


# ---------------------------------------------------------------------------------------------
# dump-llb JSON


def dump_ops(defn: pb.Definition) -> list[dict[str, JSONValue]]:
    """Per op of ``defn.def``, the object ``buildctl debug dump-llb`` prints for it."""
    result = []
    for raw in defn.def_:
        dgst = op_digest(raw)
        op = pb.Op().parse(raw)
        metadata = defn.metadata.get(dgst) or pb.OpMetadata()
        result.append(
            {"Op": _message_json(op), "Digest": dgst, "OpMetadata": _message_json(metadata)}
        )
    return result


# ---------------------------------------------------------------------------------------------
# dump-llb --dot

_GO_SHORT_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote`` (the ``%q`` verb) for a valid UTF-8 string."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _file_action_label(action: pb.FileAction) -> str:
    kind, body = _oneof(action, "action")
    if kind == "copy":
        return f"copy{{src={body.src}, dest={body.dest}}}"
    if kind in ("mkfile", "mkdir", "rm"):
        return f"{kind}{{path={body.path}}}"
    return ""


def _node(dgst: str, op: pb.Op) -> tuple[str, str]:
    """(label, shape) of one op: the shape shows the kind, as in buildctl."""
    kind, body = _oneof(op, "op")
    if kind == "source":
        return body.identifier, "ellipse"
    if kind == "exec":
        return " ".join(body.meta.args), "box"
    if kind == "file":
        return ",".join(_file_action_label(a) for a in body.actions), "note"
    if kind == "build":
        return "build", "box3d"
    if kind == "merge":
        return "merge", "invtriangle"
    if kind == "diff":
        return "diff", "doublecircle"
    return dgst, "plaintext"


def dump_dot(defn: pb.Definition) -> str:
    """Graphviz digraph of ``defn``, laid out like ``buildctl debug dump-llb --dot``.

    Nodes are ops (label: source identifier, exec argv, file actions, ``merge``/``diff``/
    ``build``, or the digest of the terminal op; shape: the op kind). Edges go from each input
    to the op; exec edges are labelled with the mount destination of that input.
    """
    ops = [(op_digest(raw), pb.Op().parse(raw)) for raw in defn.def_]
    lines = ["digraph {"]
    for dgst, op in ops:
        label, shape = _node(dgst, op)
        lines.append(f"  {go_quote(dgst)} [label={go_quote(label)} shape={go_quote(shape)}];")
    for dgst, op in ops:
        kind, body = _oneof(op, "op")
        for i, inp in enumerate(op.inputs):
            label = ""
            if kind == "exec":
                for mount in body.mounts:
                    if mount.input == i and mount.dest != "/":
                        label = mount.dest
            lines.append(f"  {go_quote(inp.digest)} -> {go_quote(dgst)} [label={go_quote(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
