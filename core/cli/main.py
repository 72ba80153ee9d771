"""The ``bkcore`` command line: global options, plugin loading and command dispatch.

Commands come from the ``commands`` registry (``bkcore_register_commands``). A command's
module is imported only when that command runs; ``bkcore --help`` uses each entry's
description. Global options (``--plugin``, ``--debug``, ``--root``) are accepted before or
after the command words: argv is pre-scanned for them before any parser is built, so a
``--plugin`` module can add commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bkcore.errors import BkError, PluginError

PROG = "bkcore"
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass(slots=True)
class GlobalOptions:
    """Global options found by :func:`prescan` anywhere in argv."""

    plugins: list[str] = field(default_factory=list)
    debug: bool = False
    root: str | None = None
    addr: str | None = None  # --addr: a daemon to talk to (else $BKCORE_HOST)
    words: list[str] = field(default_factory=list)  # non-option tokens, in order


_VALUE_OPTIONS = ("--plugin", "--root", "--addr")


def prescan(argv: Sequence[str]) -> GlobalOptions:
    """Find global options (and the command words) before the parser exists."""
    found = GlobalOptions()
    tokens = iter(argv)
    for token in tokens:
        if token == "--":
            found.words.extend(tokens)
            break
        name, eq, value = token.partition("=")
        if name in _VALUE_OPTIONS:
            if not eq:
                value = next(tokens, "")
            if name == "--plugin":
                found.plugins.append(value)
            elif name == "--addr":
                found.addr = value
            else:
                found.root = value
        elif token == "--debug":
            found.debug = True
        elif not token.startswith("-") or token == "-":
            found.words.append(token)
    return found


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE[,MODULE]",
        default=default,
        help="load plugin modules for this invocation (repeatable)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show tracebacks on errors",
    )
    parser.add_argument(
        "--root", metavar="DIR", default=default, help="keep all state under DIR (or BKCORE_ROOT)"
    )
    parser.add_argument(
        "--addr",
        metavar="ADDRESS",
        default=default,
        help="daemon address, unix://PATH or tcp://HOST:PORT (or BKCORE_HOST): build, du, "
        "prune, debug workers and debug info ask that daemon; daemon listens there",
    )


@dataclass
class _Node:
    key: str = ""
    description: str = ""
    target: bool = False
    children: dict[str, _Node] = field(default_factory=dict)


def _command_tree(keys_and_descriptions: Sequence[tuple[str, str]]) -> _Node:
    root = _Node()
    for key, description in keys_and_descriptions:
        node = root
        words = key.split()
        for depth, word in enumerate(words):
            node = node.children.setdefault(word, _Node(" ".join(words[: depth + 1])))
        node.target = True
        node.description = description
    return root


def _build_parser(
    tree: _Node,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """Build the parser tree; return it and the parser of every command path."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="BuildKit-compatible builds, as a plugin microkernel."
    )
    _add_global_options(parser, suppress=False)
    parsers: dict[str, argparse.ArgumentParser] = {}
    _add_children(parser, tree, parsers, depth=0)
    return parser, parsers


def _add_children(
    parser: argparse.ArgumentParser,
    node: _Node,
    parsers: dict[str, argparse.ArgumentParser],
    depth: int,
) -> None:
    if not node.children:
        return
    if node.target:
        raise PluginError(f"command {node.key!r} is registered but also used as a command group")
    sub = parser.add_subparsers(dest=f"_words{depth}", metavar="COMMAND", title="commands")
    for word, child in sorted(node.children.items()):
        summary = child.description or "commands: " + ", ".join(sorted(child.children))
        child_parser = sub.add_parser(
            word, help=summary, description=summary, prog=f"{parser.prog} {word}"
        )
        _add_global_options(child_parser, suppress=True)
        child_parser.set_defaults(_node=child.key)
        parsers[child.key] = child_parser
        _add_children(child_parser, child, parsers, depth + 1)


def _select(tree: _Node, words: Sequence[str]) -> _Node | None:
    """The command (leaf) that the leading words of argv name, if any."""
    node = tree
    for word in words:
        child = node.children.get(word)
        if child is None:
            return None
        node = child
        if not node.children:
            return node if node.target else None
    return None


def run(argv: Sequence[str]) -> int:
    """Parse ``argv`` (without the program name) and run the chosen command."""
    from bkcore import config
    from bkcore.pluginmanager import get_plugin_manager, split_modules

    options = prescan(argv)
    if options.root:
        config.set_root(options.root)
    manager = get_plugin_manager(options.plugins)
    commands = manager.registry("commands")
    tree = _command_tree([(e.key, e.description) for e in commands.entries()])
    parser, parsers = _build_parser(tree)
    leaf = _select(tree, options.words)
    command: Any = None
    if leaf is not None:
        command = commands.load(leaf.key)
        command.add_arguments(parsers[leaf.key])
    args = parser.parse_args(list(argv))
    chosen: str | None = getattr(args, "_node", None)
    if chosen is None or leaf is None or chosen != leaf.key:
        target = parsers[chosen] if chosen is not None else parser
        target.print_help(sys.stderr)
        return EXIT_USAGE
    args.plugins = split_modules(options.plugins)
    args.debug = options.debug
    args.root = options.root
    args.addr = options.addr
    args.plugin_manager = manager
    status = command.run(args)
    return int(status) if status is not None else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point of ``bkcore``; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    debug = prescan(arguments).debug
    try:
        return run(arguments)
    except SystemExit as exc:  # argparse: --help, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR if exc.code else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BkError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if debug:
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


class DumpLlbCommand:
    """Adapter for ``bkcore debug dump-llb``: options here, work in ``bkcore.cli.dump_llb``."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--file", metavar="F", default=None, help="read the definition from F (default stdin)"
        )
        parser.add_argument("--dot", action="store_true", help="print a Graphviz dot graph")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import importlib

        try:
            module = importlib.import_module("bkcore.cli.dump_llb")
        except ImportError as exc:
            raise PluginError(f"debug dump-llb is not available: {exc}") from exc
        dump_llb: Callable[[str | None, bool], int] = module.run
        return dump_llb(args.file, args.dot)


dump_llb_command = DumpLlbCommand()

if __name__ == "__main__":
    sys.exit(main())
