"""``--progress rawjson``: one JSON object per progress event, one per line.

Each object has the shape of BuildKit's ``SolveStatus`` (as ``buildctl --progress rawjson``
prints it) holding exactly one item, so existing tooling reads it::

    {"vertexes":[{"digest":"sha256:...","name":"...","started":"2023-...Z"}]}
    {"logs":[{"vertex":"sha256:...","stream":1,"data":"aGkK","timestamp":"..."}]}

Go's encoding rules apply: ``omitempty`` fields are left out when empty, times are RFC 3339
with nanoseconds (trailing zeros trimmed), byte fields are base64.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from bkcore.plugins.progress.common import BaseRenderer, Clock
from bkcore.progress import LogEvent, StatusEvent, VertexEvent, WarningEvent

if TYPE_CHECKING:
    from bkcore.progress import Event

__all__ = ["RawJsonRenderer", "encode_line", "event_json", "go_time"]


def go_time(ts: float) -> str:
    """``ts`` (seconds since the epoch) as Go's ``time.RFC3339Nano`` in UTC."""
    whole = int(ts // 1)
    nanos = round((ts - whole) * 1_000_000) * 1000  # float seconds carry microseconds
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    stamp = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return f"{stamp}.{frac}Z" if frac else f"{stamp}Z"


_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def encode_line(obj: dict[str, Any]) -> str:
    """Compact JSON escaped like Go's ``encoding/json`` (HTML characters as ``\\u00XX``)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).translate(_GO_ESCAPES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def event_json(event: Event) -> dict[str, Any]:
    """The ``SolveStatus`` object carrying ``event`` alone."""
    if type(event) is VertexEvent:
        v: dict[str, Any] = {"digest": event.digest}
        if event.inputs:
            v["inputs"] = list(event.inputs)
        if event.name:
            v["name"] = event.name
        if event.started is not None:
            v["started"] = go_time(event.started)
        if event.completed is not None:
            v["completed"] = go_time(event.completed)
        if event.cached:
            v["cached"] = True
        if event.error:
            v["error"] = event.error
        return {"vertexes": [v]}
    if type(event) is StatusEvent:
        s: dict[str, Any] = {"id": event.id}
        if event.vertex:
            s["vertex"] = event.vertex
        if event.name:
            s["name"] = event.name
        if event.total:
            s["total"] = event.total
        s["current"] = event.current
        s["timestamp"] = go_time(event.timestamp)
        if event.started is not None:
            s["started"] = go_time(event.started)
        if event.completed is not None:
            s["completed"] = go_time(event.completed)
        return {"statuses": [s]}
    if type(event) is LogEvent:
        log: dict[str, Any] = {}
        if event.vertex:
            log["vertex"] = event.vertex
        if event.stream:
            log["stream"] = event.stream
        log["data"] = _b64(event.data)
        log["timestamp"] = go_time(event.timestamp)
        return {"logs": [log]}
    if type(event) is WarningEvent:
        w: dict[str, Any] = {}
        if event.vertex:
            w["vertex"] = event.vertex
        if event.level:
            w["level"] = event.level
        if event.short:
            w["short"] = _b64(event.short.encode())
        if event.detail:
            w["detail"] = [_b64(d.encode()) for d in event.detail]
        if event.url:
            w["url"] = event.url
        return {"warnings": [w]}
    raise TypeError(f"not a progress event: {event!r}")


class RawJsonRenderer(BaseRenderer):
    """Writes every event as one compact JSON line."""

    def __init__(self, out: TextIO, *, clock: Clock = time.time) -> None:
        super().__init__(out, clock=clock)

    def feed(self, events: Sequence[Event]) -> None:
        write = self.out.write
        for event in events:
            write(encode_line(event_json(event)) + "\n")
        self.out.flush()
