"""``bkcore build``: solve an LLB definition read from stdin (like ``buildctl build``).

Options are parsed here (cheaply: nothing heavy is imported until the build runs); the work is
:func:`bkcore.controller.run_build`::

    python examples/app.py | bkcore build --local src=. --output type=local,dest=out
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import TYPE_CHECKING

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
        help="where to write the result: type=local,dest=DIR or type=tar,dest=FILE|- (stdout)",
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
        metavar="F",
        default=None,
        help="read the LLB definition from F instead of stdin",
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
    """``type=local,dest=DIR`` (CSV like buildctl) -> :class:`OutputSpec`."""
    from bkcore.controller import OutputSpec

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

    def options(self, definition: bytes) -> BuildOptions:
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
    definition = _read_definition(parsed.file)
    asyncio.run(
        run_build(
            parsed.options(definition),
            args.plugin_manager,
            state_dir=parsed.root,
            progress=parsed.progress,
        )
    )
    return 0
