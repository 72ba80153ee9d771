"""gRPC method paths and metadata keys of the daemon's wire protocol, as BuildKit v0.11.6 uses
them (control.md §1-2, session.md §2-7, gateway.md §1-2). Plain constants: importing this
module loads nothing else. The golden tests check every value against the captures of real
buildctl <-> buildkitd traffic and against the generated services in ``bkcore.api.pb``.
"""

from __future__ import annotations

from typing import Final

CONTROL: Final = "moby.buildkit.v1.Control"
LLBBRIDGE: Final = "moby.buildkit.v1.frontend.LLBBridge"
FILESYNC: Final = "moby.filesync.v1.FileSync"
FILESEND: Final = "moby.filesync.v1.FileSend"
AUTH: Final = "moby.filesync.v1.Auth"
SECRETS: Final = "moby.buildkit.secrets.v1.Secrets"
SSH: Final = "moby.sshforward.v1.SSH"
HEALTH: Final = "grpc.health.v1.Health"


def path(service: str, method: str) -> str:
    """``/<package.Service>/<Method>``."""
    return f"/{service}/{method}"


# -- served by the daemon on its socket (the client calls them) ------------------------------

CONTROL_DISK_USAGE: Final = path(CONTROL, "DiskUsage")
CONTROL_PRUNE: Final = path(CONTROL, "Prune")
CONTROL_SOLVE: Final = path(CONTROL, "Solve")
CONTROL_STATUS: Final = path(CONTROL, "Status")
CONTROL_SESSION: Final = path(CONTROL, "Session")
CONTROL_LIST_WORKERS: Final = path(CONTROL, "ListWorkers")
CONTROL_INFO: Final = path(CONTROL, "Info")
CONTROL_LISTEN_BUILD_HISTORY: Final = path(CONTROL, "ListenBuildHistory")
CONTROL_UPDATE_BUILD_HISTORY: Final = path(CONTROL, "UpdateBuildHistory")

CONTROL_METHODS: Final = (
    CONTROL_DISK_USAGE,
    CONTROL_PRUNE,
    CONTROL_SOLVE,
    CONTROL_STATUS,
    CONTROL_SESSION,
    CONTROL_LIST_WORKERS,
    CONTROL_INFO,
    CONTROL_LISTEN_BUILD_HISTORY,
    CONTROL_UPDATE_BUILD_HISTORY,
)

LLBBRIDGE_METHODS: Final = tuple(
    path(LLBBRIDGE, m)
    for m in (
        "ResolveImageConfig",
        "Solve",
        "ReadFile",
        "ReadDir",
        "StatFile",
        "Evaluate",
        "Ping",
        "Return",
        "Inputs",
        "NewContainer",
        "ReleaseContainer",
        "ExecProcess",
        "Warn",
    )
)
LLBBRIDGE_PING: Final = path(LLBBRIDGE, "Ping")
LLBBRIDGE_SOLVE: Final = path(LLBBRIDGE, "Solve")
LLBBRIDGE_RETURN: Final = path(LLBBRIDGE, "Return")

# Paths the daemon serves (a gateway frontend container also gets Health on its stdio link).
DAEMON_METHODS: Final = CONTROL_METHODS + LLBBRIDGE_METHODS

# -- served by the client inside the session tunnel (the daemon calls them) ------------------

FILESYNC_DIFFCOPY: Final = path(FILESYNC, "DiffCopy")
FILESYNC_TARSTREAM: Final = path(FILESYNC, "TarStream")
FILESEND_DIFFCOPY: Final = path(FILESEND, "DiffCopy")
AUTH_CREDENTIALS: Final = path(AUTH, "Credentials")
AUTH_FETCH_TOKEN: Final = path(AUTH, "FetchToken")
AUTH_GET_TOKEN_AUTHORITY: Final = path(AUTH, "GetTokenAuthority")
AUTH_VERIFY_TOKEN_AUTHORITY: Final = path(AUTH, "VerifyTokenAuthority")
SECRETS_GET_SECRET: Final = path(SECRETS, "GetSecret")
SSH_CHECK_AGENT: Final = path(SSH, "CheckAgent")
SSH_FORWARD_AGENT: Final = path(SSH, "ForwardAgent")
HEALTH_CHECK: Final = path(HEALTH, "Check")
HEALTH_WATCH: Final = path(HEALTH, "Watch")

SESSION_METHODS: Final = (
    HEALTH_CHECK,
    HEALTH_WATCH,
    FILESYNC_DIFFCOPY,
    FILESYNC_TARSTREAM,
    FILESEND_DIFFCOPY,
    AUTH_CREDENTIALS,
    AUTH_FETCH_TOKEN,
    AUTH_GET_TOKEN_AUTHORITY,
    AUTH_VERIFY_TOKEN_AUTHORITY,
    SECRETS_GET_SECRET,
    SSH_CHECK_AGENT,
    SSH_FORWARD_AGENT,
)

# -- metadata keys (lower-case, as on HTTP/2) ------------------------------------------------

# Control.Session request metadata (session.md §2); the method key repeats.
SESSION_UUID: Final = "x-docker-expose-session-uuid"
SESSION_NAME: Final = "x-docker-expose-session-name"
SESSION_SHAREDKEY: Final = "x-docker-expose-session-sharedkey"
SESSION_GRPC_METHOD: Final = "x-docker-expose-session-grpc-method"
# LLBBridge calls of a client-side frontend (gateway forwarder, gateway.md §2).
BUILD_ID: Final = "buildkit-controlapi-buildid"
# FileSync.DiffCopy request metadata (session.md §5.3); all but dir-name repeat.
DIR_NAME: Final = "dir-name"
INCLUDE_PATTERNS: Final = "include-patterns"
EXCLUDE_PATTERNS: Final = "exclude-patterns"
FOLLOW_PATHS: Final = "followpaths"
OVERRIDE_EXCLUDES: Final = "override-excludes"
# FileSend.DiffCopy file output: one key per exporter metadata entry (session.md §5.4).
EXPORTER_MD_PREFIX: Final = "exporter-md-"
# SSH.ForwardAgent (session.md §6) and the session content store (§7).
SSH_ID: Final = "buildkit.ssh.id"
ATTACHABLE_STORE_ID: Final = "buildkit-attachable-store-id"
# Response header of Control.Status (control.md §1) and the error trailer (§6).
CURRENT_TIMESTAMP: Final = "buildkit-current-timestamp"
STATUS_DETAILS: Final = "grpc-status-details-bin"
