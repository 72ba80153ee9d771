"""Start-up of the ``bkcore`` command: import-time work a build process does not need.

The console script ``bkcore`` and ``python -m bkcore`` enter through :func:`main`, which
installs three import-system hooks and then runs :func:`bkcore.cli.main.main`. They are
installed only in that process -- never by ``import bkcore`` (SDK users, plugins and frontends
that embed bkcore see the interpreter unchanged) -- and ``BKCORE_NO_STARTUP_HOOKS=1`` leaves
them out. Each is measured in CPU per fresh ``bkcore build`` process (see bench/startup.py):

* :class:`_BetterprotoImports` -- betterproto's ``_version`` without importlib.metadata
  (~15 ms), and ``dateutil.parser`` imported only when betterproto parses a JSON timestamp
  (~10 ms);
* :class:`_DataclassCode` -- the methods ``@dataclass`` generates, compiled once per
  interpreter version and kept beside bkcore's bytecode (~80-100 ms).
"""

from __future__ import annotations

import sys as _sys

HOOKS_ENV = "BKCORE_NO_STARTUP_HOOKS"


def install() -> bool:
    """Install the hooks (once); False when ``BKCORE_NO_STARTUP_HOOKS`` is set."""
    import os

    if os.environ.get(HOOKS_ENV):
        return False
    if _DataclassCode.installed:
        return True
    if "betterproto" not in _sys.modules:
        _sys.meta_path.insert(0, _BetterprotoImports)  # type: ignore[arg-type]
    _DataclassCode.install()  # sets .installed
    return True


def main() -> int:
    """The ``bkcore`` command: hooks first, then the CLI."""
    install()
    from bkcore.cli.main import main as cli_main

    return cli_main()


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


class _DataclassCode:
    """A bytecode cache for the methods :mod:`dataclasses` generates.

    Python 3.11's ``@dataclass`` writes ``__init__``, ``__repr__``, ``__eq__``, ... of every
    class as source text and compiles each with ``exec``: a build process defines ~250
    dataclasses (LLB and protobuf messages, Dockerfile instructions, ...) and compiled ~700
    such functions, ~100 ms of CPU in every ``bkcore`` process -- a fifth of a cached build's.
    Python caches the bytecode of modules in ``__pycache__``, not of these texts.

    :meth:`install` gives the ``dataclasses`` module its own ``exec`` (a module global that
    shadows the builtin for ``dataclasses`` only): a source text is compiled once, the code
    object kept in ``__pycache__/dataclass-functions.<tag>-<hexversion>.marshal`` beside
    bkcore's own bytecode (under ``sys.pycache_prefix`` when set) and reused by later
    processes. The key is the exact text and the code object is what ``exec`` would have
    compiled from it, so the generated methods are the same; the file name carries the
    interpreter version, so bytecode is never shared between versions. Like Python's own
    bytecode cache, the file is written only when bytecode writing is allowed (not under
    ``PYTHONDONTWRITEBYTECODE``), atomically (temp file + rename) at exit when the process
    compiled new texts; an unreadable or damaged file means compiling as before.
    """

    #: More texts than this in a module's file (definitions that changed over time) and the
    #: file is rewritten with only the texts the current process used.
    MAX_ENTRIES = 1024

    # module name -> {text -> code object}; one file per module that defines dataclasses,
    # read when that module first defines one (a process reads only what it uses)
    installed = False
    codes: dict[str, dict[str, object]] = {}
    used: dict[str, set[str]] = {}
    changed: set[str] = set()

    @staticmethod
    def path(module: str) -> str:
        """The cache file of ``module``'s dataclasses, beside bkcore's ``__pycache__``."""
        import os

        package = os.path.dirname(os.path.abspath(__file__))  # bkcore
        tag = f"{_sys.implementation.cache_tag}-{_sys.hexversion:x}"
        folder = f"dataclass-functions.{tag}"
        if _sys.pycache_prefix:
            folder = os.path.join(_sys.pycache_prefix, package.lstrip(os.sep), folder)
        else:
            folder = os.path.join(package, "__pycache__", folder)
        return os.path.join(folder, f"{module}.marshal")

    @classmethod
    def load(cls, module: str) -> dict[str, object]:
        import marshal

        try:
            with open(cls.path(module), "rb") as fh:
                loaded = marshal.load(fh)
        except (OSError, EOFError, ValueError, TypeError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    @staticmethod
    def exec(source: object, globals: object = None, locals: object = None, /) -> None:
        """``exec`` for the dataclasses module: the same, string sources compiled once."""
        cache = _DataclassCode
        if globals is None:  # exec's defaults: the caller's namespaces
            frame = _sys._getframe(1)
            globals = frame.f_globals
            locals = frame.f_locals if locals is None else locals
        if isinstance(source, str):
            # dataclasses passes the defining module's namespace as globals
            name = globals.get("__name__") if isinstance(globals, dict) else None
            module = name if isinstance(name, str) and _safe_module_name(name) else "_"
            codes = cache.codes.get(module)
            if codes is None:
                codes = cache.codes[module] = cache.load(module)
                cache.used[module] = set()
            code = codes.get(source)
            if code is None:
                code = compile(source, "<string>", "exec", dont_inherit=True)
                codes[source] = code
                cache.changed.add(module)
            cache.used[module].add(source)
            source = code
        exec(source, globals, locals)  # type: ignore[arg-type]

    @classmethod
    def save(cls) -> None:
        """Write the files of modules that compiled new texts (at exit; errors ignored)."""
        if _sys.dont_write_bytecode:
            return
        import marshal
        import os

        for module in sorted(cls.changed):
            codes = cls.codes[module]
            if len(codes) > cls.MAX_ENTRIES:
                codes = {text: codes[text] for text in cls.used[module]}
            path = cls.path(module)
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(tmp, "wb") as fh:
                    marshal.dump(codes, fh)
                os.replace(tmp, path)
            except (OSError, ValueError):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        cls.changed.clear()

    @classmethod
    def find_spec(cls, name: str, path: object = None, target: object = None) -> object:
        """Meta-path finder: patch ``dataclasses`` when it is first imported."""
        if name != "dataclasses":
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)  # type: ignore[arg-type]
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader)  # type: ignore[assignment]
        return spec

    @classmethod
    def install(cls) -> None:
        """Patch ``dataclasses`` now if it is imported, else when it is; save at exit."""
        import atexit

        cls.installed = True
        atexit.register(cls.save)
        module = _sys.modules.get("dataclasses")
        if module is not None:
            module.exec = cls.exec  # type: ignore[attr-defined]
        else:
            _sys.meta_path.insert(0, cls)  # type: ignore[arg-type]


def _safe_module_name(name: str) -> bool:
    """A module name usable as a file name (dotted identifiers)."""
    return bool(name) and name.replace(".", "").replace("_", "").isalnum() and name.isascii()


class _PatchingLoader:
    """The dataclasses module's loader, giving the module its cached ``exec`` once run."""

    def __init__(self, loader: object) -> None:
        self._loader = loader

    def create_module(self, spec: object) -> object:
        return self._loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: object) -> None:
        self._loader.exec_module(module)  # type: ignore[attr-defined]
        module.exec = _DataclassCode.exec  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:  # get_source, get_filename, ... for tools
        return getattr(self._loader, name)
