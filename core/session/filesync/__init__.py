"""The diffcopy protocol of ``moby.filesync.v1`` (session.md §5): codecs and daemon side.

Shared by both ends: the wire messages (:mod:`.packets`), the receiving and sending state
machines (:mod:`.receiver` with :mod:`.dest` and :mod:`.index`; :mod:`.sender` with
:mod:`.walker`). Daemon side: :func:`sync_dir` (local sources pull a client directory) and
:func:`send_dir_to_client` / :func:`send_file_to_client` (exporters push to the client). The
client-side attachables live in the ``bkcore.sessions.filesync`` plugin.
"""

from __future__ import annotations

from bkcore.session.filesync.receiver import SyncResult, receive_diffcopy
from bkcore.session.filesync.send import FILESEND, send_dir_to_client, send_file_to_client
from bkcore.session.filesync.sender import SendStats, send_diffcopy
from bkcore.session.filesync.sync import DIFFCOPY, default_index_path, sync_dir

__all__ = [
    "DIFFCOPY",
    "FILESEND",
    "SendStats",
    "SyncResult",
    "default_index_path",
    "receive_diffcopy",
    "send_diffcopy",
    "send_dir_to_client",
    "send_file_to_client",
    "sync_dir",
]
