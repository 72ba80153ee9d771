"""bkcore's LLB: the wire model (``bkcore.llb.pb``) and a typed, immutable Python SDK.

Build a graph from sources, derive states with ``run``/``file``/``merge``/``diff`` and
``marshal()`` it; the Definition bytes equal the BuildKit v0.11 Go client's::

    from bkcore import llb

    base = llb.image("busybox")
    out = base.run("sh -c 'echo hi > /hi'", mounts=[llb.cache("/root/.cache", "c")]).root()
    res = llb.scratch().file(llb.copy(out, "/hi", "/hi"))
    res.marshal(platform="linux/amd64").write(sys.stdout.buffer)

This package imports no daemon or solver code.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bkcore.llb.definition import Definition, new_unique_id
    from bkcore.llb.defop import from_definition
    from bkcore.llb.execop import (
        SSH,
        Bind,
        Cache,
        CacheSharing,
        Mount,
        ProxyEnv,
        Secret,
        SecretEnv,
        Tmpfs,
        bind,
        cache,
        secret,
        secret_env,
        ssh,
        tmpfs,
    )
    from bkcore.llb.fileop import Chown, FileAction, UserRef, copy, mkdir, mkfile, rm
    from bkcore.llb.mergediff import diff, merge
    from bkcore.llb.platforms import LINUX_AMD64, LINUX_ARM64, LINUX_ARMHF, Platform
    from bkcore.llb.sourceop import git, http, image, local, oci_layout, scratch
    from bkcore.llb.state import ExecState, HostIP, NetMode, SecurityMode, State, Ulimit
    from bkcore.llb.vertex import (
        CUSTOM_NAME,
        OpMeta,
        ProgressGroup,
        Range,
        SourceLocation,
        SourceMap,
    )

#: Public name -> the submodule defining it, imported on first use (PEP 562), so
#: ``import bkcore.llb.pb`` (the generated wire model, used by the daemon client) does not
#: load the whole SDK.
_LAZY = {
    "Definition": "bkcore.llb.definition",
    "new_unique_id": "bkcore.llb.definition",
    "from_definition": "bkcore.llb.defop",
    "SSH": "bkcore.llb.execop",
    "Bind": "bkcore.llb.execop",
    "Cache": "bkcore.llb.execop",
    "CacheSharing": "bkcore.llb.execop",
    "Mount": "bkcore.llb.execop",
    "ProxyEnv": "bkcore.llb.execop",
    "Secret": "bkcore.llb.execop",
    "SecretEnv": "bkcore.llb.execop",
    "Tmpfs": "bkcore.llb.execop",
    "bind": "bkcore.llb.execop",
    "cache": "bkcore.llb.execop",
    "secret": "bkcore.llb.execop",
    "secret_env": "bkcore.llb.execop",
    "ssh": "bkcore.llb.execop",
    "tmpfs": "bkcore.llb.execop",
    "Chown": "bkcore.llb.fileop",
    "FileAction": "bkcore.llb.fileop",
    "UserRef": "bkcore.llb.fileop",
    "copy": "bkcore.llb.fileop",
    "mkdir": "bkcore.llb.fileop",
    "mkfile": "bkcore.llb.fileop",
    "rm": "bkcore.llb.fileop",
    "diff": "bkcore.llb.mergediff",
    "merge": "bkcore.llb.mergediff",
    "LINUX_AMD64": "bkcore.llb.platforms",
    "LINUX_ARM64": "bkcore.llb.platforms",
    "LINUX_ARMHF": "bkcore.llb.platforms",
    "Platform": "bkcore.llb.platforms",
    "git": "bkcore.llb.sourceop",
    "http": "bkcore.llb.sourceop",
    "image": "bkcore.llb.sourceop",
    "local": "bkcore.llb.sourceop",
    "oci_layout": "bkcore.llb.sourceop",
    "scratch": "bkcore.llb.sourceop",
    "ExecState": "bkcore.llb.state",
    "HostIP": "bkcore.llb.state",
    "NetMode": "bkcore.llb.state",
    "SecurityMode": "bkcore.llb.state",
    "State": "bkcore.llb.state",
    "Ulimit": "bkcore.llb.state",
    "CUSTOM_NAME": "bkcore.llb.vertex",
    "OpMeta": "bkcore.llb.vertex",
    "ProgressGroup": "bkcore.llb.vertex",
    "Range": "bkcore.llb.vertex",
    "SourceLocation": "bkcore.llb.vertex",
    "SourceMap": "bkcore.llb.vertex",
}


__all__ = [
    "CUSTOM_NAME",
    "LINUX_AMD64",
    "LINUX_ARM64",
    "LINUX_ARMHF",
    "SSH",
    "Bind",
    "Cache",
    "CacheSharing",
    "Chown",
    "Definition",
    "ExecState",
    "FileAction",
    "HostIP",
    "Mount",
    "NetMode",
    "OpMeta",
    "Platform",
    "ProgressGroup",
    "ProxyEnv",
    "Range",
    "Secret",
    "SecretEnv",
    "SecurityMode",
    "SourceLocation",
    "SourceMap",
    "State",
    "Tmpfs",
    "Ulimit",
    "UserRef",
    "bind",
    "cache",
    "copy",
    "diff",
    "from_definition",
    "git",
    "http",
    "image",
    "local",
    "merge",
    "mkdir",
    "mkfile",
    "new_unique_id",
    "oci_layout",
    "rm",
    "scratch",
    "secret",
    "secret_env",
    "ssh",
    "tmpfs",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bkcore.llb' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
