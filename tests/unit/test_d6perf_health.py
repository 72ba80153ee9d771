"""The session's hand-written ``grpc.health.v1`` messages: the generated code's bytes both
ways, and a session's health handler loads no betterproto."""

from __future__ import annotations

import subprocess
import sys

from bkcore.api.pb import health as generated
from bkcore.session.health import HealthCheckRequest, HealthCheckResponse


def test_same_bytes_as_generated_code() -> None:
    pairs = [
        (HealthCheckRequest(), generated.HealthCheckRequest()),
        (
            HealthCheckRequest("moby.filesync.v1.FileSync"),
            generated.HealthCheckRequest("moby.filesync.v1.FileSync"),
        ),
        (HealthCheckResponse(1), generated.HealthCheckResponse(status=1)),
        (HealthCheckResponse(3), generated.HealthCheckResponse(status=3)),
        (HealthCheckResponse(), generated.HealthCheckResponse()),
    ]
    for mine, theirs in pairs:
        assert bytes(mine) == bytes(theirs)
        assert type(mine).FromString(bytes(theirs)) == mine
        assert type(theirs)().parse(bytes(mine)) == theirs


def test_unknown_fields_are_skipped() -> None:
    data = b"\x08\x01" + b"\x12\x03abc" + b"\x18\x07"
    assert HealthCheckResponse.FromString(data) == HealthCheckResponse(1)


def test_serving_a_session_loads_no_betterproto() -> None:
    code = (
        "import asyncio, sys\n"
        "from bkcore.session import Session\n"
        "from bkcore.session.grpc_transport import _make_codec\n"
        "from bkcore.session.health import HEALTH_CHECK, HealthCheckRequest, HealthCheckResponse\n"
        "s = Session()\n"
        "call = s.caller().call_unary(HEALTH_CHECK, HealthCheckRequest(), HealthCheckResponse)\n"
        "r = asyncio.run(call)\n"
        "c = _make_codec()\n"
        "assert c.decode(c.encode(r, None), HealthCheckResponse).status == 1\n"
        "assert 'betterproto' not in sys.modules, 'betterproto loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
