"""The one error tree of bkcore.

::

    BkError                      every error bkcore raises on purpose
    ├── DefinitionError          an LLB Definition that cannot be loaded (names the op digest)
    ├── SolveError               a vertex failed (carries its digest and description)
    │   └── ExecError            a process exited non-zero (exit code, command, last output)
    ├── SourceError              a source could not be resolved or fetched
    ├── FrontendError            a frontend rejected its input (file:line)
    ├── ExportError              an exporter could not write its output
    ├── SessionError             a session attachable failed or is missing
    ├── PluginError              a plugin could not be loaded or registered
    │   └── PluginConflictError  two plugins claimed one name or scheme
    └── CacheError               the cache store is inconsistent or unusable

Lower-level errors are translated at plugin boundaries with ``raise X from exc``. ``str()``
of every error is one line a person can act on; detail lives in attributes.
"""

from __future__ import annotations

from collections.abc import Sequence


class BkError(Exception):
    """Base of every error bkcore raises on purpose."""


class DefinitionError(BkError):
    """An LLB Definition that fails BuildKit's load checks."""

    def __init__(self, message: str, digest: str | None = None) -> None:
        self.digest = digest
        super().__init__(f"{message} (op {digest})" if digest else message)


class SolveError(BkError):
    """A vertex failed while solving."""

    def __init__(self, message: str, digest: str | None = None, description: str = "") -> None:
        self.digest = digest
        self.description = description
        self.message = message
        where = ""
        if description and digest:
            where = f"[{description}] "
        elif digest:
            where = f"[{digest}] "
        super().__init__(f"{where}{message}")


class ExecError(SolveError):
    """A process in a container exited with a non-zero status."""

    def __init__(
        self,
        args: Sequence[str],
        exit_code: int,
        output_tail: Sequence[str] = (),
        digest: str | None = None,
        description: str = "",
    ) -> None:
        self.argv = list(args)
        self.exit_code = exit_code
        self.output_tail = list(output_tail)
        command = " ".join(self.argv)
        super().__init__(
            f'process "{command}" did not complete successfully: exit code: {exit_code}',
            digest=digest,
            description=description,
        )


class SourceError(BkError):
    """A source (image, git, http, local, oci-layout) could not be resolved or fetched."""


class FrontendError(BkError):
    """A frontend rejected its input; ``filename``/``line`` say where."""

    def __init__(self, message: str, filename: str = "", line: int = 0) -> None:
        self.filename = filename
        self.line = line
        prefix = f"{filename}:{line}: " if filename and line else ""
        super().__init__(f"{prefix}{message}")


class ExportError(BkError):
    """An exporter could not write its output."""


class SessionError(BkError):
    """A session or one of its attachables failed or is missing."""


class PluginError(BkError):
    """A plugin could not be loaded or registered."""


class PluginConflictError(PluginError):
    """Two plugins claimed one name or scheme in the same family."""

    def __init__(self, family: str, key: str, first: str, second: str) -> None:
        self.family = family
        self.key = key
        self.first = first
        self.second = second
        super().__init__(f"{family} {key!r} is registered by both {first} and {second}")


class CacheError(BkError):
    """The cache store is inconsistent or unusable."""
