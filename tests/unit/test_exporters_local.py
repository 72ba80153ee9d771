"""local exporter: the client directory is replaced whole, and only on success."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bkcore.errors import ExportError
from bkcore.plugins.exporters.local import LocalExporter
from bkcore.progress import ProgressStream, VertexEvent
from bkcore.session.session import Session
from bkcore.sessions.filesync import FileSendTarget


@dataclass
class _Ctx:
    root: Path
    caller: Any
    progress: ProgressStream = field(default_factory=ProgressStream)
    refs: dict[str, Any] = field(default_factory=dict)  # platform -> a result's tree (Path)

    def view(self, result: object) -> contextlib.AbstractContextManager[Path]:
        @contextlib.contextmanager
        def cm() -> Iterator[Path]:
            yield result if isinstance(result, Path) else self.root

        return cm()


def _result_tree(root: Path) -> Path:
    root.mkdir()
    (root / "app").mkdir()
    (root / "app" / "main.txt").write_text("new\n")
    os.chmod(root / "app" / "main.txt", 0o640)
    os.utime(root / "app" / "main.txt", ns=(0, 1_234_567_891_234))
    os.symlink("main.txt", root / "app" / "ln")
    os.link(root / "app" / "main.txt", root / "hard")
    return root


def _export(ctx: _Ctx, attrs: dict[str, str] | None = None) -> None:
    asyncio.run(LocalExporter().export(ctx, None, attrs or {}))


def _client(dest: Path) -> Session:
    session = Session()
    session.allow(FileSendTarget(dest_dir=str(dest)))
    return session


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_export_replaces_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    import bkcore.sessions.filesync.filesend as filesend

    if not exchange:
        monkeypatch.setattr(filesend, "_exchange", lambda a, b: False)
    src = _result_tree(tmp_path / "result")
    dest = tmp_path / "out"
    dest.mkdir()
    os.chmod(dest, 0o750)
    (dest / "stale.txt").write_text("from an older build")
    (dest / "app").mkdir()
    (dest / "app" / "main.txt").write_text("old\n")
    ctx = _Ctx(src, _client(dest).caller())
    reader = ctx.progress.subscribe()
    _export(ctx)
    assert sorted(os.listdir(dest)) == ["app", "hard"]  # stale.txt is gone: replaced, not merged
    main = dest / "app" / "main.txt"
    assert main.read_text() == "new\n"
    assert os.stat(main).st_mode & 0o7777 == 0o640
    assert os.stat(main).st_mtime_ns == 1_234_567_891_234
    assert os.readlink(dest / "app" / "ln") == "main.txt"
    assert os.stat(dest / "hard").st_ino == os.stat(main).st_ino
    assert os.stat(dest).st_mode & 0o7777 == 0o750  # the destination keeps its mode
    assert sorted(os.listdir(tmp_path)) == ["out", "result"]  # no temporary sibling left
    names = {e.name for e in reader.read_nowait() if isinstance(e, VertexEvent)}
    assert names == {"exporting to client directory"}


def test_export_creates_missing_destination_and_parents(tmp_path: Path) -> None:
    src = _result_tree(tmp_path / "result")
    dest = tmp_path / "a" / "b" / "out"
    _export(_Ctx(src, _client(dest).caller()))
    assert (dest / "app" / "main.txt").read_text() == "new\n"


def test_failed_export_leaves_old_destination_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bkcore.session.filesync.sender as sender

    src = _result_tree(tmp_path / "result")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("previous result")

    def broken(jobs: object) -> list[bytes | None]:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sender, "_read_batch", broken)
    with pytest.raises(ExportError, match="exporting to client directory"):
        _export(_Ctx(src, _client(dest).caller()))
    assert sorted(os.listdir(dest)) == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "previous result"
    assert sorted(os.listdir(tmp_path)) == ["out", "result"]


def test_destination_that_is_a_file_is_refused(tmp_path: Path) -> None:
    src = _result_tree(tmp_path / "result")
    dest = tmp_path / "out"
    dest.write_text("a file")
    with pytest.raises(ExportError, match="not a directory"):
        _export(_Ctx(src, _client(dest).caller()))
    assert dest.read_text() == "a file"


def test_epoch_sets_every_mtime(tmp_path: Path) -> None:
    src = _result_tree(tmp_path / "result")
    dest = tmp_path / "out"
    _export(_Ctx(src, _client(dest).caller()), {"source-date-epoch": "1000000000"})
    for p in (dest / "app", dest / "app" / "main.txt", dest / "hard"):
        assert os.lstat(p).st_mtime_ns == 1_000_000_000 * 10**9
    assert os.lstat(dest / "app" / "ln").st_mtime_ns == 1_000_000_000 * 10**9


def test_needs_a_client_output(tmp_path: Path) -> None:
    src = _result_tree(tmp_path / "result")
    with pytest.raises(ExportError, match="not supported by the client"):
        _export(_Ctx(src, Session().caller()))
    with pytest.raises(ExportError, match="needs a client session"):
        _export(_Ctx(src, None))


def test_multi_platform_result_goes_into_one_directory_per_platform(tmp_path: Path) -> None:
    """spec/exporters.md §6: ``linux_amd64/``, ``linux_arm64_v8/`` (``/`` becomes ``_``)."""
    amd = _result_tree(tmp_path / "amd")
    arm = tmp_path / "arm"
    arm.mkdir()
    (arm / "only-arm").write_text("arm\n")
    dest = tmp_path / "out"
    refs = {"linux/arm64/v8": arm, "linux/amd64": amd}
    _export(_Ctx(tmp_path / "unused", _client(dest).caller(), refs=refs))
    assert sorted(os.listdir(dest)) == ["linux_amd64", "linux_arm64_v8"]
    assert (dest / "linux_amd64" / "app" / "main.txt").read_text() == "new\n"
    assert os.readlink(dest / "linux_amd64" / "app" / "ln") == "main.txt"
    # a hard link stays a hard link inside its platform directory
    hard, main = dest / "linux_amd64" / "hard", dest / "linux_amd64" / "app" / "main.txt"
    assert os.stat(hard).st_ino == os.stat(main).st_ino
    assert (dest / "linux_arm64_v8" / "only-arm").read_text() == "arm\n"
    assert os.stat(dest / "linux_arm64_v8").st_mode & 0o7777 == 0o755
