"""Package attributes imported on first access (PEP 562), so importing a package is cheap.

(``bkcore.llb`` keeps its own copy: importing the SDK must load no other bkcore module.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["module_getattr"]


def module_getattr(namespace: dict[str, Any], where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``name`` from the module ``where[name]``.

    ``where`` values are absolute module names or ``.sub`` relative to the package whose
    globals ``namespace`` is; a found value is kept in ``namespace`` (the next access is a
    plain global lookup). Unknown names raise :class:`AttributeError` as a module does.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
