"""What the user sees of exports and du, compared with buildkitd v0.11.6 (recorded with buildctl
against both): an image push shows its statuses inside "exporting to image" (no separate
"pushing NAME" vertex), a local export shows "copying files NB", a tar export is "exporting to
client tarball" with "sending tarball", and ``du -v`` prints each record's usage count."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bkcore import llb

pytestmark = pytest.mark.integration


def _graph() -> Any:
    return llb.scratch().file(llb.mkfile("/hello.txt", 0o644, b"x" * 353))


def _plain(bk: Any, *outputs: str) -> str:
    argv = bk.argv(progress="plain")
    for output in outputs:
        argv += ["--output", output]
    proc = subprocess.run(
        argv, input=bk.definition(_graph()), capture_output=True, timeout=180, cwd=bk.tmp
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    return err


def _vertex_lines(err: str, name: str) -> list[str]:
    """The plain-progress lines of the vertex named ``name`` (``#N ...``)."""
    m = re.search(rf"^(#\d+) {re.escape(name)}$", err, re.M)
    assert m is not None, err
    return [ln for ln in err.splitlines() if ln.startswith(m.group(1) + " ")]


def test_push_statuses_inside_exporting_to_image(bk: Any, registry: Any) -> None:
    name = f"{registry.host}/team/polish:v1"
    err = _plain(bk, f"type=image,name={name},push=true")
    lines = _vertex_lines(err, "exporting to image")
    text = "\n".join(lines)
    assert re.search(r" exporting layers( [\d.]+s)? done$", text, re.M), err
    assert re.search(r" exporting manifest sha256:[0-9a-f]{64}( [\d.]+s)? done$", text, re.M)
    assert re.search(r" exporting config sha256:[0-9a-f]{64}( [\d.]+s)? done$", text, re.M)
    assert re.search(r" pushing layers( [\d.]+s)? done$", text, re.M), err
    pushed = rf" pushing manifest for {re.escape(name)}@sha256:[0-9a-f]{{64}}( [\d.]+s)? done$"
    assert re.search(pushed, text, re.M), err
    assert f"pushing {name}\n" not in err  # no separate push vertex any more


def test_local_and_tar_exports_show_buildkits_statuses(bk: Any, tmp_path: Path) -> None:
    err = _plain(bk, f"type=local,dest={tmp_path / 'out'}")
    assert (tmp_path / "out" / "hello.txt").stat().st_size == 353
    lines = _vertex_lines(err, "exporting to client directory")
    assert any(re.search(r" copying files 353B( [\d.]+s)? done$", ln) for ln in lines), err
    err = _plain(bk, f"type=tar,dest={tmp_path / 'out.tar'}")
    lines = _vertex_lines(err, "exporting to client tarball")
    assert any(re.search(r" sending tarball( [\d.]+s)? done$", ln) for ln in lines), err


def test_du_verbose_prints_usage_counts(bk: Any, tmp_path: Path) -> None:
    seed = llb.scratch().file(llb.mkfile("/seed.txt", 0o644, b"seed\n"))
    for n in range(2):  # the seed snapshot is the base of each build's next step
        step = seed.file(llb.mkfile(f"/step{n}.txt", 0o644, b"%d\n" % n))
        bk.build(step, out=tmp_path / f"out{n}")
    proc = subprocess.run(
        [*bk.cli(), "du", "-v"], capture_output=True, text=True, timeout=60, check=True
    )
    counts = [int(c) for c in re.findall(r"^Usage count: +(\d+)$", proc.stdout, re.M)]
    assert counts and max(counts) >= 2, proc.stdout


def test_missing_secret_is_worded_as_buildkitd(bk: Any, tmp_path: Path) -> None:
    # buildkitd v0.11.6 (buildctl, RUN --mount=type=secret,id=x,required): "secret x: not found"
    step = bk.base().sh("cat /run/secrets/x", mounts=[llb.secret("/run/secrets/x", id="x")])
    argv = bk.argv(progress="plain", out=tmp_path / "out")
    proc = subprocess.run(
        argv, input=bk.definition(step), capture_output=True, timeout=180, cwd=bk.tmp
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0
    assert "secret x: not found" in err, err
