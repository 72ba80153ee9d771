"""The SSH agent forwarding client-side attachable (session.md §6).

The protocol messages and the daemon side (``forward_agent``) live in
:mod:`bkcore.session.sshforward`. Names are imported lazily (PEP 562) so loading the
package's ``plugin`` module at start-up stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.lazy import module_getattr

if TYPE_CHECKING:
    from bkcore.sessions.sshforward.agent import SSHProvider, parse_ssh_spec

_WHERE = {
    "SSHProvider": "bkcore.sessions.sshforward.agent",
    "parse_ssh_spec": "bkcore.sessions.sshforward.agent",
}

__all__ = ["SSHProvider", "parse_ssh_spec"]


__getattr__ = module_getattr(globals(), _WHERE)
