"""Walker fast paths: mode cache, name ordering, inline change tokens."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from bkcore.session.filesync.packets import GO_DIR, GO_SETUID, go_mode
from bkcore.session.filesync.walker import RACY_NS, change_token, walk


def test_modes_names_and_tokens(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    (root / "d").mkdir(parents=True)
    for name in ("b", "a", "é", "Z", "d/x"):
        (root / name).write_bytes(b"1")
    os.chmod(root / "a", 0o4755)
    (root / "b").chmod(0o600)
    undecodable = os.fsdecode(b"\xff")
    (root / undecodable).write_bytes(b"2")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "s.sock"))
    try:
        time.sleep(RACY_NS / 1e9 + 0.02)
        start = time.time_ns()
        entries = walk(str(root), tokens=True, walk_start_ns=start)
    finally:
        sock.close()
    paths = [e.stat.path for e in entries]
    assert paths == ["Z", "a", "b", "d", "d/x", "é", undecodable]  # bytewise, socket skipped
    by = {e.stat.path: e for e in entries}
    assert by["a"].stat.mode == 0o755 | GO_SETUID
    assert by["b"].stat.mode == 0o600
    assert by["d"].stat.mode == go_mode(os.lstat(root / "d").st_mode)
    assert by["d"].stat.mode & GO_DIR and not by["d"].stat.change
    for rel in ("a", "b", "d/x"):
        s = os.lstat(root / rel)
        assert by[rel].stat.change == change_token(s, start) != "!racy"
    # a file changed within the racy window gets no trusted token
    os.utime(root / "b")
    (root / "b").write_bytes(b"3")
    again = {e.stat.path: e.stat for e in walk(str(root), tokens=True, walk_start_ns=start)}
    assert again["b"].change == "!racy"
    assert again["a"].change == by["a"].stat.change
