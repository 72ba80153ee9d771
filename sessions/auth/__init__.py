"""The registry Auth client-side attachable (session.md §6): credentials from the client's
Docker config (``auths``) and credential helpers (``credHelpers``, ``credsStore``).

The messages and the daemon side live in :mod:`bkcore.session.auth`. Names are imported
lazily (PEP 562) so loading the package's ``plugin`` module at start-up stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.lazy import module_getattr

if TYPE_CHECKING:
    from bkcore.sessions.auth.dockerconfig import DockerConfig, config_dir
    from bkcore.sessions.auth.provider import AuthProvider

_WHERE = {
    "AuthProvider": "bkcore.sessions.auth.provider",
    "DockerConfig": "bkcore.sessions.auth.dockerconfig",
    "config_dir": "bkcore.sessions.auth.dockerconfig",
}

__all__ = ["AuthProvider", "DockerConfig", "config_dir"]


__getattr__ = module_getattr(globals(), _WHERE)
