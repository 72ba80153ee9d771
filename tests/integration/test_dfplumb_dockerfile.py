"""dockerfile.v0 through the CLI forms, end to end, without a registry.

Bases are ``scratch`` or the busybox rootfs given as a named context
(``--opt context:base=local:rootfs`` with ``--local rootfs=DIR``), so these tests exercise the
plumbing (reading the Dockerfile and ignore files through the session, options, errors,
warnings, metadata) rather than image pulls (the conformance suite covers those).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

META_PLUGIN = textwrap.dedent(
    """
    import json

    from bkcore.hookspecs import hookimpl


    class MetaExporter:
        async def export(self, ctx, result, attrs):
            doc = {
                "metadata": {k: v.decode() for k, v in ctx.metadata.items()},
                "refs": sorted(ctx.refs),
                "result": result is not None,
            }
            with open(attrs["dest"], "w") as f:
                json.dump(doc, f)
            return {}


    @hookimpl
    def bkcore_register_exporters(registry):
        registry.add("metadump", "bkt_meta:MetaExporter")
    """
)


class Cli:
    def __init__(self, tmp: Path, rootfs: Path, bkcli: Any) -> None:
        self.tmp = tmp
        self.bkcli = bkcli
        self.rootfs = rootfs
        plug = tmp / "plug"
        plug.mkdir()
        (plug / "bkt_meta.py").write_text(META_PLUGIN)
        self.env = {**os.environ, "PYTHONPATH": str(plug)}

    def build(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        argv = [
            *self.bkcli(self.tmp / "root", plugins=["bkt_meta"], env=self.env),
            "build", "--progress", "rawjson", *args,
        ]  # fmt: skip
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
            check=False,
            cwd=cwd or self.tmp,
        )

    def with_base(self) -> list[str]:
        return ["--local", f"rootfs={self.rootfs}", "--opt", "context:base=local:rootfs"]


@pytest.fixture
def cli(tmp_path: Path, busybox_rootfs: Path, bkcli: Any) -> Cli:
    return Cli(tmp_path, busybox_rootfs, bkcli)


def text_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if not ln.startswith("{")]


def warnings_of(stderr: str) -> list[str]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            for w in json.loads(line).get("warnings", []):
                out.append(base64.b64decode(w["short"]).decode())
    return out


def tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = "/" + str(path.relative_to(root))
        out[rel] = "<dir>" if path.is_dir() else path.read_text()
    return out


def test_short_form_with_dockerfile_elsewhere_and_its_own_ignore_file(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    (ctx / "sub").mkdir(parents=True)
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        (ctx / name).write_text(name)
    (ctx / ".dockerignore").write_text("a.txt\n")  # not used: the Dockerfile has its own
    files = cli.tmp / "files"
    files.mkdir()
    (files / "app.Dockerfile").write_text(
        "FROM scratch AS first\nARG MSG=default\nCOPY . /all/\n"
        "FROM scratch AS final\nCOPY --from=first /all /copied\n"
    )
    (files / "app.Dockerfile.dockerignore").write_text("# comment\n/b.txt\n")
    out = cli.tmp / "out"
    proc = cli.build(
        "-f", str(files / "app.Dockerfile"), "--target", "FIRST", "--build-arg", "MSG=x",
        "-o", str(out), str(ctx),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree(out) == {
        "/all": "<dir>",
        "/all/.dockerignore": "a.txt\n",
        "/all/a.txt": "a.txt",
        "/all/sub": "<dir>",
        "/all/sub/c.txt": "sub/c.txt",
    }


def test_context_dockerignore_applies_to_the_buildctl_form(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    (ctx / "logs" / "deep").mkdir(parents=True)
    (ctx / "keep.txt").write_text("k")
    (ctx / "logs" / "x.log").write_text("x")
    (ctx / "logs" / "deep" / "keep.log").write_text("y")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (ctx / ".dockerignore").write_text("logs/**\n!logs/deep/keep.log\nDockerfile\n.dockerignore\n")
    out = cli.tmp / "out"
    proc = cli.build(
        "--frontend", "dockerfile.v0", "--local", f"context={ctx}", "--local",
        f"dockerfile={ctx}", "--output", f"type=local,dest={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree(out) == {
        "/keep.txt": "k",
        "/logs": "<dir>",
        "/logs/deep": "<dir>",
        "/logs/deep/keep.log": "y",
    }


def test_options_reach_the_image_config(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "Build.df").write_text(
        'FROM base\nARG V\nENV V=${V}\nLABEL from.file="yes"\nRUN echo "$V" > /v.txt\n'
    )
    dump = cli.tmp / "meta.json"
    proc = cli.build(
        "--frontend", "dockerfile.v0", "--local", f"context={ctx}",
        "--local", f"dockerfile={ctx}", "--opt", "filename=Build.df",
        "--opt", "build-arg:V=hello", "--opt", "label:from.opt=1",
        "--opt", "build-arg:SOURCE_DATE_EPOCH=1700000000",
        *cli.with_base(), "--output", f"type=metadump,dest={dump}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(dump.read_text())
    assert doc["result"] is True and doc["refs"] == []
    assert doc["metadata"]["source.date.epoch"] == "1700000000"
    config = json.loads(doc["metadata"]["containerimage.config"])
    assert "V=hello" in config["config"]["Env"]
    assert config["config"]["Labels"] == {"from.file": "yes", "from.opt": "1"}


def test_several_platforms_give_refs_and_configs_per_platform(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nARG TARGETARCH\nENV ARCH=$TARGETARCH\n")
    dump = cli.tmp / "meta.json"
    proc = cli.build(
        "--platform", "linux/amd64,linux/arm64", "-o", f"type=metadump,dest={dump}", str(ctx)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(dump.read_text())
    assert doc["refs"] == ["linux/amd64", "linux/arm64"]
    meta = doc["metadata"]
    assert json.loads(meta["refs.platforms"]) == {
        "Platforms": [
            {"ID": "linux/amd64", "Platform": {"architecture": "amd64", "os": "linux"}},
            {"ID": "linux/arm64", "Platform": {"architecture": "arm64", "os": "linux"}},
        ]
    }
    for arch in ("amd64", "arm64"):
        config = json.loads(meta[f"containerimage.config/linux/{arch}"])
        assert config["architecture"] == arch
        assert f"ARCH={arch}" in config["config"]["Env"]


def test_failing_run_names_the_line_and_leaves_the_output_alone(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base\nRUN echo ok\nRUN exit 7\nRUN echo never\n")
    out = cli.tmp / "out"
    out.mkdir()
    (out / "old").write_text("old")
    proc = cli.build(*cli.with_base(), "-o", str(out), str(ctx))
    assert proc.returncode == 1
    lines = text_lines(proc.stderr)
    # The step number is the converter's business; the line and the command are ours.
    assert re.fullmatch(
        r'error: Dockerfile:3: \[\d/4\] RUN exit 7: process "/bin/sh -c exit 7" did not '
        r"complete successfully: exit code: 7",
        lines[0],
    ), lines[0]
    assert lines[1:] == [
        "Dockerfile:3",
        "--------------------",
        " 1 |     FROM base",
        " 2 |     RUN echo ok",
        " 3 | >>> RUN exit 7",
        " 4 |     RUN echo never",
        "--------------------",
    ]
    assert [p.name for p in out.iterdir()] == ["old"]


def test_parse_error_names_the_line(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nFORM x\n")
    proc = cli.build(str(ctx))
    assert proc.returncode == 1
    lines = text_lines(proc.stderr)
    assert lines[0].startswith("error: Dockerfile:2: ")
    assert "FORM" in lines[0]
    assert " 2 | >>> FORM x" in lines


def test_missing_dockerfile_is_a_clear_error(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    proc = cli.build(str(ctx))
    assert proc.returncode == 1
    assert text_lines(proc.stderr) == [
        "error: failed to read dockerfile: open Dockerfile: no such file or directory"
    ]


def test_lowercase_dockerfile_is_found(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "dockerfile").write_text("FROM scratch\nCOPY dockerfile /got\n")
    out = cli.tmp / "out"
    proc = cli.build("-o", str(out), str(ctx))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "got").read_text().startswith("FROM scratch")


def test_warnings_are_progress_warnings(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "# syntax=docker/dockerfile:1.5\nFROM scratch AS one\nENV A=1\n"
    )
    proc = cli.build(str(ctx))
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = warnings_of(proc.stderr)
    assert any("ignoring syntax directive 'docker/dockerfile:1.5'" in w for w in warnings), warnings


def test_short_form_tags_and_pushes(cli: Cli, registry: Any) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("hi")
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY hello.txt /\nCMD ["/hello"]\n')
    refs = [f"{registry.host}/plumb/app:1", f"{registry.host}/plumb/app:latest"]
    proc = cli.build("-t", refs[0], "-t", refs[1], "--push", str(ctx))
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = set()
    for tag in ("1", "latest"):
        req = urllib.request.Request(
            f"http://{registry.host}/v2/plumb/app/manifests/{tag}",
            headers={
                "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                "application/vnd.oci.image.manifest.v1+json"
            },
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            manifest = json.loads(resp.read())
            digests.add(resp.headers["Docker-Content-Digest"])
        config_digest = manifest["config"]["digest"]
        with urllib.request.urlopen(
            f"http://{registry.host}/v2/plumb/app/blobs/{config_digest}", timeout=10
        ) as resp:
            config = json.loads(resp.read())
        assert config["config"]["Cmd"] == ["/hello"]
        assert len(manifest["layers"]) == 1
    assert len(digests) == 1  # both tags name one image


def test_buildctl_form_without_the_dockerfile_local(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    proc = cli.build("--frontend", "dockerfile.v0", "--local", f"context={ctx}")
    assert proc.returncode == 1
    lines = text_lines(proc.stderr)
    assert lines[-1].startswith("error: failed to read dockerfile: ")
    assert 'no access allowed to dir "dockerfile"' in lines[-1]


def test_a_warning_is_given_once_for_several_platforms(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch as one\nENV A=1\n")
    proc = cli.build("--platform", "linux/amd64,linux/arm64", str(ctx))
    assert proc.returncode == 0, proc.stderr[-3000:]
    casing = [w for w in warnings_of(proc.stderr) if "casing" in w]
    assert casing == ["line 1: 'as' and 'FROM' keywords' casing do not match"]


def test_buildctl_form_without_the_context_local(cli: Cli) -> None:
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    proc = cli.build("--frontend", "dockerfile.v0", "--local", f"dockerfile={ctx}")
    assert proc.returncode == 1
    lines = text_lines(proc.stderr)
    assert lines[-1].startswith("error: failed to read .dockerignore: ")
    assert 'no access allowed to dir "context"' in lines[-1]


def test_oci_layout_named_context_resolves_through_the_bridge(cli: Cli) -> None:
    repo = Path(__file__).resolve().parents[2]
    layout = cli.tmp / "layout"
    made = subprocess.run(
        [sys.executable, str(repo / "tests/conformance/make_base.py"), "--no-push",
         "--layout", str(layout)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    ctx = cli.tmp / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text('FROM base\nRUN echo "$PATH" > /path.txt\n')
    out = cli.tmp / "out"
    proc = cli.build(
        "--oci-layout", f"store={layout}",
        "--opt", f"context:base=oci-layout://store@{digest}",
        "-o", str(out), str(ctx),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The PATH comes from the layout image's config, read through the bridge.
    assert (out / "path.txt").read_text() == (
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    )
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("{"):
            names.update(v["name"] for v in json.loads(line).get("vertexes", []))
    assert any(n.startswith("[internal] load metadata for ") and digest in n for n in names)
