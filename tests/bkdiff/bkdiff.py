"""Raw-LLB differential cases against BuildKit v0.11.6: shared code of the recorder and the test.

Loaded by path (``tests/bkdiff/record_buildkit.py`` and
``tests/integration/test_bkdiff_cases.py``; test modules cannot import each other).

A case is a dict in ``CASES`` of a module under ``cases/``::

    "fileop-mkdir-parents": {
        "graph": lambda c: c.scratch().file(...),   # c: a Ctx (llb, base(), local(name))
        "contexts": {"ctx": {"a.txt": "hello", "d/l": ("symlink", "../a.txt")}},
        "outputs": ["local"],                       # local, tar and/or oci
        "secrets": {"mysecret": "s3cr3t"},          # --secret id=...,src=<staged file>
        "expect_error": "exit code: 3",             # the build fails; both texts contain it
        "differences": {"reason": "...", ...},      # deliberate differences (see below)
    }

Every context is staged with fixed modes, owners and mtimes (:data:`EPOCH`), so the
recordings do not depend on the checkout. Results are normalised to data (:func:`listing_dir`,
:func:`listing_tar`, :func:`listing_oci`): per entry path, type, mode, uid/gid, size, sha256
of the content, link target, hardlink group, and the mtime only where it is deterministic
(older than the build: :data:`EPOCH`-based times from contexts or explicit timestamps; an
mtime set by the build itself is "now" on both sides and is only compared as "recent").

``differences`` of a case: ``{"reason": text, "ignore": [field or "path:field", ...]}``;
each listed field is removed from both sides before comparing.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import stat
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CASES_DIR = HERE / "cases"
EXPECTED_DIR = HERE / "expected"
ROOTFS_LOCAL = "rootfs"
UNIQUE_ID = "bkcoretestsuniqueid"
#: mtime of every staged context file (2020-09-13T12:26:40Z).
EPOCH = 1_600_000_000
#: Any mtime before this is "deterministic" (came from a context or an explicit timestamp).
RECENT = 1_700_000_000


class Ctx:
    """What a case's ``graph`` gets: the SDK and the shared base states."""

    def __init__(self) -> None:
        from bkcore import llb

        self.llb = llb

    def scratch(self) -> Any:
        return self.llb.scratch()

    def local_rootfs(self) -> Any:
        return self.llb.local(ROOTFS_LOCAL, shared_key_hint=ROOTFS_LOCAL, custom_name="rootfs")

    def base(self) -> Any:
        """The busybox rootfs copied onto scratch (as tests/integration/conftest.py's bk.base)."""
        return self.llb.scratch().file(
            self.llb.copy(self.local_rootfs(), "/", "/", dir_contents_only=True),
            custom_name="copy rootfs",
        )

    def local(self, name: str, **kw: Any) -> Any:
        return self.llb.local(name, **kw)


def load_cases() -> dict[str, dict[str, Any]]:
    """Every case of every module under cases/, by name (names are unique)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(CASES_DIR.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"bkdiff_cases_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name, case in mod.CASES.items():
            assert name not in out, f"duplicate case {name}"
            out[name] = {"module": path.stem, **case}
    return out


def definition(case: Mapping[str, Any]) -> bytes:
    graph = case["graph"](Ctx())
    data: bytes = graph.marshal(local_unique_id=UNIQUE_ID).to_bytes()
    return data


# -- staging ------------------------------------------------------------------------------


def stage(case: Mapping[str, Any], where: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write the case's contexts and secrets under ``where``: (locals, secret files)."""
    locals_: dict[str, Path] = {}
    for name, files in (case.get("contexts") or {}).items():
        root = where / "ctx" / name
        root.mkdir(parents=True)
        dirs: list[Path] = [root]
        for rel, spec in files.items():
            _write(root, rel, spec, dirs)
        for d in sorted(dirs, key=lambda p: -len(p.parts)):
            os.utime(d, (EPOCH, EPOCH))
        locals_[name] = root
    secrets: dict[str, Path] = {}
    for sid, value in (case.get("secrets") or {}).items():
        p = where / "secrets" / sid
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value)
        secrets[sid] = p
    return locals_, secrets


def _write(root: Path, rel: str, spec: Any, dirs: list[Path]) -> None:
    """spec: text | ("file", text, mode[, uid, gid]) | ("dir", mode[, uid, gid]) |
    ("symlink", target) | ("hardlink", other-rel-path) | ("tar", {name: text}[, gzip])."""
    path = root / rel
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    while parent != root and parent not in dirs:
        os.chmod(parent, 0o755)
        dirs.append(parent)
        parent = parent.parent
    if isinstance(spec, str):
        spec = ("file", spec, 0o644)
    kind = spec[0]
    if kind == "file":
        path.write_text(spec[1])
        os.chmod(path, spec[2])
        if len(spec) > 3:
            os.chown(path, spec[3], spec[4])
        os.utime(path, (EPOCH, EPOCH))
    elif kind == "dir":
        path.mkdir(exist_ok=True)
        os.chmod(path, spec[1])
        if len(spec) > 2:
            os.chown(path, spec[2], spec[3])
        dirs.append(path)
    elif kind == "symlink":
        os.symlink(spec[1], path)
        os.utime(path, (EPOCH, EPOCH), follow_symlinks=False)
    elif kind == "hardlink":
        os.link(root / spec[1], path)
    elif kind == "tar":  # ("tar", {name: text}, gzip?): a deterministic archive
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, text in spec[1].items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), EPOCH, 0o640
                tf.addfile(info, io.BytesIO(data))
        raw = buf.getvalue()
        if len(spec) > 2 and spec[2]:
            raw = gzip.compress(raw, mtime=0)
        path.write_bytes(raw)
        os.chmod(path, 0o644)
        os.utime(path, (EPOCH, EPOCH))
    else:
        raise ValueError(f"unknown context entry kind {kind!r}")


# -- normalisation ------------------------------------------------------------------------


def _mtime(value: float) -> int | str:
    """A deterministic mtime as an int, anything set during the build as "recent"."""
    return int(value) if value < RECENT else "recent"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing_dir(root: Path) -> list[dict[str, Any]]:
    """The exported tree (root itself left out), sorted by path."""
    out: list[dict[str, Any]] = []
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = "/" + os.path.relpath(full, root)
            st = os.lstat(full)
            e: dict[str, Any] = {
                "path": rel,
                "mode": f"{st.st_mode:06o}",
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime": _mtime(st.st_mtime),
            }
            if stat.S_ISLNK(st.st_mode):
                e["link"] = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                with open(full, "rb") as f:
                    e["sha256"] = _sha(f.read())
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    e["hardlink_group"] = inodes.setdefault(key, rel)
            out.append(e)
    out.sort(key=lambda e: e["path"])
    return out


_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


def listing_tar(data: bytes) -> list[dict[str, Any]]:
    """Tar members in archive order with their headers (content as sha256)."""
    out: list[dict[str, Any]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf:
            e: dict[str, Any] = {
                "name": m.name,
                "type": _TYPES.get(m.type, repr(m.type)),
                "mode": f"{m.mode:04o}",
                "uid": m.uid,
                "gid": m.gid,
                "uname": m.uname,
                "gname": m.gname,
                "mtime": _mtime(m.mtime),
            }
            if m.isreg():
                f = tf.extractfile(m)
                assert f is not None
                e["size"] = m.size
                e["sha256"] = _sha(f.read())
            if m.issym() or m.islnk():
                e["link"] = m.linkname
            pax = sorted(k for k in m.pax_headers if k not in ("mtime", "atime", "ctime"))
            if pax:
                e["pax"] = pax
            out.append(e)
    return out


def _decompress(blob: bytes) -> bytes:
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    return blob


def listing_oci(tar_bytes: bytes) -> dict[str, Any]:
    """The OCI layout tarball: index, manifest and config fields, each layer's listing."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf if m.isreg()}  # type: ignore[union-attr]

    def blob(digest: str) -> bytes:
        return files["blobs/" + digest.replace(":", "/")]

    index = json.loads(files["index.json"])
    out: dict[str, Any] = {
        "files": sorted(n for n in files if not n.startswith("blobs/")),
        "oci-layout": json.loads(files["oci-layout"]),
        "index": {
            "schemaVersion": index.get("schemaVersion"),
            "mediaType": index.get("mediaType"),
            "manifests": [
                {
                    "mediaType": d.get("mediaType"),
                    "annotations": sorted(d.get("annotations") or {}),
                    "platform": d.get("platform"),
                }
                for d in index["manifests"]
            ],
        },
    }
    desc = index["manifests"][0]
    manifest = json.loads(blob(desc["digest"]))
    out["manifest"] = {
        "schemaVersion": manifest.get("schemaVersion"),
        "mediaType": manifest.get("mediaType"),
        "config.mediaType": manifest["config"]["mediaType"],
        "layers": [ly["mediaType"] for ly in manifest.get("layers") or []],
        "annotations": sorted(manifest.get("annotations") or {}),
    }
    config = json.loads(blob(manifest["config"]["digest"]))
    out["config"] = {
        "keys": sorted(config),
        "architecture": config.get("architecture"),
        "os": config.get("os"),
        "config": config.get("config"),
        "rootfs.type": config.get("rootfs", {}).get("type"),
        "diff_ids": len(config.get("rootfs", {}).get("diff_ids") or []),
        "history": [
            {k: v for k, v in h.items() if k != "created"} for h in config.get("history") or []
        ],
    }
    out["layers"] = [
        listing_tar(_decompress(blob(ly["digest"]))) for ly in manifest.get("layers") or []
    ]
    return out


def normalise(kind: str, dest: Path) -> Any:
    if kind == "local":
        return listing_dir(dest)
    if kind == "tar":
        return listing_tar(dest.read_bytes())
    if kind == "oci":
        return listing_oci(dest.read_bytes())
    raise ValueError(kind)


# -- comparison ---------------------------------------------------------------------------


def apply_ignores(value: Any, ignores: list[str]) -> Any:
    """Drop ignored fields ("field" everywhere, or "path:field" of one entry) from lists of
    entries (recursively through dicts and lists)."""
    if isinstance(value, list):
        return [apply_ignores(v, ignores) for v in value]
    if isinstance(value, dict):
        name = value.get("path") or value.get("name")
        out = {}
        for k, v in value.items():
            if k in ignores or (name is not None and f"{name}:{k}" in ignores):
                continue
            out[k] = apply_ignores(v, ignores)
        return out
    return value


def diff_text(expected: Any, actual: Any) -> str:
    """A short human diff of two normalised results."""
    if isinstance(expected, list) and isinstance(actual, list):
        lines = []
        ek = {json.dumps(e, sort_keys=True) for e in expected}
        ak = {json.dumps(a, sort_keys=True) for a in actual}
        for e in expected:
            if json.dumps(e, sort_keys=True) not in ak:
                lines.append(f"- {json.dumps(e, sort_keys=True)}")
        for a in actual:
            if json.dumps(a, sort_keys=True) not in ek:
                lines.append(f"+ {json.dumps(a, sort_keys=True)}")
        if not lines:
            lines.append("same entries, different order")
        return "\n".join(lines[:60])
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines = []
        for k in sorted(set(expected) | set(actual)):
            if expected.get(k) != actual.get(k):
                lines.append(f"[{k}]\n" + diff_text(expected.get(k), actual.get(k)))
        return "\n".join(lines)
    return f"- {expected!r}\n+ {actual!r}"


def expected_path(name: str) -> Path:
    return EXPECTED_DIR / f"{name}.json"


def dump(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


Graph = Callable[[Ctx], Any]
