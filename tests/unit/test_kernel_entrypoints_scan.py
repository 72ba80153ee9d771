"""The start-up entry-point scan agrees with importlib.metadata."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from bkcore.entrypoints import entry_points


def _dist(site: Path, folder: str, text: str, name: str, version: str) -> None:
    d = site / folder
    d.mkdir()
    (d / "entry_points.txt").write_text(text)
    (d / ("PKG-INFO" if folder.endswith(".egg-info") else "METADATA")).write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\n"
    )


@pytest.fixture
def site(tmp_path: Path) -> list[str]:
    first = tmp_path / "first"
    second = tmp_path / "second"
    first.mkdir()
    second.mkdir()
    _dist(
        first,
        "alpha_plug-1.2.dist-info",
        "[bkcore]\nalpha = alpha.plugin\n[other]\nx = y\n",
        "alpha-plug",
        "1.2",
    )
    _dist(
        first,
        "beta-2.0.dist-info",
        "# comment\n[console_scripts]\nbeta = beta:main\n\n[bkcore]\nbeta = beta.plugin:hooks\n",
        "beta",
        "2.0",
    )
    _dist(
        first,
        "gamma.egg-info",
        "[bkcore]\ngamma=gamma.plugin\n",
        "gamma",
        "3.1",
    )
    # A second copy of alpha later on the path is shadowed, as importlib.metadata does.
    _dist(
        second,
        "Alpha.Plug-9.9.dist-info",
        "[bkcore]\nshadowed = nope.plugin\n",
        "Alpha.Plug",
        "9.9",
    )
    return [str(first), str(second)]


def test_same_entry_points_as_importlib_metadata(site: list[str]) -> None:
    ours = {(e.name, e.value, e.dist.version) for e in entry_points("bkcore", site)}
    seen: set[str] = set()
    theirs = set()
    for dist in importlib.metadata.distributions(path=site):
        norm = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if norm in seen:
            continue  # importlib.metadata.entry_points() keeps the first of each name
        seen.add(norm)
        for ep in dist.entry_points.select(group="bkcore"):
            theirs.add((ep.name, ep.value, dist.version))
    assert ours == theirs
    assert ("alpha", "alpha.plugin", "1.2") in ours
    assert ("gamma", "gamma.plugin", "3.1") in ours  # version read from PKG-INFO
    assert all(name != "shadowed" for name, _, _ in ours)


def test_load_imports_module_and_attribute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "epscan_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("class hooks:\n    value = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _dist(
        tmp_path,
        "epscan_demo-1.0.dist-info",
        "[bkcore]\ndemo = epscan_demo:hooks.value\n",
        "epscan-demo",
        "1.0",
    )
    (found,) = entry_points("bkcore", [str(tmp_path)])
    assert found.dist.name == "epscan-demo" and found.load() == 42
    sys.modules.pop("epscan_demo", None)
