"""Golden tests of bkcore.api.pb against captures of real buildctl <-> buildkitd v0.11.6 traffic.

Every captured message decodes with our classes without leaving unknown fields (so every field
number and wire type is in our .proto files) and re-encodes byte for byte, with betterproto's
``bytes()`` and with the Go-compatible codec; method paths and metadata keys match the captures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import betterproto
import pytest

from bkcore.api import methods
from bkcore.api.codec import GoCodec
from bkcore.api.pb import control, filesync, fsutil, gateway, health, secrets, sshforward, worker

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
CONTROL = json.loads((VECTORS / "control_capture.json").read_text())
SESSION = json.loads((VECTORS / "session_capture.json").read_text())

C = methods.CONTROL
B = methods.LLBBRIDGE
CONTROL_CLASSES: dict[tuple[str, str], type[betterproto.Message]] = {
    (f"/{C}/ListWorkers", "client->daemon"): control.ListWorkersRequest,
    (f"/{C}/ListWorkers", "daemon->client"): control.ListWorkersResponse,
    (f"/{C}/Status", "client->daemon"): control.StatusRequest,
    (f"/{C}/Status", "daemon->client"): control.StatusResponse,
    (f"/{C}/Solve", "client->daemon"): control.SolveRequest,
    (f"/{C}/DiskUsage", "client->daemon"): control.DiskUsageRequest,
    (f"/{C}/Prune", "client->daemon"): control.PruneRequest,
    (f"/{C}/Info", "client->daemon"): control.InfoRequest,
    (f"/{C}/Info", "daemon->client"): control.InfoResponse,
    (f"/{B}/Ping", "client->daemon"): gateway.PingRequest,
    (f"/{B}/Solve", "client->daemon"): gateway.SolveRequest,
    (f"/{B}/Return", "daemon->client"): gateway.ReturnResponse,
}
# inner (session) calls: c2s = daemon -> CLI, s2c = CLI -> daemon
SESSION_CLASSES: dict[tuple[str, str], type[betterproto.Message]] = {
    (methods.FILESYNC_DIFFCOPY, "c2s"): fsutil.Packet,
    (methods.FILESYNC_DIFFCOPY, "s2c"): fsutil.Packet,
    # declared with BytesMessage; a directory export carries Packets (session.md §5.4)
    (methods.FILESEND_DIFFCOPY, "c2s"): fsutil.Packet,
    (methods.FILESEND_DIFFCOPY, "s2c"): fsutil.Packet,
    (methods.SECRETS_GET_SECRET, "c2s"): secrets.GetSecretRequest,
    (methods.SECRETS_GET_SECRET, "s2c"): secrets.GetSecretResponse,
    (methods.SSH_CHECK_AGENT, "c2s"): sshforward.CheckAgentRequest,
    (methods.SSH_CHECK_AGENT, "s2c"): sshforward.CheckAgentResponse,
}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_decoded(fields: list[Any]) -> bytes:
    """Bytes of a capture's ``decoded`` listing ([number, int | str | {"msg": [...]}] pairs)."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, bool) or not isinstance(value, int | str | dict):
            raise TypeError(value)
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
            continue
        body = encode_decoded(value["msg"]) if isinstance(value, dict) else value.encode()
        out += _varint(number << 3 | 2) + _varint(len(body)) + body
    return bytes(out)


def unknown_fields(msg: betterproto.Message, where: str = "") -> list[str]:
    """Paths of sub-messages that kept unknown fields after parsing."""
    found = [where or type(msg).__name__] if msg._unknown_fields else []
    meta = cast(Any, msg)._betterproto
    for name in meta.sorted_field_names:
        value = getattr(msg, name)
        items: list[Any] = []
        if isinstance(value, betterproto.Message):
            items = [value]
        elif isinstance(value, list):
            items = [v for v in value if isinstance(v, betterproto.Message)]
        elif isinstance(value, dict):
            items = [v for v in value.values() if isinstance(v, betterproto.Message)]
        for item in items:
            found += unknown_fields(item, f"{where or type(msg).__name__}.{name}")
    return found


def roundtrip(cls: type[betterproto.Message], raw: bytes, plain: bool = True) -> Any:
    """Decode ``raw``; the Go-compatible codec must write it back byte for byte, and so must
    betterproto's ``bytes()`` unless ``plain`` is False (a case it gets wrong)."""
    msg = cls().parse(raw)
    assert unknown_fields(msg) == []
    assert (bytes(msg) == raw) is plain
    # decoded again, so that encoding one does not change the other's state
    assert GoCodec().encode(cls().parse(raw), cls) == raw
    return msg


def control_samples() -> list[Any]:
    return [
        pytest.param(s, id=f"{i}-{s['path'].rsplit('/', 1)[1]}-{s['direction']}")
        for i, s in enumerate(CONTROL["samples"])
    ]


@pytest.mark.parametrize("sample", control_samples())
def test_control_capture_roundtrips(sample: dict[str, Any]) -> None:
    raw = bytes.fromhex(sample["hex"])
    assert len(raw) == sample["len"]
    assert encode_decoded(sample["decoded"]) == raw  # the listing is the message
    cls = CONTROL_CLASSES[(sample["path"], sample["direction"])]
    # The warning's Definition.source.locations maps a digest to an empty Locations: Go
    # writes "12 00" for it, betterproto's bytes() drops it (2 bytes short).
    plain = not (cls is control.StatusResponse and control.StatusResponse().parse(raw).warnings)
    msg = roundtrip(cls, raw, plain=plain)
    if not plain:
        assert len(bytes(msg)) == len(raw) - 2


def test_control_capture_decoded_values() -> None:
    by_key = {(s["path"], s["direction"]): bytes.fromhex(s["hex"]) for s in CONTROL["samples"]}
    workers = control.ListWorkersResponse().parse(by_key[(f"/{C}/ListWorkers", "daemon->client")])
    rec = workers.record[0]
    assert isinstance(rec, worker.WorkerRecord)
    assert rec.labels["org.mobyproject.buildkit.worker.executor"] == "oci"
    assert rec.platforms[0].architecture == "amd64" and rec.platforms[0].os == "linux"
    assert rec.buildkit_version.package == "github.com/moby/buildkit"
    solve = control.SolveRequest().parse(by_key[(f"/{C}/Solve", "client->daemon")])
    status = control.StatusRequest().parse(by_key[(f"/{C}/Status", "client->daemon")])
    assert solve.ref == status.ref and len(solve.ref) == 25
    assert solve.frontend == "" and solve.cache._serialized_on_wire  # "42 00" kept
    # pb.* fields are the LLB package's own classes
    from bkcore.llb import pb

    assert type(solve.definition) is pb.Definition
    assert type(rec.platforms[0]) is pb.Platform
    assert gateway.NewContainerRequest().network == pb.NetMode.UNSET
    gw = gateway.SolveRequest().parse(by_key[(f"/{B}/Solve", "client->daemon")])
    assert gw.frontend == "dockerfile.v0"
    assert gw.allow_result_return and gw.allow_result_array_ref
    info = control.InfoResponse().parse(by_key[(f"/{C}/Info", "daemon->client")])
    assert info.buildkit_version.version == "0.0.0+unknown"
    for s in CONTROL["samples"]:
        if s["path"] != f"/{C}/Status" or s["direction"] != "daemon->client":
            continue
        msg = control.StatusResponse().parse(bytes.fromhex(s["hex"]))
        for st in msg.statuses:  # nanosecond timestamps survive (no datetime rounding)
            assert st.timestamp.seconds > 1_700_000_000 and 0 <= st.timestamp.nanos < 10**9
        for w in msg.warnings:
            assert w.level == 1 and w.url == "https://github.com/moby/moby/pull/33719"
            assert w.info.filename == "Dockerfile" and w.info.definition.def_


def test_requests_without_stream() -> None:
    vectors = CONTROL["requests_without_stream"]
    disk = control.DiskUsageRequest(filter=["type==regular"])
    prune = control.PruneRequest(
        filter=["id==doesnotexist"], all=True, keep_duration=3600 * 10**9, keep_bytes=10**8
    )
    workers = control.ListWorkersRequest(filter=["id!=x"])
    info = control.InfoResponse(
        buildkit_version=worker.BuildkitVersion(
            package="github.com/moby/buildkit", version="0.0.0+unknown"
        )
    )
    expect = {
        'DiskUsageRequest(filter=["type==regular"])': disk,
        'PruneRequest(filter=["id==doesnotexist"], all=true, keepDuration=1h, keepBytes=100MB)': (
            prune
        ),
        'ListWorkersRequest(filter=["id!=x"])': workers,
        "InfoRequest()": control.InfoRequest(),
        'InfoResponse(buildkitVersion={package:"github.com/moby/buildkit",'
        'version:"0.0.0+unknown"})': info,
    }
    assert set(expect) == {k for k in vectors if k != "note"}
    for key, msg in expect.items():
        raw = bytes.fromhex(vectors[key])
        assert bytes(msg) == raw, key  # built from field values, not decoded
        assert GoCodec().encode(msg, type(msg)) == raw, key
        roundtrip(type(msg), raw)


def session_messages() -> list[Any]:
    out = []
    for sid, call in SESSION["inner_calls"].items():
        for n, ev in enumerate(call["events"]):
            if ev.get("ev") == "MSG":
                name = call["path"].rsplit("/", 2)[1].rsplit(".", 1)[1]
                out.append(pytest.param(call["path"], ev, id=f"{sid}.{n}-{name}-{ev['dir']}"))
    return out


@pytest.mark.parametrize(("path", "event"), session_messages())
def test_session_capture_roundtrips(path: str, event: dict[str, Any]) -> None:
    cls = SESSION_CLASSES[(path, event["dir"])]
    prefix = bytes.fromhex(event["hex"].removesuffix("..."))
    if event.get("decoded") is None:
        # a 32 KiB DATA chunk stored as its first 64 bytes: the header must parse as DATA
        assert len(prefix) < event["len"] and cls is fsutil.Packet
        assert prefix.startswith(bytes.fromhex("0802"))  # type = PACKET_DATA
        return
    raw = encode_decoded(event["decoded"])
    assert len(raw) == event["len"] and raw.startswith(prefix)
    msg = roundtrip(cls, raw)
    if isinstance(msg, fsutil.Packet) and msg.stat._serialized_on_wire:
        assert msg.type == fsutil.PacketType.PACKET_STAT and msg.stat.path


def test_session_capture_values() -> None:
    events = {
        (call["path"], ev["dir"], ev["hex"]): ev
        for call in SESSION["inner_calls"].values()
        for ev in call["events"]
        if ev.get("ev") == "MSG"
    }
    keys = {(p, d, h) for p, d, h in events}
    req = secrets.GetSecretRequest().parse(bytes.fromhex("0a086d79736563726574"))
    assert req.id == "mysecret"
    assert (methods.SECRETS_GET_SECRET, "c2s", "0a086d79736563726574") in keys
    resp = secrets.GetSecretResponse().parse(bytes.fromhex("0a077333637233740a"))
    assert resp.data == b"s3cr3t\n"
    stat = fsutil.Packet().parse(
        bytes.fromhex("12230a0762696e2f63617410ff83804028073080f488d4d1dbe9f5183a0762757379626f78")
    )
    assert stat.stat.path == "bin/cat" and stat.stat.linkname == "busybox"
    assert stat.stat.mode == (1 << 27) | 0o777 and stat.stat.size == 7
    assert stat.stat.mod_time == 1795712345000000000
    req_pkt = fsutil.Packet().parse(bytes.fromhex("08011808"))
    assert req_pkt.type == fsutil.PacketType.PACKET_REQ and req_pkt.id == 8
    assert bytes(fsutil.Packet()) == b""  # end of listing
    assert bytes(fsutil.Packet(type=cast(Any, fsutil.PacketType.PACKET_FIN))) == bytes.fromhex(
        "0803"
    )
    assert (
        bytes(health.HealthCheckResponse(status=cast(Any, health.ServingStatus.SERVING)))
        == b"\x08\x01"
    )


def _headers(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in request["headers"]]


def test_outer_paths_and_session_headers() -> None:
    outer = SESSION["outer_requests"]
    paths = [v for r in outer for k, v in _headers(r) if k == ":path"]
    assert paths == [
        methods.CONTROL_LIST_WORKERS,
        methods.CONTROL_STATUS,
        methods.CONTROL_SESSION,
        methods.CONTROL_SOLVE,
        methods.LLBBRIDGE_PING,
        methods.LLBBRIDGE_SOLVE,
        methods.LLBBRIDGE_RETURN,
    ]
    session = next(r for r in outer if (":path", methods.CONTROL_SESSION) in _headers(r))
    keys = {k for k, _ in _headers(session) if not k.startswith(":")}
    assert {
        methods.SESSION_UUID,
        methods.SESSION_NAME,
        methods.SESSION_SHAREDKEY,
        methods.SESSION_GRPC_METHOD,
    } <= keys
    advertised = [v for k, v in _headers(session) if k == methods.SESSION_GRPC_METHOD]
    assert sorted(advertised) == sorted(methods.SESSION_METHODS)
    bridge = [r for r in outer if any(v.startswith(f"/{B}/") for _, v in _headers(r))]
    for r in bridge:
        assert any(k == methods.BUILD_ID for k, _ in _headers(r))
    all_control = [s["path"] for s in CONTROL["samples"]]
    assert set(paths) | set(all_control) <= set(methods.DAEMON_METHODS)


def test_inner_paths_and_metadata_keys() -> None:
    seen_keys: set[str] = set()
    for call in SESSION["inner_calls"].values():
        first = call["events"][0]
        headers = dict(first["headers"])
        assert headers[":path"] == call["path"] and call["path"] in methods.SESSION_METHODS
        assert headers[":authority"] == "localhost"
        seen_keys |= {k for k, _ in first["headers"] if not k.startswith(":")}
    metadata = seen_keys - {"content-type", "user-agent", "te"}
    assert metadata == {methods.DIR_NAME, methods.FOLLOW_PATHS, methods.EXCLUDE_PATTERNS}


def _mapping(base: type[Any]) -> set[str]:
    return set(base().__mapping__())


def test_method_lists_match_generated_services() -> None:
    assert _mapping(control.ControlBase) == set(methods.CONTROL_METHODS)
    assert _mapping(gateway.LlbBridgeBase) == set(methods.LLBBRIDGE_METHODS)
    session_served = set().union(
        *(
            _mapping(base)
            for base in (
                filesync.FileSyncBase,
                filesync.FileSendBase,
                filesync.AuthBase,
                secrets.SecretsBase,
                sshforward.SshBase,
                health.HealthBase,
            )
        )
    )
    assert session_served == set(methods.SESSION_METHODS)
    # every path in either capture is one we serve or call
    captured = {s["path"] for s in CONTROL["samples"]}
    captured |= {c["path"] for c in SESSION["inner_calls"].values()}
    assert captured <= set(methods.DAEMON_METHODS) | set(methods.SESSION_METHODS)
    # cardinalities as in the specs
    from grpclib.const import Cardinality

    ctl = control.ControlBase().__mapping__()
    assert ctl[methods.CONTROL_SESSION].cardinality == Cardinality.STREAM_STREAM
    assert ctl[methods.CONTROL_STATUS].cardinality == Cardinality.UNARY_STREAM
    assert ctl[methods.CONTROL_PRUNE].cardinality == Cardinality.UNARY_STREAM
    assert ctl[methods.CONTROL_SOLVE].cardinality == Cardinality.UNARY_UNARY
    fs = filesync.FileSyncBase().__mapping__()
    assert fs[methods.FILESYNC_DIFFCOPY].request_type is fsutil.Packet
    send = filesync.FileSendBase().__mapping__()
    assert send[methods.FILESEND_DIFFCOPY].request_type is filesync.BytesMessage


def test_go_codec_matches_go_where_betterproto_does_not() -> None:
    codec = GoCodec()
    # buildctl always writes the non-nullable CacheOptions: "42 00"
    req = control.SolveRequest(ref="r", cache=control.CacheOptions())
    assert codec.encode(req, control.SolveRequest).endswith(bytes.fromhex("4200"))
    assert codec.encode(control.SolveRequest(ref="r"), control.SolveRequest) == bytes.fromhex(
        "0a0172" "4200"
    )  # fmt: skip
    # map entries: empty values kept ("12 00") as Go writes them; insertion order kept
    attrs = control.SolveRequest(frontend_attrs={"z": "1", "no-cache": ""})
    encoded = codec.encode(attrs, control.SolveRequest)
    entries = bytes.fromhex("3a060a017a120131") + bytes.fromhex("3a0c0a086e6f2d63616368651200")
    assert encoded.startswith(entries)
    assert bytes(attrs) != encoded  # what this codec exists for
    # decoding is betterproto's
    back = codec.decode(encoded, control.SolveRequest)
    assert back.frontend_attrs == {"z": "1", "no-cache": ""}
    with pytest.raises(TypeError):
        codec.encode(control.InfoRequest(), control.SolveRequest)
