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
