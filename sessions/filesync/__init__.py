"""FileSync and FileSend attachables (session.md §5) and the diffcopy state machines.

Names are imported lazily (PEP 562) so loading the package's ``plugin`` module at
start-up stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkcore.sessions.filesync.filesend import (
        FILESEND,
        FileSendTarget,
        send_dir_to_client,
        send_file_to_client,
    )
    from bkcore.sessions.filesync.provider import (
        DIFFCOPY,
        FileSyncProvider,
        SyncedDir,
        default_index_path,
        sync_dir,
    )
    from bkcore.sessions.filesync.receiver import (
        SyncResult,
        receive_diffcopy,
    )
    from bkcore.sessions.filesync.sender import (
        SendStats,
        send_diffcopy,
    )

_WHERE = {
    "FILESEND": "bkcore.sessions.filesync.filesend",
    "FileSendTarget": "bkcore.sessions.filesync.filesend",
    "send_dir_to_client": "bkcore.sessions.filesync.filesend",
    "send_file_to_client": "bkcore.sessions.filesync.filesend",
    "DIFFCOPY": "bkcore.sessions.filesync.provider",
    "FileSyncProvider": "bkcore.sessions.filesync.provider",
    "SyncedDir": "bkcore.sessions.filesync.provider",
    "default_index_path": "bkcore.sessions.filesync.provider",
    "sync_dir": "bkcore.sessions.filesync.provider",
    "SyncResult": "bkcore.sessions.filesync.receiver",
    "receive_diffcopy": "bkcore.sessions.filesync.receiver",
    "SendStats": "bkcore.sessions.filesync.sender",
    "send_diffcopy": "bkcore.sessions.filesync.sender",
}

__all__ = [
    "DIFFCOPY",
    "FILESEND",
    "FileSendTarget",
    "FileSyncProvider",
    "SendStats",
    "SyncResult",
    "SyncedDir",
    "default_index_path",
    "receive_diffcopy",
    "send_diffcopy",
    "send_dir_to_client",
    "send_file_to_client",
    "sync_dir",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
