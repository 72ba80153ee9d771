"""Typed Dockerfile instructions (BuildKit v0.11 ``instructions/commands.go`` plus later flags).

Every command has ``name`` (lower-case keyword), ``original`` (the instruction as written,
continuations joined, trimmed), ``start_line``/``end_line`` (1-based).

Expansion: commands whose fields BuildKit expands at dispatch with the stage's variables
have ``expand(fn)``; the converter calls it with a single-word expander (quotes removed,
``$VAR`` replaced) before using the command. Which fields:

- ENV: keys and values; LABEL: keys and values (unless ``no_exp``); ARG: names and defaults;
- COPY: sources, destination, ``chown``, ``exclude``; ADD: the same plus ``checksum``
  (``from_`` of COPY and ``chmod`` are not expanded by v0.11; the converter resolves
  ``--from`` against the global ARGs itself);
- WORKDIR ``path``, USER ``user``, VOLUME ``volumes``, STOPSIGNAL ``signal``;
- RUN: ``expand`` parses the ``--mount`` values into ``mount_specs`` with the expander.

Not expanded here: EXPOSE (the converter splits each port with ``process_words``), CMD,
ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER, FROM (the converter expands the base
name and ``--platform`` with the global ARGs), heredoc bodies (``SourceContent.expand``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bkcore.frontends.dockerfile.instructions.mount import Mount

__all__ = [
    "AddCommand",
    "ArgCommand",
    "CmdCommand",
    "Command",
    "CopyCommand",
    "EntrypointCommand",
    "EnvCommand",
    "Expander",
    "ExposeCommand",
    "HealthCheckCommand",
    "HealthConfig",
    "KeyValuePair",
    "KeyValuePairOptional",
    "LabelCommand",
    "MaintainerCommand",
    "OnbuildCommand",
    "RunCommand",
    "ShellCommand",
    "ShellDependantCmdLine",
    "ShellInlineFile",
    "SourceContent",
    "SourcesAndDest",
    "Stage",
    "StopSignalCommand",
    "UserCommand",
    "VolumeCommand",
    "WorkdirCommand",
]

#: A single-word expander: returns the word with quotes processed and variables replaced;
#: raises (a FrontendError) on a bad substitution.
Expander = Callable[[str], str]


@dataclass
class KeyValuePair:
    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


@dataclass
class KeyValuePairOptional:
    """An ARG name with its default (``value`` None when no ``=`` was written)."""

    key: str
    value: str | None = None
    comment: str = ""

    def value_string(self) -> str:
        return self.value or ""

    def __str__(self) -> str:
        return f"{self.key}={self.value_string()}"


def _expand_kvps(kvps: list[KeyValuePair], fn: Expander) -> None:
    for i, kvp in enumerate(kvps):
        kvps[i] = KeyValuePair(fn(kvp.key), fn(kvp.value))


@dataclass(kw_only=True)
class Command:
    """Fields every instruction has."""

    name: str = ""
    original: str = ""
    start_line: int = 0
    end_line: int = 0

    def __str__(self) -> str:
        return self.original


@dataclass(kw_only=True)
class EnvCommand(Command):
    """``ENV k=v ...`` / ``ENV k v``."""

    env: list[KeyValuePair] = field(default_factory=list)

    def expand(self, fn: Expander) -> None:
        _expand_kvps(self.env, fn)


@dataclass(kw_only=True)
class MaintainerCommand(Command):
    maintainer: str = ""


@dataclass(kw_only=True)
class LabelCommand(Command):
    labels: list[KeyValuePair] = field(default_factory=list)
    no_exp: bool = False

    def expand(self, fn: Expander) -> None:
        if not self.no_exp:
            _expand_kvps(self.labels, fn)


@dataclass
class SourceContent:
    """A heredoc source of COPY/ADD: file ``path`` (the delimiter) with ``data``.

    ``expand`` says whether the body gets variable expansion (unquoted delimiter).
    """

    path: str
    data: str
    expand: bool = True


@dataclass
class SourcesAndDest:
    dest_path: str = ""
    source_paths: list[str] = field(default_factory=list)
    source_contents: list[SourceContent] = field(default_factory=list)

    def expand(self, fn: Expander) -> None:
        self.source_paths = [fn(p) for p in self.source_paths]
        self.dest_path = fn(self.dest_path)


@dataclass(kw_only=True)
class AddCommand(Command):
    sources_and_dest: SourcesAndDest = field(default_factory=SourcesAndDest)
    chown: str = ""
    chmod: str = ""
    link: bool = False
    keep_git_dir: bool = False
    checksum: str = ""
    exclude: list[str] = field(default_factory=list)

    def expand(self, fn: Expander) -> None:
        self.chown = fn(self.chown)
        self.checksum = fn(self.checksum)
        self.exclude = [fn(p) for p in self.exclude]
        self.sources_and_dest.expand(fn)


@dataclass(kw_only=True)
class CopyCommand(Command):
    sources_and_dest: SourcesAndDest = field(default_factory=SourcesAndDest)
    from_: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    exclude: list[str] = field(default_factory=list)

    def expand(self, fn: Expander) -> None:
        self.chown = fn(self.chown)
        self.exclude = [fn(p) for p in self.exclude]
        self.sources_and_dest.expand(fn)


@dataclass(kw_only=True)
class OnbuildCommand(Command):
    """``ONBUILD <trigger>``; ``expression`` is the trigger text as written (with heredocs)."""

    expression: str = ""


@dataclass(kw_only=True)
class WorkdirCommand(Command):
    path: str = ""

    def expand(self, fn: Expander) -> None:
        self.path = fn(self.path)


@dataclass
class ShellInlineFile:
    """A heredoc attached to RUN: ``name`` (delimiter), ``data`` (body), ``chomp`` (``<<-``)."""

    name: str
    data: str
    chomp: bool = False


@dataclass
class ShellDependantCmdLine:
    """A command line; ``prepend_shell`` is True for the shell form (one joined string).

    ``cmd_line`` is None only for ``ENTRYPOINT`` with nothing (``ENTRYPOINT []``).
    """

    cmd_line: list[str] | None = field(default_factory=list)
    files: list[ShellInlineFile] = field(default_factory=list)
    prepend_shell: bool = False


@dataclass(kw_only=True)
class RunCommand(Command):
    """``RUN [--mount=...]... [--network=...] [--security=...] cmd``.

    ``mounts`` are the raw ``--mount`` values; ``mount_specs`` is filled by :meth:`expand`.
    """

    cmd: ShellDependantCmdLine = field(default_factory=ShellDependantCmdLine)
    mounts: list[str] = field(default_factory=list)
    network: str = "default"
    security: str = "sandbox"
    flags_used: list[str] = field(default_factory=list)
    mount_specs: list[Mount] = field(default_factory=list)

    def expand(self, fn: Expander) -> None:
        from bkcore.frontends.dockerfile.instructions.mount import parse_mount

        self.mount_specs = [parse_mount(value, fn) for value in self.mounts]


@dataclass(kw_only=True)
class CmdCommand(Command):
    cmd: ShellDependantCmdLine = field(default_factory=ShellDependantCmdLine)


@dataclass(kw_only=True)
class EntrypointCommand(Command):
    cmd: ShellDependantCmdLine = field(default_factory=ShellDependantCmdLine)


@dataclass
class HealthConfig:
    """The image config ``Healthcheck``: ``test`` (``["NONE"]``, ``["CMD", ...]`` or
    ``["CMD-SHELL", "text"]``), durations in nanoseconds (0 = not set), ``retries``."""

    test: list[str] | None = None
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    retries: int = 0


@dataclass(kw_only=True)
class HealthCheckCommand(Command):
    health: HealthConfig = field(default_factory=HealthConfig)


@dataclass(kw_only=True)
class ExposeCommand(Command):
    """``EXPOSE`` ports as written (sorted, like BuildKit); expanded by the converter."""

    ports: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class UserCommand(Command):
    user: str = ""

    def expand(self, fn: Expander) -> None:
        self.user = fn(self.user)


@dataclass(kw_only=True)
class VolumeCommand(Command):
    volumes: list[str] = field(default_factory=list)

    def expand(self, fn: Expander) -> None:
        self.volumes = [fn(v) for v in self.volumes]


@dataclass(kw_only=True)
class StopSignalCommand(Command):
    signal: str = ""

    def expand(self, fn: Expander) -> None:
        self.signal = fn(self.signal)


@dataclass(kw_only=True)
class ArgCommand(Command):
    args: list[KeyValuePairOptional] = field(default_factory=list)

    def expand(self, fn: Expander) -> None:
        for i, kv in enumerate(self.args):
            value = fn(kv.value) if kv.value is not None else None
            self.args[i] = KeyValuePairOptional(fn(kv.key), value, kv.comment)


@dataclass(kw_only=True)
class ShellCommand(Command):
    shell: list[str] = field(default_factory=list)


@dataclass
class Stage:
    """A ``FROM`` and the instructions up to the next one.

    ``name`` is the lower-cased ``AS`` name ("" if none); ``base_name`` and ``platform`` are
    as written (unexpanded); ``original`` is the FROM line; ``comment`` the comment above
    it that starts with the stage name.
    """

    name: str
    base_name: str
    platform: str = ""
    commands: list[Command] = field(default_factory=list)
    start_line: int = 0
    end_line: int = 0
    original: str = ""
    comment: str = ""

    def add_command(self, cmd: Command) -> None:
        self.commands.append(cmd)
