"""The SSH agent forwarding client-side attachable (session.md §6).

The protocol messages and the daemon side (``forward_agent``) live in
:mod:`bkcore.session.sshforward`. Names are imported lazily (PEP 562) so loading the
package's ``plugin`` module at start-up stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkcore.sessions.sshforward.agent import SSHProvider, parse_ssh_spec

_WHERE = {
    "SSHProvider": "bkcore.sessions.sshforward.agent",
    "parse_ssh_spec": "bkcore.sessions.sshforward.agent",
}

__all__ = ["SSHProvider", "parse_ssh_spec"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
