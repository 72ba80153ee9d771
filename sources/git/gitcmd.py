"""Running the ``git`` binary with a clean, private environment.

No user or system configuration is read (``GIT_CONFIG_NOSYSTEM``, ``HOME`` and
``XDG_CONFIG_HOME`` point at a private directory), prompts are off
(``GIT_TERMINAL_PROMPT=0``), and no ``GIT_*`` variable of the calling process leaks in.
Configuration that may be secret (an ``Authorization`` header) is passed only through
``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n``, never on a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bkcore.errors import SourceError

__all__ = ["GitError", "GitRunner", "git_binary"]

#: Variables of the calling process passed on to git (proxies, TLS trust, locale-free).
_PASS = (
    "PATH",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
_STDERR_LIMIT = 64 << 10


class GitError(Exception):
    """A git command failed; ``detail`` is its last meaningful stderr line."""

    def __init__(self, returncode: int, detail: str) -> None:
        super().__init__(detail)
        self.returncode = returncode
        self.detail = detail


def git_binary() -> str:
    """The path of ``git``; SourceError when it is not installed."""
    path = shutil.which("git")
    if path is None:
        raise SourceError("git source: the git binary is not installed")
    return path


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else ""


@dataclass(frozen=True, slots=True)
class GitRunner:
    """Runs git with ``home`` as its private home and the given extra configuration."""

    home: str
    config: Mapping[str, str] = field(default_factory=dict)
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PASS if k in os.environ}
        env.setdefault("PATH", os.defpath)
        env.update(
            {
                "HOME": self.home,
                "XDG_CONFIG_HOME": self.home,
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_ASKPASS": "",
                "SSH_ASKPASS": "",
                "LC_ALL": "C",
            }
        )
        config = {"gc.auto": "0", "maintenance.auto": "false", **self.config}
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config.items()):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        env.update(self.extra_env)
        if extra:
            env.update(extra)
        return env

    async def run(
        self,
        args: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> bytes:
        """Run ``git ARGS``; its stdout, or :class:`GitError` on a non-zero exit.

        Cancelling kills git's whole process group and waits for it.
        """
        proc = await asyncio.create_subprocess_exec(
            git_binary(),
            *args,
            cwd=cwd,
            env=self.environment(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
            raise
        if proc.returncode != 0:
            raise GitError(proc.returncode or 1, _last_line(stderr[-_STDERR_LIMIT:]))
        return stdout
