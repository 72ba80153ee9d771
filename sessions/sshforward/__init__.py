"""The SSH agent forwarding attachable (session.md §6)."""

from bkcore.sessions.sshforward.agent import (
    CHECK_AGENT,
    FORWARD_AGENT,
    SSHProvider,
    forward_agent,
    parse_ssh_spec,
)

__all__ = ["CHECK_AGENT", "FORWARD_AGENT", "SSHProvider", "forward_agent", "parse_ssh_spec"]
