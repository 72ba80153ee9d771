"""Client side of a build through a daemon: the Status stream turned back into the progress
events the renderers draw (inverse of the daemon's ``event_to_status``), the direct-form
Control.Solve made from build options, and the attachables of the client session."""

from __future__ import annotations

from typing import Any

import pytest

from bkcore import llb
from bkcore.api import buildclient
from bkcore.api.codec import GoCodec
from bkcore.api.pb import control as cpb
from bkcore.api.server import event_to_status
from bkcore.controller import BuildOptions, OutputSpec
from bkcore.errors import ExportError
from bkcore.llb import pb
from bkcore.pluginmanager import get_plugin_manager
from bkcore.progress import LogEvent, StatusEvent, VertexEvent, WarningEvent


def test_status_round_trip_gives_back_the_events() -> None:
    events: list[Any] = [
        VertexEvent("sha256:a", "step", ("sha256:b",), started=10.5, completed=None),
        VertexEvent("sha256:a", "step", ("sha256:b",), 10.5, 12.25, cached=True, error="boom"),
        StatusEvent("extract", "sha256:a", "extracting", 3, 9, 11.0, started=10.75),
        LogEvent("sha256:a", 2, b"hello\n", 11.5),
        WarningEvent("sha256:a", 1, "careful", ("more",), "https://x"),
    ]
    wire = GoCodec().encode(event_to_status(events), cpb.StatusResponse)
    back = list(buildclient.status_to_events(GoCodec().decode(wire, cpb.StatusResponse)))
    assert back == events


def test_build_ids_look_like_buildctls() -> None:
    ids = {buildclient.build_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 25 and i.isalnum() and i == i.lower() for i in ids)


def test_solve_request_for_llb_and_for_a_frontend() -> None:
    data = llb.scratch().file(llb.mkfile("/f", 0o644, b"x")).marshal().to_bytes()
    raw = buildclient.solve_request(
        BuildOptions(
            definition=data,
            outputs=(OutputSpec("local", {"dest": "/tmp/x"}),),
            no_cache=True,
            entitlements=frozenset({"network.host"}),
        ),
        "ref1",
        "sess1",
    )
    assert raw.ref == "ref1" and raw.session == "sess1"
    assert raw.definition.def_ == pb.Definition().parse(data).def_
    assert raw.exporter == "local" and raw.exporter_attrs == {"dest": "/tmp/x"}
    assert raw.frontend == "" and raw.frontend_attrs == {"no-cache": ""}
    assert raw.entitlements == ["network.host"]
    # Cache is written like Go's non-nullable field (field 8, empty)
    assert b"\x42\x00J\x0cnetwork.host" in GoCodec().encode(raw, cpb.SolveRequest)
    df = buildclient.solve_request(
        BuildOptions(frontend="dockerfile.v0", frontend_opts={"target": "t"}), "r", "s"
    )
    assert df.frontend == "dockerfile.v0" and df.frontend_attrs == {"target": "t"}
    assert not df.definition.def_ and df.exporter == ""


def test_one_output_per_remote_build() -> None:
    with pytest.raises(ExportError, match="one --output"):
        buildclient.solve_request(
            BuildOptions(outputs=(OutputSpec("local", {"dest": "a"}), OutputSpec("image"))),
            "r",
            "s",
        )


def test_client_session_serves_locals_and_outputs(tmp_path: Any) -> None:
    session = buildclient.client_session(
        BuildOptions(
            locals={"src": str(tmp_path)},
            outputs=(OutputSpec("local", {"dest": str(tmp_path / "o")}),),
        ),
        get_plugin_manager(),
    )
    served = set(session.methods())
    assert "/moby.filesync.v1.FileSync/DiffCopy" in served
    assert "/moby.filesync.v1.FileSend/DiffCopy" in served
    assert session.headers()[0] == ("x-docker-expose-session-uuid", session.id)
