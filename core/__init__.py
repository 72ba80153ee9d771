"""bkcore: a BuildKit-compatible build toolkit, built as a plugin microkernel.

The core defines the solver, cache, session and worker interfaces; every source,
frontend, worker, exporter and session attachable is a pluggy plugin. Importing this
package is cheap: heavy modules are imported where they are used.
"""

__version__ = "0.1.0"

import sys as _sys

# httpx's package imports its optional command-line tool (``httpx._main``: click, pygments,
# rich) whenever those happen to be installed, ~75 ms of CPU at every bkcore start for code
# bkcore never runs. A ``None`` entry makes that import fail the way httpx handles their
# absence (``httpx.main`` then only says the CLI is unavailable). No effect if httpx is
# already imported.
if "httpx" not in _sys.modules:
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


class _BetterprotoVersion:
    """Finder and loader of ``betterproto._version``, whose only line is ``__version__ =
    importlib.metadata.version("betterproto")``: importing importlib.metadata (email, zipfile,
    csv, ...) cost ~15 ms of CPU in every bkcore process that touches protobuf (every build, the
    daemon client). Here the version is read from the ``betterproto-VERSION.dist-info`` folder
    found first on ``sys.path`` (importlib.metadata's own search order), and only when
    betterproto is imported; without such a folder, importlib.metadata answers."""

    NAME = "betterproto._version"

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        if name != cls.NAME:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(name, cls())  # type: ignore[arg-type]

    def create_module(self, spec: object) -> None:
        return None  # the default module object

    def exec_module(self, module: object) -> None:
        module.__version__ = self.version()  # type: ignore[attr-defined]

    @staticmethod
    def version() -> str:
        import os

        prefix, suffix = "betterproto-", ".dist-info"
        for entry in _sys.path:
            try:
                names = os.listdir(entry or ".")
            except OSError:
                continue
            for name in names:
                if name.startswith(prefix) and name.endswith(suffix):
                    return name[len(prefix) : -len(suffix)]
        from importlib import metadata

        return metadata.version("betterproto")


if "betterproto" not in _sys.modules:
    _sys.meta_path.insert(0, _BetterprotoVersion)  # type: ignore[arg-type]
