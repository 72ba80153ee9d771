"""Syntax tree -> typed instructions and stages (BuildKit v0.11 ``instructions/parse.go``).

Flags per instruction (others fail with ``unknown flag: x``):

- FROM ``--platform``; COPY ``--from --chown --chmod --link --parents --exclude``;
  ADD ``--chown --chmod --link --keep-git-dir --checksum --exclude``;
  RUN ``--mount`` (repeatable) ``--network`` (default|none|host) ``--security``
  (sandbox|insecure); HEALTHCHECK ``--interval --timeout --start-period --retries``.
- ARG and STOPSIGNAL ignore flags, as v0.11 does (it never parses theirs).

Errors from :func:`parse_instruction` carry BuildKit's message and the instruction's lines;
:func:`parse_dockerfile` prefixes them with ``dockerfile parse error on line N:`` as
BuildKit's ``instructions.Parse`` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypedDict

from bkcore.errors import FrontendError
from bkcore.frontends.dockerfile.instructions.bflag import BFlags, FlagError, suggest
from bkcore.frontends.dockerfile.instructions.commands import (
    AddCommand,
    ArgCommand,
    CmdCommand,
    Command,
    CopyCommand,
    EntrypointCommand,
    EnvCommand,
    ExposeCommand,
    HealthCheckCommand,
    HealthConfig,
    KeyValuePair,
    KeyValuePairOptional,
    LabelCommand,
    MaintainerCommand,
    OnbuildCommand,
    RunCommand,
    ShellCommand,
    ShellDependantCmdLine,
    ShellInlineFile,
    SourceContent,
    SourcesAndDest,
    Stage,
    StopSignalCommand,
    UserCommand,
    VolumeCommand,
    WorkdirCommand,
)
from bkcore.frontends.dockerfile.instructions.mount import parse_mount
from bkcore.frontends.dockerfile.parser import (
    Node,
    ParseError,
    chomp_heredoc_content,
    must_parse_heredoc,
)
from bkcore.frontends.dockerfile.parser.line_parsers import go_trim_space
from bkcore.frontends.dockerfile.shell import go_quote

__all__ = [
    "INSTRUCTIONS",
    "NETWORK_MODES",
    "SECURITY_MODES",
    "get_comment",
    "parse_command",
    "parse_dockerfile",
    "parse_go_duration",
    "parse_instruction",
]

INSTRUCTIONS = (
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
)
NETWORK_MODES = ("default", "none", "host")
SECURITY_MODES = ("sandbox", "insecure")
MINIMUM_DURATION_NS = 1_000_000  # 1ms, docker's container.MinimumDuration

_STAGE_NAME_RE = re.compile(r"[a-z][a-z0-9-_.]*")
_ONBUILD_PREFIX_RE = re.compile(r"^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", re.I)  # Go's \s


class _Base(TypedDict):
    name: str
    original: str
    start_line: int
    end_line: int


class _Req:
    """What every instruction parser needs from a node."""

    __slots__ = ("args", "attributes", "command", "comments", "flags", "heredocs", "node")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.command = node.value
        self.args = node.args()
        self.heredocs = node.heredocs
        self.attributes = node.attributes
        self.flags = BFlags(node.flags)
        self.comments = node.prev_comment

    def base(self) -> _Base:
        return {
            "name": self.command,
            "original": go_trim_space(self.node.original),
            "start_line": self.node.start_line,
            "end_line": self.node.end_line,
        }


class _Error(Exception):
    """An instruction error before the line is attached."""


def _at_least_one(cmd: str) -> _Error:
    return _Error(f"{cmd} requires at least one argument")


def _exactly_one(cmd: str) -> _Error:
    return _Error(f"{cmd} requires exactly one argument")


def _no_destination(cmd: str) -> _Error:
    return _Error(
        f"{cmd} requires at least two arguments, but only one was provided. "
        "Destination could not be determined"
    )


def get_comment(comments: list[str], name: str) -> str:
    """The text after ``name `` of the first comment line that starts with it."""
    if not name:
        return ""
    prefix = name + " "
    for line in comments:
        if line.startswith(prefix):
            return line[len(prefix) :]
    return ""


def _kvps(args: list[str], cmd: str) -> list[KeyValuePair]:
    if not args:
        raise _at_least_one(cmd)
    if len(args) % 2:
        raise _Error(f"Bad input to {cmd}, too many arguments")
    out: list[KeyValuePair] = []
    for i in range(0, len(args), 2):
        if not args[i]:
            raise _Error(f"{cmd} names can not be blank")
        out.append(KeyValuePair(args[i], args[i + 1]))
    return out


def _json_args(args: list[str], attributes: dict[str, bool]) -> list[str]:
    if not args:
        return []
    if attributes.get("json"):
        return list(args)
    return [" ".join(args)]


def _parse_env(req: _Req) -> EnvCommand:
    req.flags.parse()
    return EnvCommand(env=_kvps(req.args, "ENV"), **req.base())


def _parse_maintainer(req: _Req) -> MaintainerCommand:
    if len(req.args) != 1:
        raise _exactly_one("MAINTAINER")
    req.flags.parse()
    return MaintainerCommand(maintainer=req.args[0], **req.base())


def _parse_label(req: _Req) -> LabelCommand:
    req.flags.parse()
    return LabelCommand(labels=_kvps(req.args, "LABEL"), **req.base())


def _sources_and_dest(req: _Req, cmd: str) -> SourcesAndDest:
    srcs, dest = req.args[:-1], req.args[-1]
    if must_parse_heredoc(dest) is not None:
        raise _Error(f"{cmd} cannot accept a heredoc as a destination")
    bodies = {h.name: h for h in req.heredocs}
    paths: list[str] = []
    contents: list[SourceContent] = []
    for src in srcs:
        heredoc = must_parse_heredoc(src)
        if heredoc is None:
            paths.append(src)
            continue
        found = bodies.get(heredoc.name)
        data = found.content if found is not None else ""
        if heredoc.chomp:
            data = chomp_heredoc_content(data)
        contents.append(SourceContent(path=heredoc.name, data=data, expand=heredoc.expand))
    return SourcesAndDest(dest_path=dest, source_paths=paths, source_contents=contents)


def _parse_add(req: _Req) -> AddCommand:
    if len(req.args) < 2:
        raise _no_destination("ADD")
    f = req.flags
    f.add_string("chown")
    f.add_string("chmod")
    f.add_bool("link")
    f.add_bool("keep-git-dir")
    f.add_string("checksum")
    f.add_strings("exclude")
    f.parse()
    return AddCommand(
        sources_and_dest=_sources_and_dest(req, "ADD"),
        chown=f.string("chown"),
        chmod=f.string("chmod"),
        link=f.bool("link"),
        keep_git_dir=f.bool("keep-git-dir"),
        checksum=f.string("checksum"),
        exclude=f.strings("exclude"),
        **req.base(),
    )


def _parse_copy(req: _Req) -> CopyCommand:
    if len(req.args) < 2:
        raise _no_destination("COPY")
    f = req.flags
    f.add_string("chown")
    f.add_string("from")
    f.add_string("chmod")
    f.add_bool("link")
    f.add_bool("parents")
    f.add_strings("exclude")
    f.parse()
    return CopyCommand(
        sources_and_dest=_sources_and_dest(req, "COPY"),
        from_=f.string("from"),
        chown=f.string("chown"),
        chmod=f.string("chmod"),
        link=f.bool("link"),
        parents=f.bool("parents"),
        exclude=f.strings("exclude"),
        **req.base(),
    )


def _stage_name(args: list[str]) -> str:
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME_RE.fullmatch(name):
            raise _Error(
                f"invalid name for build stage: {go_quote(args[2])}, "
                "name can't start with a number or contain symbols"
            )
        return name
    if len(args) != 1:
        raise _Error("FROM requires either one or three arguments")
    return ""


def _parse_from(req: _Req) -> Stage:
    name = _stage_name(req.args)
    req.flags.add_string("platform")
    req.flags.parse()
    return Stage(
        name=name,
        base_name=req.args[0],
        platform=req.flags.string("platform"),
        commands=[],
        start_line=req.node.start_line,
        end_line=req.node.end_line,
        original=go_trim_space(req.node.original),
        comment=get_comment(req.comments, name),
    )


def _parse_onbuild(req: _Req) -> OnbuildCommand:
    if not req.args:
        raise _at_least_one("ONBUILD")
    req.flags.parse()
    trigger = req.args[0].strip().upper()
    if trigger == "ONBUILD":
        raise _Error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise _Error(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = _ONBUILD_PREFIX_RE.sub("", req.node.original, count=1)
    for heredoc in req.heredocs:
        expression += "\n" + heredoc.content + heredoc.name
    return OnbuildCommand(expression=expression, **req.base())


def _parse_workdir(req: _Req) -> WorkdirCommand:
    if len(req.args) != 1:
        raise _exactly_one("WORKDIR")
    req.flags.parse()
    return WorkdirCommand(path=req.args[0], **req.base())


def _cmdline(req: _Req, empty_as_none: bool) -> ShellDependantCmdLine:
    files = [ShellInlineFile(name=h.name, data=h.content, chomp=h.chomp) for h in req.heredocs]
    args: list[str] | None = _json_args(req.args, req.attributes)
    if empty_as_none and not args:
        args = None
    return ShellDependantCmdLine(
        cmd_line=args, files=files, prepend_shell=not req.attributes.get("json")
    )


def _parse_run(req: _Req) -> RunCommand:
    f = req.flags
    f.add_strings("mount")
    f.add_string("network", "default")
    f.add_string("security", "sandbox")
    f.parse()
    mounts = f.strings("mount")
    for value in mounts:
        parse_mount(value, None)  # parse-time checks; values are expanded at dispatch
    network = f.string("network")
    if network not in NETWORK_MODES:
        raise _Error(f"invalid network mode {go_quote(network)}")
    security = f.string("security")
    if security not in SECURITY_MODES:
        raise _Error(f"security {go_quote(security)} is not valid")
    return RunCommand(
        cmd=_cmdline(req, False),
        mounts=mounts,
        network=network,
        security=security,
        flags_used=f.used(),
        **req.base(),
    )


def _parse_cmd(req: _Req) -> CmdCommand:
    req.flags.parse()
    return CmdCommand(cmd=_cmdline(req, False), **req.base())


def _parse_entrypoint(req: _Req) -> EntrypointCommand:
    req.flags.parse()
    return EntrypointCommand(cmd=_cmdline(req, True), **req.base())


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_MAX_INT64 = (1 << 63) - 1


def parse_go_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` (``1m30s``, ``1.5h``, ``-2ms``, ``0``) in nanoseconds."""
    s = text
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    invalid = ValueError(f"time: invalid duration {go_quote(text)}")
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or (s[0].isascii() and s[0].isdigit())):
            raise invalid
        i = 0
        while i < len(s) and "0" <= s[i] <= "9":
            i += 1
        int_part, s = s[:i], s[i:]
        frac_part = ""
        if s.startswith("."):
            j = 1
            while j < len(s) and "0" <= s[j] <= "9":
                j += 1
            frac_part, s = s[1:j], s[j:]
            if not int_part and not frac_part:
                raise invalid
        elif not int_part:
            raise invalid
        k = 0
        while k < len(s) and not (s[k] == "." or "0" <= s[k] <= "9"):
            k += 1
        if k == 0:
            raise ValueError(f"time: missing unit in duration {go_quote(text)}")
        unit_text, s = s[:k], s[k:]
        unit = _DURATION_UNITS.get(unit_text)
        if unit is None:
            raise ValueError(
                f"time: unknown unit {go_quote(unit_text)} in duration {go_quote(text)}"
            )
        value = int(int_part or "0") * unit
        if frac_part:
            value += int(frac_part) * unit // (10 ** len(frac_part))
        total += value
        if total > _MAX_INT64:
            raise invalid
    return -total if neg else total


def _interval(req: _Req, name: str) -> int:
    value = req.flags.string(name)
    if not value:
        return 0
    try:
        ns = parse_go_duration(value)
    except ValueError as exc:
        raise _Error(str(exc)) from None
    if ns == 0:
        return 0
    if ns < MINIMUM_DURATION_NS:
        raise _Error(f'Interval "{name}" cannot be less than 1ms')
    return ns


def _parse_healthcheck(req: _Req) -> HealthCheckCommand:
    if not req.args:
        raise _at_least_one("HEALTHCHECK")
    typ = req.args[0].upper()
    args = req.args[1:]
    if typ == "NONE":
        if args:
            raise _Error("HEALTHCHECK NONE takes no arguments")
        return HealthCheckCommand(health=HealthConfig(test=["NONE"]), **req.base())
    f = req.flags
    for name in ("interval", "timeout", "start-period", "retries"):
        f.add_string(name)
    f.parse()
    if typ != "CMD":
        raise _Error(f"Unknown type {go_quote(typ)} in HEALTHCHECK (try CMD)")
    cmd = _json_args(args, req.attributes)
    if not cmd:
        raise _Error("Missing command after HEALTHCHECK CMD")
    test = [typ if req.attributes.get("json") else "CMD-SHELL", *cmd]
    health = HealthConfig(
        test=test,
        interval_ns=_interval(req, "interval"),
        timeout_ns=_interval(req, "timeout"),
        start_period_ns=_interval(req, "start-period"),
    )
    retries = f.string("retries")
    if retries:
        try:
            number = _go_parse_int32(retries)
        except ValueError as exc:
            raise _Error(str(exc)) from None
        if number < 0:
            raise _Error(f"--retries cannot be negative ({number})")
        health.retries = number
    return HealthCheckCommand(health=health, **req.base())


def _go_parse_int32(text: str) -> int:
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not all("0" <= c <= "9" for c in body):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(text)}: invalid syntax")
    value = int(text)
    if not -(1 << 31) <= value < (1 << 31):
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(text)}: value out of range")
    return value


def _parse_expose(req: _Req) -> ExposeCommand:
    if not req.args:
        raise _at_least_one("EXPOSE")
    req.flags.parse()
    return ExposeCommand(ports=sorted(req.args), **req.base())


def _parse_user(req: _Req) -> UserCommand:
    if len(req.args) != 1:
        raise _exactly_one("USER")
    req.flags.parse()
    return UserCommand(user=req.args[0], **req.base())


def _parse_volume(req: _Req) -> VolumeCommand:
    if not req.args:
        raise _at_least_one("VOLUME")
    req.flags.parse()
    volumes: list[str] = []
    for value in req.args:
        value = value.strip()
        if not value:
            raise _Error("VOLUME specified can not be an empty string")
        volumes.append(value)
    return VolumeCommand(volumes=volumes, **req.base())


def _parse_stopsignal(req: _Req) -> StopSignalCommand:
    if len(req.args) != 1:
        raise _exactly_one("STOPSIGNAL")
    return StopSignalCommand(signal=req.args[0], **req.base())


def _parse_arg(req: _Req) -> ArgCommand:
    if not req.args:
        raise _at_least_one("ARG")
    pairs: list[KeyValuePairOptional] = []
    for arg in req.args:
        key, eq, value = arg.partition("=")
        if eq and not key:
            raise _Error("ARG names can not be blank")
        pairs.append(
            KeyValuePairOptional(key, value if eq else None, get_comment(req.comments, key))
        )
    return ArgCommand(args=pairs, **req.base())


def _parse_shell(req: _Req) -> ShellCommand:
    req.flags.parse()
    shell = _json_args(req.args, req.attributes)
    if not shell:
        raise _at_least_one("SHELL")
    if not req.attributes.get("json"):
        raise _Error("SHELL requires the arguments to be in JSON form")
    return ShellCommand(shell=shell, **req.base())


_PARSERS: dict[str, Callable[[_Req], Command | Stage]] = {
    "env": _parse_env,
    "maintainer": _parse_maintainer,
    "label": _parse_label,
    "add": _parse_add,
    "copy": _parse_copy,
    "from": _parse_from,
    "onbuild": _parse_onbuild,
    "workdir": _parse_workdir,
    "run": _parse_run,
    "cmd": _parse_cmd,
    "healthcheck": _parse_healthcheck,
    "entrypoint": _parse_entrypoint,
    "expose": _parse_expose,
    "user": _parse_user,
    "volume": _parse_volume,
    "stopsignal": _parse_stopsignal,
    "arg": _parse_arg,
    "shell": _parse_shell,
}


def parse_instruction(node: Node) -> Command | Stage:
    """One instruction node -> its command (a :class:`Stage` for FROM).

    Raises :class:`ParseError` with BuildKit's message and the node's lines.
    """
    fn = _PARSERS.get(node.value.lower())
    keyword = node.keyword or node.value
    try:
        if fn is None:
            upper = [name.upper() for name in INSTRUCTIONS]
            raise _Error(suggest(f"unknown instruction: {keyword}", keyword, upper, False))
        result = fn(_Req(node))
    except (_Error, FlagError) as exc:
        raise ParseError(str(exc), node.start_line, node.end_line) from None
    except FrontendError as exc:
        message = exc.message if isinstance(exc, ParseError) else str(exc)
        raise ParseError(message, node.start_line, node.end_line) from None
    return result


def parse_command(node: Node) -> Command:
    """Like :func:`parse_instruction` but FROM is an error (ONBUILD triggers)."""
    result = parse_instruction(node)
    if isinstance(result, Stage):
        raise ParseError(
            "*instructions.Stage is not a command type", node.start_line, node.end_line
        )
    return result


def parse_dockerfile(ast: Node) -> tuple[list[Stage], list[ArgCommand]]:
    """The stages of a parsed Dockerfile and the ARGs before its first FROM."""
    stages: list[Stage] = []
    meta_args: list[ArgCommand] = []
    for node in ast.children:
        try:
            cmd = parse_instruction(node)
        except ParseError as exc:
            raise ParseError(
                f"dockerfile parse error on line {node.start_line}: {exc.message}",
                node.start_line,
                node.end_line,
            ) from None
        if isinstance(cmd, Stage):
            stages.append(cmd)
            continue
        if not stages:
            if isinstance(cmd, ArgCommand):
                meta_args.append(cmd)
                continue
            raise ParseError("no build stage in current context", node.start_line, node.end_line)
        stages[-1].add_command(cmd)
    return stages, meta_args
