"""Errors of the in-process filesystem operations."""

from __future__ import annotations

from bkcore.errors import BkError


class FileOpError(BkError):
    """A file action (mkdir, mkfile, rm, copy, unpack, checksum) failed; one clear line."""


class PathNotFoundError(FileOpError):
    """A path that the action needs does not exist.

    ``path``: the missing in-root path after symlinks were followed, when known (BuildKit
    names that one: a dangling ``/link -> nowhere`` is ``"/nowhere": not found``)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
