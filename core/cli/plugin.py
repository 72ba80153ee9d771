"""Built-in plugin registering the core ``bkcore`` commands (no imports beyond the marker)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_commands(registry: Registry) -> None:
    registry.add(
        "plugins",
        "bkcore.cli.plugins_cmd",
        description="list loaded plugins and what each registered",
    )
    registry.add(
        "build",
        "bkcore.cli.build_cmd",
        description="build a Dockerfile (PATH or --frontend dockerfile.v0) or LLB from stdin",
    )
    registry.add("du", "bkcore.cli.du_cmd", description="show disk usage of the build cache")
    registry.add("prune", "bkcore.cli.prune_cmd", description="remove unused build cache")
    registry.add(
        "daemon",
        "bkcore.cli.daemon_cmd",
        description="serve the BuildKit Control API on a unix socket or TLS TCP address",
    )
    registry.add(
        "debug info",
        "bkcore.cli.daemon_cmd:info_command",
        description="show the BuildKit version record (of the daemon with --addr)",
    )
    registry.add(
        "debug dump-llb",
        "bkcore.cli.main:dump_llb_command",
        description="print an LLB definition (from a file or stdin) in readable form",
    )
