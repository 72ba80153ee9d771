"""The in-process bridge and frontend builds end to end (real `bkcore build` processes).

A small frontend plugin (written into the test's directory and loaded with ``--plugin``) reads
files of a local source through the bridge, nests another frontend, warns, returns refs and
metadata; a small exporter plugin records what the exporters get (metadata, refs).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

PLUGIN = textwrap.dedent(
    '''
    from __future__ import annotations

    import json
    import os

    from bkcore.errors import FrontendError
    from bkcore.frontend import META_IMAGE_CONFIG, META_PLATFORMS, BuildResult
    from bkcore.hookspecs import hookimpl


    class EchoFrontend:
        async def solve(self, bridge, request):
            from bkcore import llb

            opts = request.opts
            if opts.get("fail"):
                err = FrontendError(opts["fail"], "Dockerfile", 2)
                err.detail_lines = ["Dockerfile:2", ">>> bad line"]
                raise err
            local = llb.local("src", session_id=request.session_id, shared_key_hint="src")
            src = await bridge.solve(local.marshal().to_pb())
            data = await bridge.read_file(src.ref, "input.txt")
            part = await bridge.read_file(src.ref, "input.txt", offset=1, length=3)
            reads = []
            for path in ("../../../../etc/hostname", "/../input.txt", "abs-link", "up-link"):
                try:
                    reads.append(path + "=" + (await bridge.read_file(src.ref, path)).decode())
                except OSError as exc:
                    reads.append(path + "!" + type(exc).__name__)
            listing = [
                (e.path, e.mode >> 31, e.linkname) for e in await bridge.read_dir(src.ref, "/")
            ]
            txt = await bridge.read_dir(src.ref, ".", include_pattern="*.txt")
            only_txt = [e.path for e in txt]
            stat = await bridge.stat_file(src.ref, "abs-link")
            bridge.warn("", "echo warning " + opts.get("greeting", ""), detail=["d1"], line=3)
            report = {
                "data": data.decode(),
                "part": part.decode(),
                "reads": reads,
                "listing": listing,
                "only_txt": only_txt,
                "link_mode_symlink": bool(stat.mode & (1 << 27)),
                "link_target": stat.linkname,
                "greeting": opts.get("greeting", ""),
                "session": bool(request.session_id),
            }
            blob = json.dumps(report, sort_keys=True).encode()
            out = llb.scratch().file(llb.mkfile("/report.json", 0o644, blob))
            res = await bridge.solve(out.marshal().to_pb())
            platforms = [p for p in opts.get("platform", "").split(",") if p]
            if len(platforms) > 1:
                listed = {"Platforms": [{"ID": p} for p in platforms]}
                meta = {META_PLATFORMS: json.dumps(listed).encode()}
                refs = {}
                for p in platforms:
                    one = llb.scratch().file(llb.mkfile("/platform", 0o644, p.encode()))
                    refs[p] = (await bridge.solve(one.marshal().to_pb())).ref
                    meta[META_IMAGE_CONFIG + "/" + p] = json.dumps({"architecture": p}).encode()
                return BuildResult(refs=refs, metadata=meta)
            config = json.dumps({"config": {"Env": ["G=" + opts.get("greeting", "")]}}).encode()
            return BuildResult(ref=res.ref, metadata={META_IMAGE_CONFIG: config})


    class NestFrontend:
        async def solve(self, bridge, request):
            opts = dict(request.opts)
            opts["greeting"] = "nested-" + opts.get("greeting", "")
            return await bridge.solve(frontend="echo.v0", frontend_opts=opts)


    class WrapFrontend:
        """Runs dockerfile.v0 nested, with an input as the named context `base`."""

        async def solve(self, bridge, request):
            import base64

            from bkcore import llb

            st = llb.scratch().file(llb.mkfile("/from-input", 0o644, b"input!"))
            cfg = json.dumps({"config": {"Env": ["FROM_INPUT=1"], "WorkingDir": "/w"}})
            meta = {"containerimage.config": base64.b64encode(cfg.encode()).decode()}
            opts = dict(request.opts)
            opts["context:base"] = "input:base"
            opts["input-metadata:base"] = json.dumps(meta)
            return await bridge.solve(
                frontend="dockerfile.v0",
                frontend_opts=opts,
                frontend_inputs={"base": st.marshal().to_pb()},
            )


    class LoopFrontend:
        async def solve(self, bridge, request):
            return await bridge.solve(frontend="loop.v0")


    class MetaExporter:
        """Writes what it was given to attrs['dest'] (JSON)."""

        async def export(self, ctx, result, attrs):
            doc = {
                "metadata": {k: v.decode() for k, v in ctx.metadata.items()},
                "refs": sorted(ctx.refs),
                "result": result is not None,
            }
            files = {}
            if result is not None:
                with ctx.view(result) as root:
                    doc["tree"] = sorted(os.listdir(root))
            for platform, ref in ctx.refs.items():
                with ctx.view(ref) as root:
                    files[platform] = open(os.path.join(root, "platform")).read()
            doc["files"] = files
            with open(attrs["dest"], "w") as f:
                json.dump(doc, f)
            return {}


    @hookimpl
    def bkcore_register_frontends(registry):
        registry.add("echo.v0", "bkt_plumb:EchoFrontend")
        registry.add("nest.v0", "bkt_plumb:NestFrontend")
        registry.add("loop.v0", "bkt_plumb:LoopFrontend")
        registry.add("wrapdf.v0", "bkt_plumb:WrapFrontend")


    @hookimpl
    def bkcore_register_exporters(registry):
        registry.add("metadump", "bkt_plumb:MetaExporter")
    '''
)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.skip("snapshot views are overlay mounts: needs root")
    plug = tmp_path / "plug"
    plug.mkdir()
    (plug / "bkt_plumb.py").write_text(PLUGIN)
    src = tmp_path / "src"
    src.mkdir()
    (src / "input.txt").write_text("hello")
    (src / "other.bin").write_bytes(b"\0")
    os.symlink("/input.txt", src / "abs-link")
    os.symlink("../../../../../etc/hostname", src / "up-link")
    return {**os.environ, "PYTHONPATH": str(plug)}


def run(
    bkcli: Any, tmp_path: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    argv = [
        *bkcli(tmp_path / "root", plugins=["bkt_plumb"], env=env),
        "build", "--progress", "rawjson",
        "--local", f"src={tmp_path / 'src'}", *args,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180, check=False)


def warnings_of(stderr: str) -> list[tuple[str, list[str]]]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            for w in json.loads(line).get("warnings", []):
                short = base64.b64decode(w["short"]).decode()
                detail = [base64.b64decode(d).decode() for d in w.get("detail", [])]
                out.append((short, detail))
    return out


def test_nested_frontend_reads_files_inside_the_ref_and_warns(
    tmp_path: Path, env: dict[str, str], bkcli: Any
) -> None:
    out = tmp_path / "out"
    proc = run(
        bkcli, tmp_path, env, "--frontend", "nest.v0", "--opt", "greeting=hi",
        "--output", f"type=local,dest={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == "hello" and report["part"] == "ell"
    assert report["greeting"] == "nested-hi" and report["session"]
    # `..` stops at the ref's root; symlinks resolve inside it, never to the host's files.
    assert report["reads"] == [
        "../../../../etc/hostname!FileNotFoundError",
        "/../input.txt=hello",
        "abs-link=hello",
        "up-link!FileNotFoundError",
    ]
    assert [name for name, _, _ in report["listing"]] == [
        "abs-link",
        "input.txt",
        "other.bin",
        "up-link",
    ]
    assert report["only_txt"] == ["input.txt"]
    assert report["link_mode_symlink"] and report["link_target"] == "/input.txt"
    assert ("line 3: echo warning nested-hi", ["d1"]) in warnings_of(proc.stderr)


def test_result_metadata_reaches_the_exporters(
    tmp_path: Path, env: dict[str, str], bkcli: Any
) -> None:
    dump = tmp_path / "meta.json"
    proc = run(
        bkcli, tmp_path, env, "--frontend", "echo.v0", "--opt", "greeting=x",
        "--output", f"type=metadump,dest={dump}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(dump.read_text())
    assert doc["metadata"] == {"containerimage.config": '{"config": {"Env": ["G=x"]}}'}
    assert doc["refs"] == [] and doc["result"] is True


def test_multi_platform_refs_reach_the_exporters(
    tmp_path: Path, env: dict[str, str], bkcli: Any
) -> None:
    dump = tmp_path / "meta.json"
    proc = run(
        bkcli, tmp_path, env, "--frontend", "echo.v0", "--opt", "platform=linux/amd64,linux/arm64",
        "--output", f"type=metadump,dest={dump}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(dump.read_text())
    assert doc["refs"] == ["linux/amd64", "linux/arm64"] and doc["result"] is False
    assert doc["files"] == {"linux/amd64": "linux/amd64", "linux/arm64": "linux/arm64"}
    assert set(doc["metadata"]) == {
        "refs.platforms",
        "containerimage.config/linux/amd64",
        "containerimage.config/linux/arm64",
    }


def test_frontend_error_is_one_line_then_detail_and_output_untouched(
    tmp_path: Path, env: dict[str, str], bkcli: Any
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("old")
    proc = run(
        bkcli, tmp_path, env, "--frontend", "echo.v0", "--opt", "fail=unknown instruction: FORM",
        "--output", f"type=local,dest={out}",
    )  # fmt: skip
    assert proc.returncode == 1
    text = [ln for ln in proc.stderr.splitlines() if not ln.startswith("{")]
    assert text == [
        "error: Dockerfile:2: unknown instruction: FORM",
        "Dockerfile:2",
        ">>> bad line",
    ]
    assert sorted(p.name for p in out.iterdir()) == ["keep"]
    assert (out / "keep").read_text() == "old"


def test_unknown_frontend_and_endless_nesting_fail_clearly(
    tmp_path: Path, env: dict[str, str], bkcli: Any
) -> None:
    proc = run(bkcli, tmp_path, env, "--frontend", "nope.v0")
    assert proc.returncode == 1
    assert "error: unknown frontend 'nope.v0' (known: " in proc.stderr
    loop = run(bkcli, tmp_path, env, "--frontend", "loop.v0")
    assert loop.returncode == 1
    assert "nested more than 16 deep" in loop.stderr


def test_nested_dockerfile_frontend_with_an_input_context(
    tmp_path: Path, env: dict[str, str], bkcli: Any
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    (ctx / "Dockerfile").write_text("FROM base\nCOPY a.txt .\n")
    dump = tmp_path / "meta.json"
    proc = run(
        bkcli, tmp_path, env, "--frontend", "wrapdf.v0", "--local", f"context={ctx}",
        "--local", f"dockerfile={ctx}", "--output", f"type=metadump,dest={dump}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(dump.read_text())
    assert doc["tree"] == ["from-input", "w"]
    config = json.loads(doc["metadata"]["containerimage.config"])
    assert "FROM_INPUT=1" in config["config"]["Env"]
    assert config["config"]["WorkingDir"] == "/w"
