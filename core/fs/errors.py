"""Errors of the in-process filesystem operations."""

from __future__ import annotations

from bkcore.errors import BkError


class FileOpError(BkError):
    """A file action (mkdir, mkfile, rm, copy, unpack, checksum) failed; one clear line."""


class PathNotFoundError(FileOpError):
    """A path that the action needs does not exist."""
