"""Source ops: ``scratch``, ``image``, ``local``, ``git``, ``http``, ``oci_layout``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Literal

from bkcore.errors import DefinitionError
from bkcore.llb import pb
from bkcore.llb.imageref import normalize_image_ref
from bkcore.llb.pbmake import make
from bkcore.llb.platforms import Platform
from bkcore.llb.state import State
from bkcore.llb.vertex import MarshalContext, Marshalled, OpMeta, Output, Vertex

ResolveMode = Literal["default", "pull", "local"]

_GO_JSON_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def go_json_list(values: Sequence[str]) -> str:
    """A ``[]string`` as Go's ``encoding/json`` writes it (compact, HTML-escaped)."""
    text = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False)
    for raw, esc in _GO_JSON_ESCAPES:
        text = text.replace(raw, esc)
    return text


class SourceOp(Vertex):
    """A named input (``docker-image://``, ``local://``, ``git://``, ...). Immutable."""

    __slots__ = ("_attrs", "_caps", "_meta", "_platform", "identifier", "output")

    def __init__(
        self,
        identifier: str,
        attrs: Mapping[str, str],
        caps: set[str],
        *,
        meta: OpMeta,
        platform: Platform | None = None,
    ) -> None:
        if "://" not in identifier:
            raise DefinitionError(f"invalid source identifier {identifier!r}: no scheme")
        self.identifier = identifier
        self._attrs = MappingProxyType({k: v for k, v in attrs.items() if v})
        self._caps = frozenset(caps)
        self._meta = meta
        self._platform = platform
        self.output = Output(self, 0, platform)

    @property
    def attrs(self) -> Mapping[str, str]:
        return self._attrs

    def inputs(self) -> tuple[Output, ...]:
        return ()

    def describe(self) -> str:
        return self.identifier

    def _platform_specific(self) -> bool:
        return self.identifier.startswith(("docker-image://", "oci-layout://"))

    def marshal(self, ctx: MarshalContext) -> Marshalled:
        attrs = dict(self._attrs)
        caps = set(self._caps)
        if self.identifier.startswith("local://") and "local.session" not in attrs:
            attrs.setdefault("local.unique", ctx.local_unique_id)
            caps.add("source.local.unique")
        source = make(pb.SourceOp, identifier=self.identifier, attrs=dict(sorted(attrs.items())))
        op = ctx.op(self._platform, self._meta, platform=self._platform_specific(), source=source)
        return Marshalled(op, self._meta, frozenset(caps))


def _state(op: SourceOp, platform: Platform | None = None) -> State:
    return State(_output=op.output, _platform=platform)


def scratch() -> State:
    """The empty filesystem."""
    return State()


def image(
    ref: str,
    *,
    platform: Platform | str | None = None,
    resolve_mode: ResolveMode = "default",
    record_type: str = "",
    layer_limit: int | None = None,
    meta: OpMeta | None = None,
    custom_name: str | None = None,
) -> State:
    """A container image from a registry; ``ref`` is normalised like ``docker pull`` does."""
    p = Platform.parse(platform) if isinstance(platform, str) else platform
    attrs: dict[str, str] = {}
    caps = {"source.image"}
    if resolve_mode not in ("default", "pull", "local"):
        raise DefinitionError(f"image {ref}: invalid resolve mode {resolve_mode!r}")
    if resolve_mode != "default":
        attrs["image.resolvemode"] = resolve_mode
        if resolve_mode == "pull":
            caps.add("source.image.resolvemode")
    if record_type:
        attrs["image.recordtype"] = record_type
    if layer_limit is not None:
        if layer_limit <= 0:
            raise DefinitionError(f"image {ref}: layer limit must be > 0")
        attrs["image.layerlimit"] = str(layer_limit)
        caps.add("source.image.layerlimit")
    op = SourceOp(
        "docker-image://" + normalize_image_ref(ref),
        attrs,
        caps,
        meta=OpMeta.build(meta, custom_name),
        platform=p,
    )
    return _state(op, p)


def local(
    name: str,
    *,
    session_id: str = "",
    include_patterns: Sequence[str] = (),
    exclude_patterns: Sequence[str] = (),
    follow_paths: Sequence[str] = (),
    shared_key_hint: str = "",
    differ: Literal["", "none", "metadata"] = "",
    differ_required: bool = False,
    unique_id: str = "",
    meta: OpMeta | None = None,
    custom_name: str | None = None,
) -> State:
    """A directory sent by the client session (``--local name=DIR``).

    Without ``session_id`` the op gets ``local.unique`` (``unique_id`` or the marshal-time id).
    """
    if not name:
        raise DefinitionError("local: empty name")
    attrs: dict[str, str] = {}
    caps = {"source.local"}
    if session_id:
        attrs["local.session"] = session_id
        caps.add("source.local.sessionid")
    if include_patterns:
        attrs["local.includepattern"] = go_json_list(include_patterns)
        caps.add("source.local.includepatterns")
    if follow_paths:
        attrs["local.followpaths"] = go_json_list(follow_paths)
        caps.add("source.local.followpaths")
    if exclude_patterns:
        attrs["local.excludepatterns"] = go_json_list(exclude_patterns)
        caps.add("source.local.excludepatterns")
    if shared_key_hint:
        attrs["local.sharedkeyhint"] = shared_key_hint
        caps.add("source.local.sharedkeyhint")
    if differ:
        attrs["local.differ"] = differ
        if differ_required:
            caps.add("source.local.differ")
    if unique_id and not session_id:
        attrs["local.unique"] = unique_id
        caps.add("source.local.unique")
    op = SourceOp("local://" + name, attrs, caps, meta=OpMeta.build(meta, custom_name))
    return _state(op)


_PROTOCOLS = (("http://", "http"), ("https://", "http"), ("git://", "git"), ("ssh://", "ssh"))
_IMPLICIT_SSH = re.compile(r"^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)$")


def _parse_git_protocol(remote: str) -> tuple[str, str]:
    kind = "unknown"
    for prefix, k in _PROTOCOLS:
        if remote.startswith(prefix):
            remote = remote[len(prefix) :]
            kind = k
    if kind == "unknown" and _IMPLICIT_SSH.match(remote):
        kind = "ssh"
    if kind == "ssh" and "@" in remote:
        remote = remote.split("@", 1)[1]
    return remote, kind


def git(
    remote: str,
    ref: str = "",
    *,
    keep_git_dir: bool = False,
    auth_token_secret: str | None = None,
    auth_header_secret: str | None = None,
    known_ssh_hosts: str = "",
    mount_ssh_sock: str = "",
    meta: OpMeta | None = None,
    custom_name: str | None = None,
) -> State:
    """A git repository at ``ref`` (branch, tag or commit; ``ref:subdir`` for a subdirectory).

    Unlike the Go client, no ``ssh-keyscan`` is run for SSH remotes: pass
    ``known_ssh_hosts`` to pin host keys.
    """
    url = remote.split("#", 1)[0]
    rest, kind = _parse_git_protocol(remote)
    if kind == "ssh":
        host, sep, path = rest.partition(":")
        if sep:
            rest = f"{host}/{path}"
    if kind == "unknown":
        url = "https://" + url
    ident = rest + ("#" + ref if ref else "")
    attrs: dict[str, str] = {}
    caps = {"source.git"}
    if keep_git_dir:
        attrs["git.keepgitdir"] = "true"
        caps.add("source.git.keepgitdir")
    if url:
        attrs["git.fullurl"] = url
        caps.add("source.git.fullurl")
    attrs["git.authtokensecret"] = auth_token_secret or "GIT_AUTH_TOKEN"
    attrs["git.authheadersecret"] = auth_header_secret or "GIT_AUTH_HEADER"
    if auth_token_secret is not None or auth_header_secret is not None:
        caps.add("source.git.httpauth")
    if kind == "ssh":
        if known_ssh_hosts:
            attrs["git.knownsshhosts"] = known_ssh_hosts
        caps.add("source.git.knownsshhosts")
        attrs["git.mountsshsock"] = mount_ssh_sock or "default"
        caps.add("source.git.mountsshsock")
    op = SourceOp("git://" + ident, attrs, caps, meta=OpMeta.build(meta, custom_name))
    return _state(op)


def http(
    url: str,
    *,
    checksum: str = "",
    filename: str = "",
    perm: int = 0,
    uid: int = 0,
    gid: int = 0,
    meta: OpMeta | None = None,
    custom_name: str | None = None,
) -> State:
    """A file downloaded from an ``http://`` or ``https://`` URL."""
    if not url.startswith(("http://", "https://")):
        raise DefinitionError(f"http: {url!r} is not an http(s) URL")
    attrs: dict[str, str] = {}
    caps = {"source.http"}
    if checksum:
        if not re.fullmatch(r"[a-z0-9]+:[0-9a-f]+", checksum):
            raise DefinitionError(f"http {url}: invalid checksum {checksum!r}")
        attrs["http.checksum"] = checksum
        caps.add("source.http.checksum")
    if filename:
        attrs["http.filename"] = filename
    if perm:
        attrs["http.perm"] = "0" + format(perm, "o")
        caps.add("source.http.perm")
    if uid:
        attrs["http.uid"] = str(uid)
        caps.add("soruce.http.uidgid")  # upstream spelling of the cap id
    if gid:
        attrs["http.gid"] = str(gid)
        caps.add("soruce.http.uidgid")
    op = SourceOp(url, attrs, caps, meta=OpMeta.build(meta, custom_name))
    return _state(op)


def oci_layout(
    ref: str,
    *,
    session_id: str = "",
    store_id: str = "",
    layer_limit: int | None = None,
    platform: Platform | str | None = None,
    meta: OpMeta | None = None,
    custom_name: str | None = None,
) -> State:
    """An image from an OCI layout store on the client (``ref`` like ``name@sha256:...``)."""
    if not re.search(r"@[a-z0-9]+:[0-9a-f]{32,}$", ref):
        raise DefinitionError(f"oci_layout {ref!r}: the reference must end in @<digest>")
    p = Platform.parse(platform) if isinstance(platform, str) else platform
    attrs: dict[str, str] = {}
    if session_id:
        attrs["oci.session"] = session_id
    if store_id:
        attrs["oci.store"] = store_id
    if layer_limit is not None:
        if layer_limit <= 0:
            raise DefinitionError(f"oci_layout {ref}: layer limit must be > 0")
        attrs["oci.layerlimit"] = str(layer_limit)
    op = SourceOp(
        "oci-layout://" + ref,
        attrs,
        {"source.ocilayout"},
        meta=OpMeta.build(meta, custom_name),
        platform=p,
    )
    return _state(op, p)
