"""The wire form of bkcore errors as BuildKit's own buildctl v0.11.6 reads it: the message
worded as buildkitd words it (where it happened travels in the details, which buildctl
prints itself), and the Dockerfile text in the Source detail (buildctl draws the snippet from
it). Compared against what buildkitd v0.11.6 sent for the same failures."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from bkcore.api import errors as apierr
from bkcore.api.pb import status as rpc
from bkcore.errors import BkError, ExecError, FrontendError, SolveError

DIGEST = "sha256:" + "ab" * 32
DOCKERFILE = b"FROM busybox\nARG X=1\nRUN echo hello $X && exit 5\nRUN true\n"


def _details(details_bin: bytes) -> dict[str, object]:
    msg = rpc.Status().parse(details_bin)
    return {d.type_url: json.loads(d.value) for d in msg.details}


def test_solve_error_message_has_no_step_prefix() -> None:
    err = SolveError('no SSH key "" forwarded from the client', DIGEST, "/bin/sh -c ls")
    assert str(err).startswith("[/bin/sh -c ls] ")
    status, message, details_bin = apierr.to_status(err)
    assert message == 'no SSH key "" forwarded from the client'
    assert _details(details_bin)[apierr.VERTEX] == {"digest": DIGEST}
    # a bkcore client still gets the whole text back
    assert str(apierr.from_status(status, message, details_bin)) == str(err)


def test_located_run_failure_is_worded_as_buildkitd_and_carries_the_dockerfile() -> None:
    cause = ExecError(
        ["/bin/sh", "-c", "echo hello $X && exit 5"],
        5,
        digest=DIGEST,
        description="[1/3] RUN echo hello 1 && exit 5",
    )
    located = FrontendError(f"{cause.description}: {cause.message}", "Dockerfile", 3)
    located.digest = DIGEST  # type: ignore[attr-defined]
    located.source_data = DOCKERFILE  # type: ignore[attr-defined]
    located.__cause__ = cause
    status, message, details_bin = apierr.to_status(located)
    # buildkitd's grpc-message for this build (buildctl prints "failed to solve: " + it)
    assert message == (
        'process "/bin/sh -c echo hello $X && exit 5" did not complete successfully: exit code: 5'
    )
    details = _details(details_bin)
    source = details[apierr.SOURCE]
    assert isinstance(source, dict)
    assert base64.b64decode(source["info"]["data"]) == DOCKERFILE
    assert source["info"]["filename"] == "Dockerfile"
    assert source["ranges"] == [{"start": {"line": 3}, "end": {"line": 3}}]
    assert details[apierr.EXIT_MESSAGE] == {"Code": 5}
    # what buildctl Returns over the bridge (Go keeps only the details it knows): the
    # daemon rebuilds a located error whose wire text is the same message
    known = [
        (url, value) for url, value in apierr.details_of(located) if url != apierr.BKCORE_ERROR
    ]
    returned = apierr.from_status(status, message, apierr.encode_details(status, message, known))
    assert isinstance(returned, FrontendError) and returned.line == 3
    assert apierr.to_status(returned)[1] == message


def test_parse_error_message_without_the_location_prefix() -> None:
    err = FrontendError(
        "dockerfile parse error on line 3: unknown instruction: FOO (did you mean FROM?)",
        "Dockerfile",
        3,
    )
    assert apierr.to_status(err)[1] == (
        "dockerfile parse error on line 3: unknown instruction: FOO (did you mean FROM?)"
    )


def test_go_code_prefix_of_a_returned_error_is_dropped_once() -> None:
    from grpclib.const import Status

    assert apierr.go_code_name(Status.INVALID_ARGUMENT) == "InvalidArgument"
    assert apierr.go_code_name(Status.CANCELLED) == "Canceled"
    assert apierr.go_code_name(Status.RESOURCE_EXHAUSTED) == "ResourceExhausted"
    msg = "InvalidArgument: invalid LLB with 1 vertexes"
    assert apierr.strip_go_code(Status.INVALID_ARGUMENT, msg) == "invalid LLB with 1 vertexes"
    assert apierr.strip_go_code(3, "InvalidArgument: InvalidArgument: x") == "InvalidArgument: x"
    # Go adds nothing for Unknown: a message that merely starts like a code name stays
    assert apierr.strip_go_code(Status.UNKNOWN, "NotFound: x") == "NotFound: x"
    assert apierr.strip_go_code(Status.NOT_FOUND, "InvalidArgument: x") == "InvalidArgument: x"


def test_refused_entitlement_is_worded_as_buildkitd() -> None:
    """What buildctl printed against buildkitd v0.11.6 for --allow network.host on a daemon
    that does not allow it: 'failed to solve: granting entitlement network.host is not
    allowed by build daemon configuration'."""
    from bkcore.api.pb import control as cpb
    from bkcore.api.server import ControlServicer, DaemonSettings

    servicer = ControlServicer(None, DaemonSettings(root=Path("/nonexistent")))  # type: ignore[arg-type]
    request = cpb.SolveRequest(ref="r", frontend="dockerfile.v0", entitlements=["network.host"])
    try:
        servicer._options(request)
    except BkError as exc:
        assert apierr.to_status(exc)[1] == (
            "granting entitlement network.host is not allowed by build daemon configuration"
        )
    else:
        raise AssertionError("the entitlement was granted")
