"""The rawjson renderer: one BuildKit ``SolveStatus``-shaped JSON object per event."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

from bkcore.plugins.progress.rawjson import RawJsonRenderer, go_time
from bkcore.progress import LogEvent, StatusEvent, VertexEvent, WarningEvent

T = datetime(2023, 5, 1, 12, 0, 0, 250000, tzinfo=UTC).timestamp()


def lines_of(events: list) -> list[dict]:  # type: ignore[type-arg]
    out = io.StringIO()
    r = RawJsonRenderer(out)
    r.feed(events)
    r.close()
    text = out.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_go_time_format() -> None:
    assert go_time(T) == "2023-05-01T12:00:00.25Z"
    assert go_time(T - 0.25) == "2023-05-01T12:00:00Z"
    assert go_time(T - 0.25 + 0.000001) == "2023-05-01T12:00:00.000001Z"
    assert go_time(T - 0.25 + 0.9999999) == "2023-05-01T12:00:01Z"


def test_vertex_omits_empty_fields_like_go() -> None:
    announced, done = lines_of(
        [
            VertexEvent("sha256:b", "RUN x", inputs=("sha256:a",)),
            VertexEvent("sha256:b", "RUN x", ("sha256:a",), T, T + 1, True, "bad"),
        ]
    )
    assert announced == {
        "vertexes": [{"digest": "sha256:b", "inputs": ["sha256:a"], "name": "RUN x"}]
    }
    assert done == {
        "vertexes": [
            {
                "digest": "sha256:b",
                "inputs": ["sha256:a"],
                "name": "RUN x",
                "started": "2023-05-01T12:00:00.25Z",
                "completed": "2023-05-01T12:00:01.25Z",
                "cached": True,
                "error": "bad",
            }
        ]
    }


def test_status_log_and_warning_objects() -> None:
    status, log, warning = lines_of(
        [
            StatusEvent("transferring", "sha256:a", name="transferring", current=0, timestamp=T),
            LogEvent("sha256:a", 2, b"\xff<hi>\n", T),
            WarningEvent("sha256:a", 1, "short", ("d1",), "https://x", T),
        ]
    )
    # current is always written (no omitempty); total is omitted when 0.
    assert status == {
        "statuses": [
            {
                "id": "transferring",
                "vertex": "sha256:a",
                "name": "transferring",
                "current": 0,
                "timestamp": "2023-05-01T12:00:00.25Z",
            }
        ]
    }
    entry = log["logs"][0]
    assert base64.b64decode(entry["data"]) == b"\xff<hi>\n"
    assert entry["stream"] == 2 and entry["vertex"] == "sha256:a"
    w = warning["warnings"][0]
    assert base64.b64decode(w["short"]) == b"short"
    assert [base64.b64decode(d) for d in w["detail"]] == [b"d1"]
    assert w["url"] == "https://x" and w["level"] == 1


def test_html_characters_are_escaped_like_go() -> None:
    out = io.StringIO()
    RawJsonRenderer(out).feed([VertexEvent("sha256:a", "RUN a && b <c>")])
    assert "\\u0026\\u0026 b \\u003cc\\u003e" in out.getvalue()
    assert json.loads(out.getvalue())["vertexes"][0]["name"] == "RUN a && b <c>"
