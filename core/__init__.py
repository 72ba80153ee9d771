"""bkcore: a BuildKit-compatible build toolkit, built as a plugin microkernel.

The core defines the solver, cache, session and worker interfaces; every source,
frontend, worker, exporter and session attachable is a pluggy plugin. Importing this
package is cheap: heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
