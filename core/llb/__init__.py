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
