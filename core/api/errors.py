"""bkcore errors <-> gRPC statuses, as BuildKit puts them on the wire (control.md §6).

Server side: :func:`to_status` turns an exception into ``(status, message, details_bin)``,
where ``details_bin`` is the serialized ``google.rpc.Status`` that goes (base64 without
padding) into the ``grpc-status-details-bin`` trailer; :func:`to_grpc_error` gives the same as
a ``grpclib.GRPCError`` to raise from a servicer, and :class:`StatusDetailsCodec` is the
grpclib codec that writes and reads that trailer (grpclib's own needs googleapis-common-protos,
which bkcore does not install). Pass ``status_details_codec=StatusDetailsCodec()`` to
``grpclib.server.Server`` and ``grpclib.client.Channel``.

Detail values are JSON, typed ``github.com/moby/buildkit/<name>+json`` like BuildKit's, in
BuildKit's order (outermost error first): ``errdefs.Source`` (Dockerfile name, optional data,
line range) for a :class:`~bkcore.errors.FrontendError` with a line,
``errdefs.Vertex`` (``{"digest"}``) for the failing op, ``gatewayapi.ExitMessage``
(``{"Code"}``) for an :class:`~bkcore.errors.ExecError`. A Go client (buildctl) reads those.
One more detail, ``bkcore/errors.Error+json``, carries what only a bkcore client needs to
rebuild the same exception (class, description, argv, output tail, Dockerfile snippet lines);
Go's FromGRPC skips detail types it does not know.

Client side: :func:`from_status` (or :func:`from_grpc_error`) rebuilds a
:class:`~bkcore.errors.BkError` of the same class with the same ``str()``, vertex digest, exit
code and Dockerfile line; from a Go buildkitd (no bkcore detail) the class is inferred from the
BuildKit details: ``ExitMessage`` -> ExecError, ``Vertex`` -> SolveError, ``Source`` ->
FrontendError wrapping those, INVALID_ARGUMENT -> DefinitionError. Every rebuilt error carries
``grpc_status`` (a ``grpclib.const.Status``) and ``grpc_message``.

Status codes: a ``GRPCError`` keeps its own, CANCELLED for ``asyncio.CancelledError``,
INVALID_ARGUMENT for DefinitionError, DEADLINE_EXCEEDED for TimeoutError, a session
``CallError`` keeps its code, and any exception with a ``grpc_status`` attribute uses it;
everything else is UNKNOWN, as in BuildKit (an unknown frontend is ``invalid frontend: X``
with Unknown there too, so PluginError stays UNKNOWN; BuildKit only uses Unimplemented for
missing frontend caps and subrequests). BuildKit itself answers a bad Definition with Unknown;
bkcore says INVALID_ARGUMENT, so a Go client prints ``InvalidArgument: <message>``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from grpclib.const import Status
from grpclib.encoding.base import StatusDetailsCodecBase
from grpclib.exceptions import GRPCError

from bkcore.errors import (
    BkError,
    CacheError,
    DefinitionError,
    ExecError,
    ExportError,
    FrontendError,
    PluginError,
    SessionError,
    SolveError,
    SourceError,
)

if TYPE_CHECKING:
    from betterproto.lib.google.protobuf import Any as AnyMessage

__all__ = [
    "BKCORE_ERROR",
    "EXIT_MESSAGE",
    "SOURCE",
    "VERTEX",
    "StatusDetailsCodec",
    "as_status",
    "decode_details",
    "details_of",
    "encode_details",
    "from_grpc_error",
    "from_status",
    "go_code_name",
    "strip_go_code",
    "to_grpc_error",
    "to_status",
]

TYPE_PREFIX = "github.com/moby/buildkit/"
SOURCE = TYPE_PREFIX + "errdefs.Source+json"
VERTEX = TYPE_PREFIX + "errdefs.Vertex+json"
EXIT_MESSAGE = TYPE_PREFIX + "gatewayapi.ExitMessage+json"
STACK = TYPE_PREFIX + "stack.Stack+json"
BKCORE_ERROR = "bkcore/errors.Error+json"

# Classes a client can rebuild, by name (most specific first is not needed: the server sends
# the exception's MRO names and the first one known here wins).
_CLASSES: dict[str, type[BkError]] = {
    cls.__name__: cls
    for cls in (
        BkError,
        DefinitionError,
        SolveError,
        ExecError,
        SourceError,
        FrontendError,
        ExportError,
        SessionError,
        PluginError,
        CacheError,
    )
}
# Attributes copied across the wire when the exception has them, with their JSON types.
_ATTR_TYPES: dict[str, type] = {
    "digest": str,
    "description": str,
    "message": str,
    "argv": list,
    "exit_code": int,
    "output_tail": list,
    "filename": str,
    "line": int,
    "end_line": int,
    "detail_lines": list,
}
_ATTRS = tuple(_ATTR_TYPES)
_MAX_CHAIN = 32


# -- server side -----------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its explicit causes, outermost first (Go's Unwrap chain)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__


def as_status(value: object) -> Status:
    """A grpclib Status from a grpclib Status, bkcore.session.transport.Status or int."""
    if isinstance(value, Status):
        return value
    number = getattr(value, "value", value)
    if not isinstance(number, int):
        raise TypeError(f"not a gRPC status code: {value!r}")
    return Status(number)


def _code_of(exc: BaseException) -> Status:
    if isinstance(exc, GRPCError):
        return exc.status
    for err in _chain(exc):
        explicit = getattr(err, "grpc_status", None)
        if explicit is not None:
            return as_status(explicit)
    from bkcore.session.transport import CallError

    if isinstance(exc, CallError):
        return as_status(exc.code)
    if isinstance(exc, asyncio.CancelledError):
        return Status.CANCELLED
    if isinstance(exc, DefinitionError):
        return Status.INVALID_ARGUMENT
    if isinstance(exc, TimeoutError):
        return Status.DEADLINE_EXCEEDED
    return Status.UNKNOWN


def _message_of(exc: BaseException) -> str:
    from bkcore.session.transport import CallError

    if isinstance(exc, CallError):
        return exc.message
    if isinstance(exc, GRPCError):
        return exc.message or ""
    if isinstance(exc, asyncio.CancelledError):
        return "context canceled"
    text = _buildkit_text(exc)
    if not text:
        text = type(exc).__name__
    # one line, as every bkcore error
    return " ".join(text.splitlines()) if "\n" in text else text


def _buildkit_text(exc: BaseException, depth: int = 0) -> str:
    """The error's text as BuildKit words it on the wire: where it happened travels in the
    details (vertex digest, Dockerfile line), not in the message. A Go client (buildctl)
    prints ``failed to solve: <message>`` after its own progress has named the failed step
    and after the Dockerfile snippet of the Source detail, so bkcore's ``Dockerfile:LINE:``
    and ``[step]`` prefixes would say it twice. A bkcore client rebuilds the full ``str()``
    from the bkcore detail."""
    cause = exc.__cause__
    if isinstance(exc, FrontendError) and exc.filename and exc.line:
        if isinstance(cause, BkError) and depth < _MAX_CHAIN:
            return _buildkit_text(cause, depth + 1)
        text = str(exc)
        prefix = f"{exc.filename}:{exc.line}: "
        return text[len(prefix) :] if text.startswith(prefix) else text
    if isinstance(exc, SolveError) and isinstance(exc.message, str) and exc.message:
        return exc.message
    return str(exc)


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _source_detail(err: FrontendError) -> dict[str, Any]:
    info: dict[str, Any] = {"filename": err.filename}
    data = getattr(err, "source_data", None)
    if isinstance(data, bytes | str) and data:
        raw = data.encode() if isinstance(data, str) else data
        info["data"] = base64.b64encode(raw).decode("ascii")
    end = getattr(err, "end_line", None) or err.line
    return {
        "info": info,
        "ranges": [{"start": {"line": err.line}, "end": {"line": int(end)}}],
    }


def _bkcore_detail(exc: BaseException, depth: int = 0) -> dict[str, Any]:
    classes = [c.__name__ for c in type(exc).__mro__ if c.__name__ in _CLASSES]
    out: dict[str, Any] = {"classes": classes, "text": str(exc)}
    attrs: dict[str, Any] = {}
    for name in _ATTRS:
        value = getattr(exc, name, None)
        if value is None:
            continue
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, str | int | bool) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            attrs[name] = value
    if attrs:
        out["attrs"] = attrs
    cause = exc.__cause__
    if isinstance(cause, BkError) and cause is not exc and depth < _MAX_CHAIN:
        out["cause"] = _bkcore_detail(cause, depth + 1)
    return out


def details_of(exc: BaseException) -> list[tuple[str, bytes]]:
    """The ``(type_url, JSON value)`` details of ``exc``, in BuildKit's order."""
    out: list[tuple[str, bytes]] = []
    vertex_done = False
    exit_done = False
    for err in _chain(exc):
        if isinstance(err, FrontendError) and err.filename and err.line:
            out.append((SOURCE, _json(_source_detail(err))))
        digest = getattr(err, "digest", None)
        if not vertex_done and isinstance(digest, str) and digest:
            if isinstance(err, SolveError | FrontendError):
                out.append((VERTEX, _json({"digest": digest})))
                vertex_done = True
        if not exit_done and isinstance(err, ExecError):
            out.append((EXIT_MESSAGE, _json({"Code": err.exit_code})))
            exit_done = True
    if isinstance(exc, BkError):
        out.append((BKCORE_ERROR, _json(_bkcore_detail(exc))))
    return out


def encode_details(status: Status, message: str, details: Sequence[tuple[str, bytes]]) -> bytes:
    """Serialized ``google.rpc.Status`` (the decoded form of ``grpc-status-details-bin``)."""
    from betterproto.lib.google.protobuf import Any as AnyMessage

    from bkcore.api.pb import status as rpc
    from bkcore.llb.digest import marshal

    msg = rpc.Status(
        code=int(status.value),
        message=message,
        details=[AnyMessage(type_url=url, value=value) for url, value in details],
    )
    return marshal(msg)


def to_status(exc: BaseException) -> tuple[Status, str, bytes]:
    """``(grpc status, grpc-message, details_bin)`` for ``exc``.

    ``details_bin`` is the serialized ``google.rpc.Status`` (code, message, details); the
    trailer carries it base64-encoded without padding (grpclib does that encoding).
    """
    status = _code_of(exc)
    message = _message_of(exc)
    return status, message, encode_details(status, message, details_of(exc))


def to_grpc_error(exc: BaseException) -> GRPCError:
    """A GRPCError for ``exc``; ``details`` are ``google.protobuf.Any`` messages. A GRPCError
    (for example the codec's MalformedMessageError) is returned as it is."""
    from betterproto.lib.google.protobuf import Any as AnyMessage

    if isinstance(exc, GRPCError):
        return exc

    status = _code_of(exc)
    details = [AnyMessage(type_url=url, value=value) for url, value in details_of(exc)]
    return GRPCError(status, _message_of(exc), details or None)


class StatusDetailsCodec(StatusDetailsCodecBase):
    """grpclib codec of ``grpc-status-details-bin``: a ``google.rpc.Status`` whose details are
    ``google.protobuf.Any`` (betterproto) messages; decoding yields the list of ``Any``."""

    def encode(self, status: Status, message: str | None, details: Any) -> bytes:
        pairs = [(d.type_url, bytes(d.value)) for d in (details or ())]
        return encode_details(status, message or "", pairs)

    def decode(self, status: Status, message: str | None, data: bytes) -> Any:
        return decode_details(data)


def decode_details(data: bytes) -> list[AnyMessage]:
    """The ``Any`` details of a serialized ``google.rpc.Status``; [] if it does not parse."""
    from bkcore.api.pb import status as rpc

    try:
        msg = rpc.Status().parse(data)
        return [d for d in msg.details if isinstance(d.type_url, str)]
    except Exception:  # a garbled trailer loses its details, not the error
        return []


def go_code_name(status: Status) -> str:
    """The name grpc-go gives a status code (``codes.Code.String()``): ``InvalidArgument``,
    ``Canceled``, ..."""
    if status == Status.CANCELLED:
        return "Canceled"
    return "".join(word.capitalize() for word in status.name.split("_"))


def strip_go_code(status: Status | int, message: str) -> str:
    """``message`` without the ``<Code>: `` prefix a Go client puts in front of a status it
    received (BuildKit's ``grpcStatusError.Error()``, for codes other than Unknown) when it
    sends that error back (buildctl's LLBBridge Return): the status already says the code,
    and buildctl would print it twice."""
    status = as_status(status)
    if status in (Status.OK, Status.UNKNOWN):
        return message
    return message.removeprefix(go_code_name(status) + ": ")


# -- client side -----------------------------------------------------------------------------


def _loads(value: bytes) -> Any:
    try:
        return json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None


def _rebuild(detail: dict[str, Any], message: str, depth: int = 0) -> BkError | None:
    classes = detail.get("classes")
    if not isinstance(classes, list):
        return None
    cls = next((_CLASSES[c] for c in classes if isinstance(c, str) and c in _CLASSES), None)
    if cls is None:
        return None
    text = detail.get("text")
    exc = cls.__new__(cls)
    Exception.__init__(exc, text if isinstance(text, str) else message)
    attrs = detail.get("attrs")
    if isinstance(attrs, dict):
        for name, kind in _ATTR_TYPES.items():
            value = attrs.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                continue
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                continue
            setattr(exc, name, value)
    # attributes every instance of the class has, even when the server's was unset
    defaults: dict[str, Any] = {}
    if isinstance(exc, SolveError):
        defaults.update(digest=None, description="", message=str(exc))
    if isinstance(exc, ExecError):
        defaults.update(argv=[], exit_code=0, output_tail=[])
    if isinstance(exc, FrontendError):
        defaults.update(filename="", line=0)
    if isinstance(exc, DefinitionError):
        defaults.update(digest=None)
    for name, default in defaults.items():
        if not hasattr(exc, name):
            setattr(exc, name, default)
    cause = detail.get("cause")
    if isinstance(cause, dict) and depth < _MAX_CHAIN:
        inner = _rebuild(cause, message, depth + 1)
        if inner is not None:
            exc.__cause__ = inner
    return exc


def _infer(status: Status, message: str, found: dict[str, Any]) -> BkError:
    """Rebuild from BuildKit's own details (a Go daemon)."""
    digest = None
    vertex = found.get(VERTEX)
    if isinstance(vertex, dict) and isinstance(vertex.get("digest"), str):
        digest = vertex["digest"]
    inner: BkError
    exit_msg = found.get(EXIT_MESSAGE)
    if isinstance(exit_msg, dict) and isinstance(exit_msg.get("Code", 0), int):
        code = int(exit_msg.get("Code", 0))
        execerr = ExecError([], code, digest=digest)
        Exception.__init__(execerr, message)
        execerr.message = message
        prefix, quote = 'process "', '" did not complete successfully'
        if message.startswith(prefix) and quote in message:
            execerr.argv = [message[len(prefix) : message.index(quote)]]
        inner = execerr
    elif digest is not None:
        inner = SolveError(message, digest)
        Exception.__init__(inner, message)
    elif status == Status.INVALID_ARGUMENT:
        inner = DefinitionError(message)
    else:
        inner = BkError(message)
    source = found.get(SOURCE)
    if isinstance(source, dict):
        filename, line, end, data = _source_fields(source)
        if line:
            located = FrontendError(message, filename, line)
            Exception.__init__(located, message)
            located.digest = digest  # type: ignore[attr-defined]
            if end and end != line:
                located.end_line = end  # type: ignore[attr-defined]
            if data is not None:
                located.source_data = data  # type: ignore[attr-defined]
                located.detail_lines = _snippet(data, filename, line, end)  # type: ignore[attr-defined]
            located.__cause__ = inner
            return located
    return inner


def _snippet(data: bytes, filename: str, line: int, end: int) -> list[str]:
    """The Dockerfile lines around the error, in the layout the embedded build prints
    (BuildKit's): ``NAME:LINE``, a rule, two lines of context either side marked ``>>>``."""
    lines = data.decode("utf-8", "replace").splitlines()
    if not 1 <= line <= len(lines):
        return []
    last = max(line, min(end or line, len(lines)))
    first_shown, last_shown = max(1, line - 2), min(len(lines), last + 2)
    width = len(str(last_shown))
    name = filename or "Dockerfile"
    out = [f"{name}:{line}" if last == line else f"{name}:{line}-{last}", "-" * 20]
    for n in range(first_shown, last_shown + 1):
        mark = ">>>" if line <= n <= last else "   "
        out.append(f" {n:>{width}} | {mark} {lines[n - 1]}".rstrip())
    out.append("-" * 20)
    return out


def _source_fields(source: dict[str, Any]) -> tuple[str, int, int, bytes | None]:
    info = source.get("info") if isinstance(source.get("info"), dict) else {}
    assert isinstance(info, dict)
    filename = info.get("filename") if isinstance(info.get("filename"), str) else ""
    data: bytes | None = None
    if isinstance(info.get("data"), str):
        try:
            data = base64.b64decode(info["data"], validate=True)
        except (binascii.Error, ValueError):
            data = None
    line = end = 0
    ranges = source.get("ranges")
    if isinstance(ranges, list) and ranges and isinstance(ranges[0], dict):
        start = ranges[0].get("start")
        stop = ranges[0].get("end")
        if isinstance(start, dict) and isinstance(start.get("line"), int):
            line = start["line"]
        if isinstance(stop, dict) and isinstance(stop.get("line"), int):
            end = stop["line"]
    return str(filename), int(line), int(end), data


def from_status(status: Status | int, message: str, details_bin: bytes | None) -> BkError:
    """Rebuild the server's error from a status, its message and ``details_bin`` (the raw
    ``google.rpc.Status`` bytes, or the base64 trailer value with or without padding)."""
    status = as_status(status)
    details: list[AnyMessage] = []
    if details_bin:
        parsed = _parse_status(details_bin)
        if parsed is None or parsed.code != int(status.value):
            try:
                raw = base64.b64decode(details_bin + b"=" * (-len(details_bin) % 4), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            decoded = _parse_status(raw) if raw else None
            if decoded is not None and decoded.code == int(status.value):
                parsed = decoded
        if parsed is not None:
            details = list(parsed.details)
    return from_details(status, message, details)


def _parse_status(data: bytes) -> Any:
    from bkcore.api.pb import status as rpc

    try:
        return rpc.Status().parse(data)
    except Exception:  # not a google.rpc.Status
        return None


def from_details(status: Status | int, message: str, details: Sequence[Any]) -> BkError:
    """As :func:`from_status` with already-decoded ``Any`` details (grpclib's GRPCError)."""
    status = as_status(status)
    found: dict[str, Any] = {}
    for d in details:
        url = getattr(d, "type_url", None)
        value = getattr(d, "value", None)
        if isinstance(url, str) and isinstance(value, bytes) and url not in found:
            found[url] = _loads(value)
    exc: BkError | None = None
    detail = found.get(BKCORE_ERROR)
    if isinstance(detail, dict):
        exc = _rebuild(detail, message)
    if exc is None:
        exc = _infer(status, message, found)
    exc.grpc_status = status  # type: ignore[attr-defined]
    exc.grpc_message = message  # type: ignore[attr-defined]
    return exc


def from_grpc_error(err: GRPCError) -> BkError:
    """Rebuild the server's error from a grpclib GRPCError (decoded with
    :class:`StatusDetailsCodec`, so ``err.details`` is a list of ``Any``)."""
    details = err.details if isinstance(err.details, list) else []
    return from_details(err.status, err.message or "", details)
