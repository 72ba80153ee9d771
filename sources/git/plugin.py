"""Built-in plugin registering the ``git`` source scheme (``git://host/repo#ref[:subdir]``).

Holds only hook implementations; :mod:`bkcore.sources.git.source` is imported when the
first git source op is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bkcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from bkcore.registry import Registry


@hookimpl
def bkcore_register_sources(registry: Registry) -> None:
    registry.add(
        "git",
        "bkcore.sources.git.source:GitSource",
        description="git repositories at a branch, tag or commit (real git, cached per remote)",
    )
