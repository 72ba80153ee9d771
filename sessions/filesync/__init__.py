"""FileSync and FileSend client-side attachables (session.md §5).

The diffcopy codec and state machines, and the daemon side (``sync_dir``,
``send_dir_to_client``, ``send_file_to_client``), live in :mod:`bkcore.session.filesync`.
Names are imported lazily (PEP 562) so loading the package's ``plugin`` module at
start-up stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.lazy import module_getattr

if TYPE_CHECKING:
    from bkcore.sessions.filesync.filesend import FileSendTarget
    from bkcore.sessions.filesync.provider import FileSyncProvider, SyncedDir

_WHERE = {
    "FileSendTarget": "bkcore.sessions.filesync.filesend",
    "FileSyncProvider": "bkcore.sessions.filesync.provider",
    "SyncedDir": "bkcore.sessions.filesync.provider",
}

__all__ = ["FileSendTarget", "FileSyncProvider", "SyncedDir"]


__getattr__ = module_getattr(globals(), _WHERE)
