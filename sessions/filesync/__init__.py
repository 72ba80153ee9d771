"""FileSync and FileSend attachables (session.md §5) and the diffcopy state machines."""

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
from bkcore.sessions.filesync.receiver import SyncResult, receive_diffcopy
from bkcore.sessions.filesync.sender import SendStats, send_diffcopy

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
