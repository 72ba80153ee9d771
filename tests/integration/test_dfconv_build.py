"""The Dockerfile converter end to end: ``bkcore build --frontend dockerfile.v0`` against a
real docker-registry with deterministic busybox images, real runc, local and OCI exports.

Covers what the converter decides: stages as a graph and targets, ARG scoping and platform
ARGs (a cross-platform build whose final stage only copies), ONBUILD triggers from a base
image's config, named contexts replacing images, and the image config it hands the exporter.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


class DfBuild:
    def __init__(self, tmp: Path, registry: Any, images: Any, bkcli: Any) -> None:
        self.tmp = tmp
        self.bkcli = bkcli
        self.registry = registry
        self.images = images
        self.count = 0

    def push_busybox(self, name: str, **config: Any) -> str:
        image = self.images.busybox_image(None, config=config or None, history=True)
        ref: str = self.images.push(self.registry, name, image)
        return ref

    def run(
        self,
        dockerfile: str,
        files: dict[str, str] | None = None,
        *opts: str,
        output: str = "local",
    ) -> tuple[subprocess.CompletedProcess[str], Path]:
        self.count += 1
        ctx = self.tmp / f"ctx{self.count}"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(dockerfile)
        for name, text in (files or {}).items():
            (ctx / name).write_text(text)
        dest = self.tmp / f"out{self.count}"
        out = f"type=local,dest={dest}" if output == "local" else f"type=oci,dest={dest}.tar"
        argv = [
            *self.bkcli(self.tmp / "root"), "build",
            "--frontend", "dockerfile.v0", "--local", f"context={ctx}",
            "--local", f"dockerfile={ctx}", *opts, "--output", out,
        ]  # fmt: skip
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, check=False, cwd=self.tmp
        )
        return proc, dest

    def ok(self, dockerfile: str, files: dict[str, str] | None = None, *opts: str) -> Path:
        proc, dest = self.run(dockerfile, files, *opts)
        assert proc.returncode == 0, proc.stderr
        return dest

    def config(self, dockerfile: str, *opts: str) -> dict[str, Any]:
        proc, dest = self.run(dockerfile, None, *opts, output="oci")
        assert proc.returncode == 0, proc.stderr
        with tarfile.open(f"{dest}.tar") as tar:

            def blob(digest: str) -> Any:
                f = tar.extractfile("blobs/sha256/" + digest.split(":", 1)[1])
                assert f is not None
                return json.loads(f.read())

            f = tar.extractfile("index.json")
            assert f is not None
            index = json.loads(f.read())
            manifest = blob(index["manifests"][0]["digest"])
            config: dict[str, Any] = blob(manifest["config"]["digest"])
            config["_layers"] = len(manifest["layers"])
            return config


@pytest.fixture
def df(tmp_path: Path, registry: Any, images: Any, busybox_rootfs: Path, bkcli: Any) -> DfBuild:
    if os.geteuid() != 0:
        pytest.skip("runc builds need root")
    return DfBuild(tmp_path, registry, images, bkcli)


GRAPH = """\
ARG BASE
FROM ${BASE} AS base
ARG GREETING=hello
ENV FROM_BASE=yes
RUN echo "$GREETING" > /greeting

FROM base AS unused
RUN exit 7

FROM base AS Left
WORKDIR work
RUN echo left > left.txt

FROM base AS right
ARG GREETING
RUN echo "right $GREETING ${FROM_BASE}" > /right.txt

FROM scratch
COPY --from=left /work/left.txt /out/
COPY --from=RIGHT /right.txt /greeting /out/
COPY --from=0 /greeting /out/again
"""


def test_stage_graph_target_and_arg_scoping(df: DfBuild) -> None:
    base = df.push_busybox("busybox:latest")
    dest = df.ok(GRAPH, None, "--opt", f"build-arg:BASE={base}", "--opt", "build-arg:GREETING=hi")
    out = dest / "out"
    assert sorted(p.name for p in out.iterdir()) == ["again", "greeting", "left.txt", "right.txt"]
    assert (out / "left.txt").read_text() == "left\n"
    # ARG GREETING redeclared without a value in a child stage gets the build arg; ENV inherited
    assert (out / "right.txt").read_text() == "right hi yes\n"
    assert (out / "greeting").read_text() == "hi\n"

    # an early target; names are case-insensitive; the failing unused stage never runs
    dest = df.ok(GRAPH, None, "--opt", f"build-arg:BASE={base}", "--opt", "target=LEFT")
    assert (dest / "work" / "left.txt").read_text() == "left\n"
    assert (dest / "greeting").read_text() == "hello\n"
    assert not (dest / "out").exists()


def test_unknown_target_fails_and_leaves_the_output_untouched(df: DfBuild) -> None:
    base = df.push_busybox("busybox:latest")
    proc, dest = df.run(GRAPH, None, "--opt", f"build-arg:BASE={base}", "--opt", "target=nope")
    assert proc.returncode == 1
    assert "target stage nope could not be found" in proc.stderr
    assert not dest.exists()


def test_image_config_from_base_and_dockerfile(df: DfBuild) -> None:
    base = df.push_busybox(
        "configured:1", Env=["PATH=/bin", "FROM_IMAGE=1"], Entrypoint=["/bin/sh"], User="bkuser"
    )
    dockerfile = (
        "ARG BASE\nFROM ${BASE}\nUSER root\nENV EXTRA=2\nLABEL a=b\nEXPOSE 80 53/udp\n"
        'WORKDIR /srv/app\nENTRYPOINT ["/bin/echo"]\nCMD echo hi\nVOLUME /data\n'
        "STOPSIGNAL SIGTERM\nHEALTHCHECK --interval=5s CMD true\nONBUILD RUN true\n"
    )
    cfg = df.config(dockerfile, "--opt", f"build-arg:BASE={base}", "--opt", "label:opt=1")
    c = cfg["config"]
    assert c["Env"] == ["PATH=/bin", "FROM_IMAGE=1", "EXTRA=2"]
    assert c["User"] == "root" and c["WorkingDir"] == "/srv/app"
    assert c["Entrypoint"] == ["/bin/echo"] and c["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert c["Labels"] == {"a": "b", "opt": "1"}
    assert c["ExposedPorts"] == {"53/udp": {}, "80/tcp": {}}
    assert c["Volumes"] == {"/data": {}} and c["StopSignal"] == "SIGTERM"
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000}
    assert c["OnBuild"] == ["RUN true"]
    created_by = [h["created_by"] for h in cfg["history"]]
    assert created_by[-6:] == [
        "WORKDIR /srv/app",
        'ENTRYPOINT ["/bin/echo"]',
        'CMD ["/bin/sh" "-c" "echo hi"]',
        "VOLUME [/data]",
        "STOPSIGNAL SIGTERM",
        'HEALTHCHECK &{["CMD-SHELL" "true"] "5s" "0s" "0s" \'\\x00\'}',
    ]
    # base layer + the WORKDIR mkdir layer
    assert cfg["_layers"] == 2


def test_onbuild_triggers_of_the_base_image_run_first(df: DfBuild) -> None:
    base = df.push_busybox(
        "trigger:1",
        OnBuild=["ENV TRIGGERED=yes", "RUN echo from-trigger > /trigger.txt"],
    )
    dest = df.ok(
        "ARG BASE\nFROM ${BASE}\nRUN cat /trigger.txt > /seen && echo $TRIGGERED >> /seen\n",
        None,
        "--opt",
        f"build-arg:BASE={base}",
    )
    assert (dest / "seen").read_text() == "from-trigger\nyes\n"


def test_buildplatform_stage_and_cross_target_platform(df: DfBuild) -> None:
    from bkcore.llb.platforms import Platform

    host = str(Platform.host())
    other = "linux/arm64" if Platform.host().architecture != "arm64" else "linux/amd64"
    images = df.images.multiplatform_images((host, other))
    ref, _ = df.images.push_index(df.registry, "multi:1", images)
    dockerfile = (
        "ARG BASE\n"
        "FROM --platform=$BUILDPLATFORM ${BASE} AS build\n"
        "ARG TARGETPLATFORM\nARG TARGETARCH\nARG BUILDPLATFORM\n"
        'RUN echo "$BUILDPLATFORM->$TARGETPLATFORM $TARGETARCH" > /built\n'
        "FROM ${BASE}\n"
        "COPY --from=build /built /built\n"
    )
    dest = df.ok(dockerfile, None, "--opt", f"build-arg:BASE={ref}", "--opt", f"platform={other}")
    arch = other.split("/")[1]
    assert (dest / "built").read_text() == f"{host}->{other} {arch}\n"
    # the final stage is the target platform's image
    assert (dest / "etc" / "arch").read_text() == other
    cfg = df.config(dockerfile, "--opt", f"build-arg:BASE={ref}", "--opt", f"platform={other}")
    assert (cfg["os"], cfg["architecture"]) == ("linux", arch)


def test_named_context_replaces_the_base_image(df: DfBuild) -> None:
    real = df.push_busybox("real:1", Env=["PATH=/bin", "WHICH=real"])
    dockerfile = "FROM real-image AS base\nRUN echo $WHICH > /which\n"
    dest = df.ok(
        dockerfile,
        None,
        "--opt",
        f"context:real-image=docker-image://{real}",
    )
    assert (dest / "which").read_text() == "real\n"


def test_dockerfile_errors_name_the_line(df: DfBuild) -> None:
    base = df.push_busybox("busybox:latest")
    proc, dest = df.run(
        "ARG BASE\nFROM ${BASE}\nENV A=1\nSTOPSIGNAL NOPE\n",
        None,
        "--opt",
        f"build-arg:BASE={base}",
    )
    assert proc.returncode == 1
    assert "Dockerfile:4" in proc.stderr and "Invalid signal: NOPE" in proc.stderr
    assert not dest.exists()
