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


class _BetterprotoImports:
    """Import-system hook that makes ``import betterproto`` cheaper; no effect on anything else.

    * ``betterproto._version`` is ``__version__ = importlib.metadata.version("betterproto")``:
      importing importlib.metadata (email, zipfile, csv, ...) cost ~15 ms of CPU in every
      process that touches protobuf (every build, the daemon client). This finder loads it
      with the version read from the ``betterproto-VERSION.dist-info`` folder found first on
      ``sys.path`` (importlib.metadata's own search order; it answers if there is none).
    * betterproto imports ``isoparse`` from ``dateutil.parser`` (with decimal, calendar, six:
      ~10 ms) for JSON timestamps, which bkcore never parses. While betterproto is first
      imported, ``dateutil.parser`` is a stand-in whose ``isoparse`` imports the real module
      on its first call; the stand-in leaves ``sys.modules`` before betterproto's import
      ends (at ``betterproto._version``), and any other attribute of it is the real one's.
    """

    VERSION = "betterproto._version"
    PARSER = "dateutil.parser"

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        if name == "betterproto" and "betterproto" not in _sys.modules:
            if cls.PARSER not in _sys.modules:
                _sys.modules[cls.PARSER] = _DeferredDateutilParser(cls.PARSER)
            return None  # betterproto itself is found by the usual finders
        if name != cls.VERSION:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(name, cls())  # type: ignore[arg-type]

    def create_module(self, spec: object) -> None:
        return None  # the default module object

    def exec_module(self, module: object) -> None:
        if isinstance(_sys.modules.get(self.PARSER), _DeferredDateutilParser):
            del _sys.modules[self.PARSER]
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


def _real_dateutil_parser() -> object:
    import importlib

    if isinstance(_sys.modules.get("dateutil.parser"), _DeferredDateutilParser):
        del _sys.modules["dateutil.parser"]
    return importlib.import_module("dateutil.parser")


def _isoparse(dt_str: object) -> object:
    """dateutil.parser.isoparse, imported on the first call."""
    return _real_dateutil_parser().isoparse(dt_str)  # type: ignore[attr-defined]


class _DeferredDateutilParser(type(_sys)):  # type: ignore[misc]
    isoparse = staticmethod(_isoparse)

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):  # the import system probes __path__, __spec__, ...
            raise AttributeError(name)
        return getattr(_real_dateutil_parser(), name)


if "betterproto" not in _sys.modules:
    _sys.meta_path.insert(0, _BetterprotoImports)  # type: ignore[arg-type]
