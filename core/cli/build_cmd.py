"""``bkcore build``: build an LLB definition from stdin, or run a frontend (a Dockerfile).

Three forms, told apart by their arguments:

* raw LLB (like ``buildctl build`` fed a definition)::

    python examples/app.py | bkcore build --local src=. --output type=local,dest=out

* buildctl's frontend form (``--frontend``; nothing is read from stdin)::

    bkcore build --frontend dockerfile.v0 --local context=. --local dockerfile=. \
        --opt target=app --opt build-arg:V=1 --output type=local,dest=out

* the short form a person types (a positional build context ``PATH``; ``docker build``'s
  flags map to the frontend form: ``-f`` is the Dockerfile, ``-t`` names an image output,
  ``--push`` pushes it, ``-o DIR`` is a local output, ``-o -`` a tar on stdout)::

    bkcore build -t 127.0.0.1:5000/app --push --build-arg V=1 .

Without ``-o``/``--output`` and ``-t`` the short and frontend forms only build (the result
stays in the build cache), like ``docker buildx build`` with no output.

Options are parsed here (cheaply: nothing heavy is imported until the build runs); the work is
:func:`bkcore.controller.run_build`.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import TYPE_CHECKING, TextIO

from bkcore.errors import BkError

if TYPE_CHECKING:
    from bkcore.controller import BuildOptions, OutputSpec

__all__ = [
    "ENTITLEMENTS",
    "BuildArgs",
    "add_arguments",
    "parse_allow",
    "parse_args",
    "parse_local",
    "parse_oci_layout",
    "parse_output",
    "run",
]

PROGRESS_MODES = ("auto", "tty", "plain", "rawjson")
#: What ``--allow`` may grant (buildctl's entitlements).
ENTITLEMENTS = ("network.host", "security.insecure")


class UsageError(BkError):
    """A flag value that cannot be used (reported as one ``error:`` line, status 1)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="serve local directory DIR as local source NAME (repeatable)",
    )
    parser.add_argument(
        "--oci-layout",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="serve OCI layout DIR as store NAME for oci-layout://NAME@DIGEST (repeatable)",
    )
    parser.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="id=ID,src=FILE|env=VAR",
        help="expose a secret to the build (repeatable)",
    )
    parser.add_argument(
        "--ssh",
        action="append",
        default=[],
        metavar="default|ID=SOCKET",
        help="forward an SSH agent socket to the build (repeatable)",
    )
    parser.add_argument(
        "--output",
        "-o",
        action="append",
        default=[],
        metavar="SPEC",
        help="where to write the result: type=local,dest=DIR, type=tar|oci|docker,dest=FILE|- "
        "(stdout), type=image,name=REF[,push=true]; or DIR (local), - (tar on stdout)",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="ENTITLEMENT",
        help="grant an entitlement to the build: network.host or security.insecure (repeatable)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="run every step again, ignoring the cache"
    )
    parser.add_argument(
        "--progress",
        default="auto",
        metavar="MODE",
        help="progress display: auto (tty on a terminal, else plain), tty, plain, rawjson",
    )
    parser.add_argument(
        "--file",
        "-f",
        metavar="F",
        default=None,
        help="raw form: read the LLB definition from F instead of stdin; "
        "short form: the Dockerfile (default PATH/Dockerfile)",
    )
    parser.add_argument(
        "--frontend",
        default="",
        metavar="NAME",
        help="build with frontend NAME (dockerfile.v0) instead of a definition on stdin",
    )
    parser.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="frontend option, e.g. target=T, build-arg:K=V, platform=P, filename=F, "
        "label:K=V, context:NAME=REF, no-cache= (repeatable)",
    )
    short = parser.add_argument_group("short form (docker build style; needs PATH)")
    short.add_argument(
        "path",
        nargs="?",
        default=None,
        metavar="PATH",
        help="build context directory: build its Dockerfile with dockerfile.v0",
    )
    short.add_argument(
        "--tag",
        "-t",
        action="append",
        default=[],
        metavar="REF",
        help="name the result as image REF (an image output; repeatable)",
    )
    short.add_argument("--target", default=None, metavar="STAGE", help="build stage STAGE")
    short.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="K=V",
        help="set build argument K (repeatable; K alone takes the value of $K)",
    )
    short.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="P",
        help="target platform(s), os/arch[/variant], comma-separated or repeated",
    )
    short.add_argument("--push", action="store_true", help="push the image named by -t")
    parser.epilog = (
        "forms: `bkcore build [--file F]` reads LLB from stdin; `bkcore build --frontend "
        "dockerfile.v0 --local context=DIR --local dockerfile=DIR [--opt K=V]...` is "
        "buildctl's; `bkcore build [-f Dockerfile] [-t REF]... [--target T] [--build-arg K=V]... "
        "[--platform P] [--push] [-o OUT] PATH` is docker's (-o DIR = local, -o - = tar on "
        "stdout; no -o and no -t = build only)."
    )


def parse_local(value: str) -> tuple[str, str]:
    """``NAME=DIR`` -> (name, absolute dir); the directory must exist."""
    name, sep, path = value.partition("=")
    name = name.strip()
    if not sep or not name or not path:
        raise UsageError(f"invalid --local {value!r}: expected NAME=DIR")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise UsageError(f"--local {name}: {path} is not a directory")
    return name, path


def parse_oci_layout(value: str) -> tuple[str, str]:
    """``NAME=DIR`` of ``--oci-layout`` -> (name, absolute dir); DIR must be an OCI layout."""
    name, sep, path = value.partition("=")
    name = name.strip()
    if not sep or not name or not path:
        raise UsageError(f"invalid --oci-layout {value!r}: expected NAME=DIR")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(os.path.join(path, "oci-layout")):
        raise UsageError(f"--oci-layout {name}: {path} is not an OCI layout (no oci-layout file)")
    return name, path


def parse_allow(values: list[str]) -> frozenset[str]:
    """The ``--allow`` values as a set of entitlements; an unknown one is an error."""
    for value in values:
        if value not in ENTITLEMENTS:
            known = ", ".join(ENTITLEMENTS)
            raise UsageError(f"invalid --allow {value!r}: unknown entitlement (known: {known})")
    return frozenset(values)


def _fields(value: str, flag: str) -> list[str]:
    try:
        rows = list(csv.reader([value]))
    except csv.Error as exc:
        raise UsageError(f"invalid {flag} {value!r}: {exc}") from None
    return [f for f in rows[0] if f.strip()] if rows else []


def parse_output(value: str) -> OutputSpec:
    """``type=local,dest=DIR`` (CSV like buildctl) -> :class:`OutputSpec`; ``docker build``'s
    plain forms too: ``DIR`` is a local output, ``-`` a tar on stdout."""
    from bkcore.controller import OutputSpec

    if value and "=" not in value and "," not in value:
        value = "type=tar,dest=-" if value == "-" else f"type=local,dest={value}"
    attrs: dict[str, str] = {}
    for item in _fields(value, "--output"):
        key, sep, val = item.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise UsageError(f"invalid --output {value!r}: {item!r} is not key=value")
        attrs[key] = val
    kind = attrs.pop("type", "")
    if not kind:
        raise UsageError(f"invalid --output {value!r}: type is required (type=local|tar)")
    dest = attrs.get("dest")
    if kind == "local":
        if not dest or dest == "-":
            raise UsageError("--output type=local needs dest=DIR")
    elif kind == "tar":
        if not dest or dest == "-":
            if sys.stdout.isatty():
                raise UsageError("refusing to write a tar to the terminal: use dest=FILE")
            attrs["dest"] = "-"
    if dest and dest != "-":
        attrs["dest"] = os.path.abspath(os.path.expanduser(dest))
    return OutputSpec(kind, attrs)


def _check_spec(value: str, flag: str) -> str:
    if not value or not value.strip():
        raise UsageError(f"invalid {flag}: empty value")
    return value


class BuildArgs:
    """The parsed flags of one ``bkcore build`` (everything but the definition bytes)."""

    def __init__(self, args: argparse.Namespace) -> None:
        locals_: dict[str, str] = {}
        for value in args.local:
            name, path = parse_local(value)
            if name in locals_:
                raise UsageError(f"--local {name} is given twice")
            locals_[name] = path
        self.locals = locals_
        self.oci_layouts: dict[str, str] = {}
        for value in getattr(args, "oci_layout", []):
            name, path = parse_oci_layout(value)
            if name in self.oci_layouts:
                raise UsageError(f"--oci-layout {name} is given twice")
            self.oci_layouts[name] = path
        self.secrets = [_check_spec(v, "--secret") for v in args.secret]
        self.ssh = [_check_spec(v, "--ssh") for v in args.ssh]
        self.entitlements = parse_allow(getattr(args, "allow", []))
        self.outputs = [parse_output(v) for v in args.output]
        if sum(1 for o in self.outputs if o.type in ("local", "tar")) > 1:
            raise UsageError("only one local or tar --output per build is supported")
        if args.progress not in PROGRESS_MODES:
            # Plugins may add renderers: checked again against the registry at run time.
            manager = getattr(args, "plugin_manager", None)
            extra = manager.registry("progress_renderers").keys() if manager else []
            if args.progress not in extra:
                known = ", ".join([*PROGRESS_MODES, *sorted(set(extra) - set(PROGRESS_MODES))])
                raise UsageError(f"unknown --progress {args.progress!r} (known: {known})")
        self.progress: str = args.progress
        self.no_cache: bool = args.no_cache
        self.file: str | None = args.file
        self.root: str | None = getattr(args, "root", None)
        self.frontend: str = getattr(args, "frontend", "") or ""
        self.frontend_opts: dict[str, str] = {}
        for value in getattr(args, "opt", []):
            key, _, val = value.partition("=")
            if not key:
                raise UsageError(f"invalid --opt {value!r}: expected KEY=VALUE")
            self.frontend_opts[key] = val
        self._short_form(args)
        if self.frontend and self.no_cache:
            self.frontend_opts.setdefault("no-cache", "")  # what buildctl sends

    def _short_form(self, args: argparse.Namespace) -> None:
        """Map ``docker build``-style flags (and PATH) onto the frontend form."""
        path: str | None = getattr(args, "path", None)
        tags: list[str] = getattr(args, "tag", []) or []
        target: str | None = getattr(args, "target", None)
        build_args: list[str] = getattr(args, "build_arg", []) or []
        platforms: list[str] = getattr(args, "platform", []) or []
        push: bool = getattr(args, "push", False)
        used = [
            flag
            for flag, on in (
                ("-t", tags),
                ("--target", target is not None),
                ("--build-arg", build_args),
                ("--platform", platforms),
                ("--push", push),
            )
            if on
        ]
        if path is None:
            if used and not self.frontend:
                raise UsageError(f"{used[0]} needs a build context PATH (or --frontend)")
        else:
            self._context_and_dockerfile(path)
        opts = self.frontend_opts
        if target is not None:
            opts["target"] = target
        for item in build_args:
            key, sep, val = item.partition("=")
            if not key:
                raise UsageError(f"invalid --build-arg {item!r}: expected K=V")
            if not sep:
                if key not in os.environ:
                    continue  # docker: an unset variable is not passed
                val = os.environ[key]
            opts[f"build-arg:{key}"] = val
        if platforms:
            opts["platform"] = ",".join(p for v in platforms for p in v.split(",") if p)
        self._image_output(tags, push)

    def _context_and_dockerfile(self, path: str) -> None:
        context = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(context):
            raise UsageError(f"build context {path!r} is not a directory")
        if self.frontend and self.frontend != "dockerfile.v0":
            raise UsageError("a build context PATH builds with dockerfile.v0 only")
        self.frontend = "dockerfile.v0"
        if self.file == "-":
            raise UsageError("-f -: reading the Dockerfile from stdin is not supported")
        dockerfile = (
            os.path.abspath(os.path.expanduser(self.file))
            if self.file
            else os.path.join(context, "Dockerfile")
        )
        if self.file and not os.path.isfile(dockerfile):
            raise UsageError(f"-f {self.file}: no such Dockerfile")
        self.file = None  # the Dockerfile, not a definition
        for name, directory in (("context", context), ("dockerfile", os.path.dirname(dockerfile))):
            given = self.locals.get(name)
            if given is not None and given != directory:
                raise UsageError(f"--local {name} conflicts with the build context PATH")
            self.locals[name] = directory
        if os.path.basename(dockerfile) != "Dockerfile":
            self.frontend_opts.setdefault("filename", os.path.basename(dockerfile))

    def _image_output(self, tags: list[str], push: bool) -> None:
        from bkcore.controller import OutputSpec

        if push and not tags and not any(o.type == "image" for o in self.outputs):
            raise UsageError("--push needs -t REF (the image to push)")
        if not tags and not push:
            return
        names = ",".join(tags)
        for index, output in enumerate(self.outputs):
            if output.type == "image":
                attrs = dict(output.attrs)
                if names and not attrs.get("name"):
                    attrs["name"] = names
                if push:
                    attrs["push"] = "true"
                self.outputs[index] = OutputSpec("image", attrs)
                return
        attrs = {"name": names}
        if push:
            attrs["push"] = "true"
        self.outputs.append(OutputSpec("image", attrs))

    def options(self, definition: bytes = b"") -> BuildOptions:
        from bkcore.controller import BuildOptions

        return BuildOptions(
            definition=definition,
            source=self.file or "<stdin>",
            locals=self.locals,
            secrets=tuple(self.secrets),
            ssh=tuple(self.ssh),
            outputs=tuple(self.outputs),
            no_cache=self.no_cache,
            entitlements=self.entitlements,
            frontend=self.frontend,
            frontend_opts=dict(self.frontend_opts),
            oci_layouts=dict(self.oci_layouts),
        )


def parse_args(argv: list[str]) -> BuildArgs:
    """Parse ``bkcore build`` flags alone (tests and embedding)."""
    parser = argparse.ArgumentParser(prog="bkcore build")
    add_arguments(parser)
    return BuildArgs(parser.parse_args(argv))


def _read_definition(file: str | None) -> bytes:
    if file is not None and file != "-":
        try:
            with open(file, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError(f"cannot read the definition: {exc.strerror}: {file}") from None
    if sys.stdin.isatty():
        raise UsageError("no definition: pipe an LLB definition into bkcore build (or --file F)")
    return sys.stdin.buffer.read()


def run(args: argparse.Namespace) -> int:
    import asyncio

    from bkcore.controller import run_build

    parsed = BuildArgs(args)
    definition = b"" if parsed.frontend else _read_definition(parsed.file)
    try:
        address = _remote_address(args)
        if address:  # --addr / $BKCORE_HOST: the build runs in that daemon
            from bkcore.api.buildclient import remote_build

            asyncio.run(
                remote_build(
                    address,
                    parsed.options(definition),
                    args.plugin_manager,
                    progress=parsed.progress,
                )
            )
            return 0
        asyncio.run(
            run_build(
                parsed.options(definition),
                args.plugin_manager,
                state_dir=parsed.root,
                progress=parsed.progress,
            )
        )
    except BkError as exc:
        if getattr(args, "debug", False):
            raise
        report_error(exc, sys.stderr)
        return 1
    return 0


def _remote_address(args: argparse.Namespace) -> str | None:
    from bkcore.cli.daemon_cmd import remote_address

    return remote_address(args)


def report_error(exc: BaseException, out: TextIO) -> None:
    """One ``error:`` line, then the detail lines the error carries (a Dockerfile snippet)."""
    print(f"error: {exc}", file=out)
    for line in getattr(exc, "detail_lines", None) or ():
        print(line, file=out)
