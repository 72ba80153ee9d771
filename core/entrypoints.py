"""A fast scan of installed entry points of one group, for start-up.

``importlib.metadata`` costs about 45 ms to import (it pulls in the ``email`` package to
parse metadata), which is a third of ``bkcore``'s start-up budget. Entry points only need
the ``entry_points.txt`` files of the ``*.dist-info`` / ``*.egg-info`` folders on
``sys.path``, so this module reads just those, with the same rules as
``importlib.metadata.entry_points(group=...)``: folders in ``sys.path`` order, and only the
first distribution of each normalised name counts.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_SECTION = re.compile(r"^\[(?P<name>[^\]]+)\]\s*$")
_ENTRY = re.compile(r"^(?P<name>[^=\s][^=]*?)\s*=\s*(?P<value>.+?)\s*$")
_NORMALISE = re.compile(r"[-_.]+")


@dataclass(frozen=True, slots=True)
class Distribution:
    """Name and version of the distribution that declares an entry point."""

    name: str
    version: str


@dataclass(frozen=True, slots=True)
class FoundEntryPoint:
    """One ``name = module[:attr]`` line of an entry-point group."""

    name: str
    value: str
    group: str
    dist: Distribution

    def load(self) -> Any:
        """Import the module and return the attribute, like ``EntryPoint.load``."""
        module_name, _, attrs = self.value.partition(":")
        obj: Any = importlib.import_module(module_name.strip())
        for attr in filter(None, attrs.strip().split(".")):
            obj = getattr(obj, attr)
        return obj


def _distribution(folder: str, path: str) -> Distribution:
    """Name and version from the metadata header (read only for matching distributions)."""
    stem = folder.rsplit(".", 1)[0]
    folder_name, _, rest = stem.partition("-")
    fields = _metadata_header(path)
    return Distribution(
        fields.get("name", folder_name), fields.get("version", rest.partition("-")[0])
    )


def _metadata_header(path: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for meta in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(path, meta), encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip():
                        break
                    key, sep, value = line.partition(":")
                    if sep and key.lower() in ("name", "version"):
                        fields.setdefault(key.lower(), value.strip())
        except OSError:
            continue
        break
    return fields


def _parse(text: str, group: str) -> Iterable[tuple[str, str]]:
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        match = _SECTION.match(line)
        if match:
            section = match["name"].strip()
            continue
        if section == group:
            entry = _ENTRY.match(line)
            if entry:
                yield entry["name"], entry["value"]


def entry_points(group: str, path: Iterable[str] | None = None) -> list[FoundEntryPoint]:
    """Entry points of ``group`` from the distributions installed on ``path``."""
    found: list[FoundEntryPoint] = []
    seen: set[str] = set()
    marker = f"[{group}]"
    for entry in sys.path if path is None else path:
        base = entry or "."
        try:
            names = sorted(os.listdir(base))
        except OSError:
            continue
        for folder in names:
            if not folder.endswith((".dist-info", ".egg-info")):
                continue
            stem = folder.rsplit(".", 1)[0]  # without .dist-info / .egg-info
            key = _NORMALISE.sub("-", stem.partition("-")[0]).lower()
            if key in seen:
                continue
            dist_path = os.path.join(base, folder)
            if not os.path.isdir(dist_path):
                continue
            seen.add(key)
            try:
                with open(os.path.join(dist_path, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            if marker not in text:
                continue
            dist = _distribution(folder, dist_path)
            found.extend(
                FoundEntryPoint(name, value, group, dist) for name, value in _parse(text, group)
            )
    return found
