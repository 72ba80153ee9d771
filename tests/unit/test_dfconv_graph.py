"""Dockerfile converter: stages as a graph, targets, base images, platforms, named contexts,
ARG scoping and errors (dockerfile_to_llb with a fake Bridge; no solver, no registry)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import betterproto
import pytest

from bkcore import llb
from bkcore.errors import FrontendError, SourceError
from bkcore.frontend import BuildResult
from bkcore.frontends.dockerfile.convert import ConvertOptions, ConvertResult, dockerfile_to_llb
from bkcore.llb import pb

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DIGEST = "sha256:19d8ea11e2406270ad7f026c84d875d4178da57f645543ed5617232693aec620"


def image_config(**config: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"Env": [f"PATH={PATH}"]}
    cfg.update(config)
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]},
        "history": [{"created": "2000-01-01T00:00:00Z", "created_by": "base"}],
    }


class FakeBridge:
    """Answers resolve_image_config from ``images`` (normalised ref -> config dict) and
    records every call; unknown refs fail like the image source does."""

    def __init__(self, images: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.images = dict(images or {})
        self.calls: list[tuple[str, str | None, str]] = []

    async def resolve_image_config(
        self, ref: str, *, platform: str | None = None, resolve_mode: str = "default"
    ) -> tuple[str, bytes]:
        self.calls.append((ref, platform, resolve_mode))
        cfg = self.images.get(ref)
        if cfg is None:
            raise SourceError(f"{ref}: not found")
        return DIGEST, json.dumps(cfg).encode()

    async def solve(self, definition: Any = None, **kw: Any) -> BuildResult:
        return BuildResult()

    async def read_file(self, ref: Any, path: str, **kw: Any) -> bytes:
        raise FileNotFoundError(path)

    def warn(self, vertex: str, short: str, **kw: Any) -> None:
        return None


BUSYBOX = "docker.io/library/busybox:latest"


def convert(
    dockerfile: str, bridge: FakeBridge | None = None, **kw: Any
) -> tuple[ConvertResult, FakeBridge]:
    bridge = bridge or FakeBridge({BUSYBOX: image_config()})
    kw.setdefault("build_platforms", ["linux/amd64"])
    kw.setdefault("session_id", "sess")
    res = asyncio.run(dockerfile_to_llb(dockerfile.encode(), ConvertOptions(**kw), bridge))
    return res, bridge


class Op:
    def __init__(self, digest: str, op: pb.Op, md: pb.OpMetadata) -> None:
        self.digest = digest
        self.op = op
        self.kind, self.body = betterproto.which_one_of(op, "op")
        self.md = md
        self.name = md.description.get(llb.CUSTOM_NAME, "")


def ops(res: ConvertResult) -> list[Op]:
    defn = res.state.marshal(platform=res.platform)
    return [
        Op(dg, pb.Op().parse(raw), defn.metadata.get(dg, pb.OpMetadata()))
        for dg, raw in zip(defn.digests[:-1], defn.ops[:-1], strict=True)
    ]


def names(res: ConvertResult) -> list[str]:
    return [o.name for o in ops(res)]


def execs(res: ConvertResult) -> list[pb.ExecOp]:
    return [o.body for o in ops(res) if o.kind == "exec"]


# ------------------------------------------------------------------ BuildKit's own LLB
def test_v7_captured_frontend_definition_is_reproduced_exactly() -> None:
    v7 = json.loads((VECTORS / "v7_frontend_captured.json").read_text())
    df = (
        "FROM 127.0.0.1:5000/busybox:latest\n"
        "RUN echo to-stdout && echo to-stderr >&2 \\\n\n  && true\nRUN exit 3\n"
    )
    bridge = FakeBridge({"127.0.0.1:5000/busybox:latest": image_config()})
    res, _ = convert(df, bridge)
    defn = res.definition()
    assert list(defn.digests) == [o["digest"] for o in v7["ops"]]
    for want in v7["dump_llb"]:
        got = defn.metadata[want["Digest"]]
        assert dict(got.description) == want["OpMetadata"].get("description", {})
        assert dict(got.caps) == want["OpMetadata"]["caps"]
    assert res.warnings and "Empty continuation line" in res.warnings[0]


def test_v6_dockerfile_with_workdir_copy_and_context_is_reproduced_exactly() -> None:
    v6 = json.loads((VECTORS / "v6_dockerfile.json").read_text())
    df = (
        "FROM 127.0.0.1:5000/busybox:latest\nWORKDIR /app\nCOPY hello.txt .\n"
        "RUN --mount=type=cache,target=/cache echo built > /app/built.txt\n"
    )
    bridge = FakeBridge({"127.0.0.1:5000/busybox:latest": image_config()})
    res, _ = convert(df, bridge, session_id="vectorsession00000000000000")
    defn = res.state.marshal(platform=res.platform)
    # the build context (followpaths ["hello.txt"]) is only known after dispatch
    assert list(defn.digests) == [o["digest"] for o in v6["ops"]]
    assert names(res)[:3] == [
        "[1/4] FROM 127.0.0.1:5000/busybox:latest@" + DIGEST,
        "[2/4] WORKDIR /app",
        "[internal] load build context",
    ]


# ------------------------------------------------------------------ stages and targets
DIAMOND = """\
FROM busybox AS base
RUN echo base
FROM base AS left
RUN echo left
FROM base AS right
RUN echo right
FROM nosuchimage:1 AS unused
RUN exit 1
FROM base
COPY --from=left /l /l
COPY --from=RIGHT /r /r
"""


def test_only_stages_the_target_needs_are_resolved_and_built() -> None:
    res, bridge = convert(DIAMOND)
    assert [c[0] for c in bridge.calls] == [BUSYBOX]  # the unused image is never resolved
    cmds = [list(e.meta.args) for e in execs(res)]
    assert ["/bin/sh", "-c", "exit 1"] not in cmds
    assert {c[-1] for c in cmds} == {"echo base", "echo left", "echo right"}
    assert "[stage-4 1/2] COPY --from=left /l /l" in names(res)


def test_target_selects_a_stage_case_insensitively_and_unknown_target_fails() -> None:
    res, _ = convert(DIAMOND, target="LEFT")
    assert [e.meta.args[-1] for e in execs(res)] == ["echo base", "echo left"]
    with pytest.raises(FrontendError, match="target stage nope could not be found"):
        convert(DIAMOND, target="nope")


def test_stage_index_in_copy_from_and_out_of_range_index() -> None:
    res, _ = convert("FROM busybox\nRUN echo zero\nFROM scratch\nCOPY --from=0 /a /a\n")
    assert [e.meta.args[-1] for e in execs(res)] == ["echo zero"]
    with pytest.raises(FrontendError, match="invalid stage index 5") as exc:
        convert("FROM busybox AS a\nFROM busybox\nCOPY --from=5 /x /\n")
    assert exc.value.line == 3


def test_circular_stage_references_fail() -> None:
    df = "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n"
    with pytest.raises(FrontendError, match="circular dependency detected on stage: a"):
        convert(df)
    with pytest.raises(FrontendError, match="circular dependency detected on stage: self"):
        convert("FROM busybox AS ok\nFROM busybox AS self\nCOPY --from=self /x /x\n")


def test_long_stage_chains_convert_without_recursion_limits() -> None:
    n = 1100  # deeper than Python's default recursion limit
    parts = ["FROM busybox AS s0\n"]
    for i in range(1, n):
        parts.append(f"FROM busybox AS s{i}\nCOPY --from=s{i - 1} /x /x\n")
    res, bridge = convert("".join(parts))
    assert len(bridge.calls) == 1 and res.state.output is not None  # one image, resolved once
    # the same chain closed into a cycle is found, however long the path
    parts[0] = f"FROM busybox AS s0\nCOPY --from=s{n - 1} /y /y\n"
    with pytest.raises(FrontendError, match="circular dependency detected on stage: s0"):
        convert("".join(parts))


def test_from_unknown_stage_name_is_an_image_and_copy_from_image_is_resolved() -> None:
    bridge = FakeBridge(
        {
            BUSYBOX: image_config(),
            "docker.io/library/alpine:3": image_config(WorkingDir="/root"),
        }
    )
    res, bridge = convert("FROM busybox\nCOPY --from=alpine:3 /etc/os-release /\n", bridge)
    assert sorted(c[0] for c in bridge.calls) == ["docker.io/library/alpine:3", BUSYBOX]
    sources = [o.body.identifier for o in ops(res) if o.kind == "source"]
    assert "docker-image://docker.io/library/alpine:3@" + DIGEST in sources


def test_base_image_config_errors_name_the_from_line() -> None:
    with pytest.raises(FrontendError) as exc:
        convert("FROM busybox\nRUN true\nFROM missing:1\nRUN true\n")
    assert exc.value.line == 3
    assert "missing:1" in str(exc.value)


def test_blank_base_name_after_arg_fails_with_the_line() -> None:
    with pytest.raises(FrontendError, match=r"base name \(\$\{IMG\}\) should not be blank") as e:
        convert("ARG IMG\nFROM ${IMG}\nRUN true\n")
    assert e.value.line == 2


def test_image_resolution_of_stages_runs_concurrently() -> None:
    started: list[str] = []
    both = asyncio.Event()

    class Barrier(FakeBridge):
        async def resolve_image_config(
            self, ref: str, *, platform: str | None = None, resolve_mode: str = "default"
        ) -> tuple[str, bytes]:
            started.append(ref)
            if len(started) == 2:
                both.set()
            # a sequential converter would wait here forever for the second call
            await asyncio.wait_for(both.wait(), 30)
            return await super().resolve_image_config(
                ref, platform=platform, resolve_mode=resolve_mode
            )

    bridge = Barrier({BUSYBOX: image_config(), "docker.io/library/alpine:latest": image_config()})
    convert("FROM busybox AS a\nFROM alpine\nCOPY --from=a /x /x\n", bridge)
    assert sorted(started) == ["docker.io/library/alpine:latest", BUSYBOX]


def test_scratch_stage_has_the_empty_image_config_and_no_resolution() -> None:
    res, bridge = convert("FROM scratch\nENV A=1\n")
    assert bridge.calls == []
    assert res.image["config"]["Env"] == [f"PATH={PATH}", "A=1"]
    assert res.image["config"]["WorkingDir"] == "/"
    assert res.image["rootfs"] == {"type": "layers", "diff_ids": None}
    assert res.state.output is None


def test_image_resolve_mode_reaches_the_resolver_and_the_source() -> None:
    res, bridge = convert("FROM busybox\nRUN true\n", image_resolve_mode="pull")
    assert bridge.calls == [(BUSYBOX, "linux/amd64", "pull")]
    src = next(o for o in ops(res) if o.kind == "source")
    assert src.body.attrs["image.resolvemode"] == "pull"


def test_no_cache_for_listed_stages_only() -> None:
    df = "FROM busybox AS a\nRUN echo a\nFROM a AS b\nRUN echo b\n"
    res, _ = convert(df, ignore_cache=frozenset({"B"}))
    flags = {o.body.meta.args[-1]: o.md.ignore_cache for o in ops(res) if o.kind == "exec"}
    assert flags == {"echo a": False, "echo b": True}
    res, _ = convert(df, ignore_cache=True)
    assert all(o.md.ignore_cache for o in ops(res) if o.kind == "exec")


# ------------------------------------------------------------------ platforms and ARGs
def test_from_platform_buildplatform_and_automatic_platform_args() -> None:
    df = (
        "ARG BASE=busybox\n"
        "FROM --platform=$BUILDPLATFORM ${BASE} AS build\n"
        "ARG TARGETARCH\nARG BUILDOS\n"
        "RUN echo $TARGETARCH $BUILDOS\n"
        "FROM ${BASE}\nCOPY --from=build /x /x\nRUN echo ${TARGETARCH:-none}\n"
    )
    res, bridge = convert(df, target_platform="linux/arm64", build_platforms=["linux/amd64"])
    assert sorted(bridge.calls) == [
        (BUSYBOX, "linux/amd64", "default"),
        (BUSYBOX, "linux/arm64", "default"),
    ]
    by_cmd = {e.meta.args[-1]: e for e in execs(res)}
    build_env = list(by_cmd["echo $TARGETARCH $BUILDOS"].meta.env)
    assert "TARGETARCH=arm64" in build_env and "BUILDOS=linux" in build_env
    # not declared in the second stage: not in its environment
    assert not any(e.startswith("TARGETARCH=") for e in by_cmd["echo ${TARGETARCH:-none}"].meta.env)
    plats = {
        o.body.meta.args[-1]: (o.op.platform.architecture) for o in ops(res) if o.kind == "exec"
    }
    assert plats == {"echo $TARGETARCH $BUILDOS": "amd64", "echo ${TARGETARCH:-none}": "arm64"}
    assert res.image["architecture"] == "arm64"
    assert res.platform == llb.Platform("linux", "arm64")


def test_arg_scoping_global_default_build_arg_and_redeclaration() -> None:
    df = (
        "ARG G=global\n"
        "FROM busybox AS one\n"
        "RUN echo one-$G\n"
        "ARG G\n"
        "ARG L=local-${G}\n"
        "RUN echo two\n"
        "FROM one\n"
        "ARG G\n"
        "RUN echo three\n"
    )
    res, _ = convert(df, build_args={"L": "from-cli"})
    env = {e.meta.args[-1]: list(e.meta.env) for e in execs(res)}
    assert not any(x.startswith("G=") for x in env["echo one-$G"])
    assert "G=global" in env["echo two"] and "L=from-cli" in env["echo two"]
    # ARG values stay in the state of a child stage; ARG G again gives the global default
    assert "L=from-cli" in env["echo three"] and "G=global" in env["echo three"]
    assert not any(e.startswith(("G=", "L=")) for e in res.image["config"]["Env"])


def test_arg_default_substitutes_earlier_args_and_env() -> None:
    df = "FROM busybox\nENV E=env\nARG A=a\nARG B=${A}-${E}\nRUN echo x\n"
    res, _ = convert(df)
    assert "B=a-env" in execs(res)[0].meta.env


def test_unused_build_args_warn_and_proxy_args_do_not() -> None:
    warned: list[tuple[str, int]] = []
    res, _ = convert(
        "ARG USED\nFROM busybox\nARG LOCAL\nRUN true\n",
        build_args={"USED": "1", "LOCAL": "2", "EXTRA": "3", "HTTP_PROXY": "http://p"},
        warn=lambda m, ln: warned.append((m, ln)),
    )
    assert warned == [("One or more build-args [EXTRA] were not consumed", 0)]
    ex = execs(res)[0]
    assert ex.meta.proxy_env.http_proxy == "http://p"
    assert not any(e.startswith("HTTP_PROXY=") for e in ex.meta.env)


# ------------------------------------------------------------------ named contexts
def test_named_context_docker_image_replaces_a_stage_and_an_image() -> None:
    bridge = FakeBridge(
        {
            BUSYBOX: image_config(),
            "docker.io/library/alpine:latest": image_config(User="guest"),
        }
    )
    df = "FROM busybox AS base\nRUN echo never\nFROM base\nRUN echo child\n"
    res, bridge = convert(df, bridge, named_contexts={"base": "docker-image://alpine"})
    assert [c[0] for c in bridge.calls] == ["docker.io/library/alpine:latest"]
    assert [e.meta.args[-1] for e in execs(res)] == ["echo child"]
    assert execs(res)[0].meta.user == "guest"
    assert "[context base] alpine" in names(res)

    res, bridge = convert(
        "FROM busybox\nRUN echo x\n",
        FakeBridge({BUSYBOX: image_config()}),
        named_contexts={"busybox": "docker-image://scratch"},
    )
    assert bridge.calls == []
    assert not [o for o in ops(res) if o.kind == "source"]


def test_named_context_for_a_platform_wins_and_local_and_input_contexts() -> None:
    res, _ = convert(
        "FROM busybox\nCOPY --from=src /f /f\n",
        named_contexts={"src": "local:other", "src::linux/amd64": "local:plat"},
    )
    locals_ = [o.body.identifier for o in ops(res) if o.kind == "source"]
    assert "local://plat" in locals_ and "local://other" not in locals_

    inp = llb.image("busybox")
    res, _ = convert(
        "FROM dep\nRUN echo x\n",
        named_contexts={"dep": "input:in1"},
        inputs={"in1": inp},
        input_configs={"in1": json.dumps(image_config(User="u1")).encode()},
    )
    assert execs(res)[0].meta.user == "u1"
    with pytest.raises(FrontendError, match="unsupported context source bogus"):
        convert("FROM busybox AS x\nFROM x\n", named_contexts={"x": "bogus:y"})


# ------------------------------------------------------------------ errors
def test_parse_errors_carry_the_filename_and_line() -> None:
    with pytest.raises(FrontendError) as exc:
        convert("FROM busybox\nCOPY --chwon=app a /\n", filename="Dockerfile.dev")
    assert exc.value.line == 2
    assert str(exc.value).startswith("Dockerfile.dev:2: ")
    assert "unknown flag: chwon" in str(exc.value)


def test_parse_errors_in_unused_stages_still_fail() -> None:
    with pytest.raises(FrontendError, match="unknown flag"):
        convert("FROM busybox AS unused\nCOPY --bogus=1 a /\nFROM busybox\nRUN true\n")


def test_dispatch_errors_name_the_instruction_line() -> None:
    with pytest.raises(FrontendError, match="Invalid signal: SIGNOPE") as exc:
        convert("FROM busybox\nENV A=1\nSTOPSIGNAL SIGNOPE\n")
    assert exc.value.line == 3
    with pytest.raises(FrontendError, match="invalid containerPort: abc") as exc:
        convert("FROM busybox\nEXPOSE abc\n")
    assert exc.value.line == 2


def test_empty_dockerfile_and_one_without_stages_fail() -> None:
    with pytest.raises(FrontendError, match="cannot be empty"):
        convert("")
    with pytest.raises(FrontendError, match="dockerfile contains no stages to build"):
        convert("ARG A=1\n")


def test_multi_platform_builds_prefix_op_names_with_the_platform() -> None:
    df = (
        "FROM --platform=$BUILDPLATFORM busybox AS build\n"
        "ARG TARGETPLATFORM\n"
        "RUN echo cross\n"
        "FROM busybox\n"
        "COPY --from=build /x /x\n"
    )
    res, _ = convert(
        df, target_platform="linux/arm64", build_platforms=["linux/amd64"], multi_platform=True
    )
    got = names(res)
    assert f"[linux/amd64 build 1/2] FROM {BUSYBOX}@{DIGEST}" in got
    # a stage running on the build platform for another target shows both
    assert "[linux/amd64->arm64 build 2/2] RUN echo cross" in got
    assert "[linux/arm64 stage-1 2/2] COPY --from=build /x /x" in got
    single, _ = convert(df, target_platform="linux/arm64", build_platforms=["linux/amd64"])
    assert "[build 2/2] RUN echo cross" in names(single)


def test_named_context_name_forms_git_and_http_sources() -> None:
    from bkcore.frontends.dockerfile.convert.contexts import familiar_name

    assert familiar_name("docker.io/library/alpine:latest") == "alpine"
    assert familiar_name("127.0.0.1:5000/x/y:latest") == "127.0.0.1:5000/x/y"
    assert familiar_name("alpine:3") == "alpine:3"
    res, _ = convert(
        "FROM busybox\nCOPY --from=repo / /src\nCOPY --from=file /f /f\n",
        named_contexts={
            "repo": "https://example.com/r.git#v1:sub",
            "file": "https://example.com/f.txt",
        },
    )
    srcs = {o.body.identifier: o for o in ops(res) if o.kind == "source"}
    git = srcs["git://example.com/r.git#v1:sub"]
    assert git.body.attrs["git.keepgitdir"] == "true"
    assert "https://example.com/f.txt" in srcs
    assert srcs["https://example.com/f.txt"].name == "[context file] https://example.com/f.txt"


def test_run_mount_from_makes_the_stage_or_image_a_dependency() -> None:
    bridge = FakeBridge({BUSYBOX: image_config(), "docker.io/library/tools:1": image_config()})
    df = (
        "FROM busybox AS Tools\nRUN echo built-tools\n"
        "FROM busybox AS unused\nRUN echo never\n"
        "FROM busybox\n"
        "RUN --mount=from=tools,target=/t --mount=type=cache,target=/c,from=tools:1 ls /t\n"
    )
    res, bridge = convert(df, bridge)
    cmds = [e.meta.args[-1] for e in execs(res)]
    assert "echo built-tools" in cmds and "echo never" not in cmds
    # one resolution per image and platform; the unused stage needs none
    assert sorted(c[0] for c in bridge.calls) == [BUSYBOX, "docker.io/library/tools:1"]


def test_unresolvable_base_suggests_a_close_stage_or_image_name() -> None:
    with pytest.raises(FrontendError, match=r"biuld: .*\(did you mean build\?\)") as exc:
        convert("FROM busybox AS build\nRUN true\nFROM biuld\nRUN true\n")
    assert exc.value.line == 3
    with pytest.raises(FrontendError, match=r"\(did you mean busybox\?\)"):
        convert("FROM busybax\n")
    with pytest.raises(FrontendError) as exc:
        convert("FROM completely-different\n")
    assert "did you mean" not in str(exc.value)
