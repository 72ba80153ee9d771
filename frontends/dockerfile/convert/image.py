"""The image config the converter builds (BuildKit's ``image.Image`` as JSON).

The converter keeps the config as a plain dict with the OCI/Docker field names. Base image
configs are read through :func:`parse_image` (unknown fields dropped like Go's
``json.Unmarshal`` into the struct), and :func:`marshal_image` writes the dict the way Go's
``encoding/json`` writes BuildKit's struct: its field order, ``omitempty`` rules, sorted map
keys, ``"OnBuild":null`` and durations as nanoseconds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from bkcore.errors import FrontendError
from bkcore.llb import Platform

__all__ = ["clone_image", "empty_image", "marshal_image", "parse_image"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# (key, omitempty) in Go struct order: ocispecs.Image fields, then the outer Config.
_TOP = (
    ("created", True),
    ("author", True),
    ("architecture", False),
    ("variant", True),
    ("os", False),
    ("os.version", True),
    ("os.features", True),
    ("rootfs", False),
    ("history", True),
    ("config", False),
)
# ocispecs.ImageConfig then BuildKit's additions (Healthcheck, ArgsEscaped, OnBuild, ...).
_CONFIG = (
    ("User", True),
    ("ExposedPorts", True),
    ("Env", True),
    ("Entrypoint", True),
    ("Cmd", True),
    ("Volumes", True),
    ("WorkingDir", True),
    ("Labels", True),
    ("StopSignal", True),
    ("Healthcheck", True),
    ("ArgsEscaped", True),
    ("OnBuild", False),
    ("StopTimeout", True),
    ("Shell", True),
)
_HISTORY = ("created", "created_by", "author", "comment", "empty_layer")
_HEALTH = ("Test", "Interval", "Timeout", "StartPeriod", "Retries")
_SET_KEYS = ("ExposedPorts", "Volumes")
_LIST_KEYS = ("Env", "Entrypoint", "Cmd", "OnBuild", "Shell")


def empty_image(platform: Platform) -> dict[str, Any]:
    """The config of ``FROM scratch`` (``emptyImage``): platform, PATH, WorkingDir ``/``."""
    img: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "rootfs": {"type": "layers", "diff_ids": None},
        "config": {"Env": ["PATH=" + DEFAULT_PATH], "WorkingDir": "/"},
    }
    if platform.variant:
        img["variant"] = platform.variant
    return img


def _str_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("expected a list of strings")
    return [str(v) for v in value]


def _str_set(value: Any) -> dict[str, dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("expected an object")
    return {str(k): {} for k in value}


def _str_map(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError("expected an object")
    return {str(k): str(v) for k, v in value.items()}


def parse_image(data: bytes | str, ref: str = "") -> dict[str, Any]:
    """A base image config (JSON) as the converter's dict; ``created`` is dropped like
    BuildKit does for base images. Bad JSON -> FrontendError naming ``ref``."""
    try:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        img: dict[str, Any] = {}
        for key in ("author", "architecture", "variant", "os", "os.version"):
            if raw.get(key) is not None:
                img[key] = str(raw[key])
        if raw.get("os.features") is not None:
            img["os.features"] = _str_list(raw["os.features"])
        rootfs = raw.get("rootfs") or {}
        if not isinstance(rootfs, Mapping):
            raise ValueError("rootfs is not an object")
        img["rootfs"] = {
            "type": str(rootfs.get("type", "")),
            "diff_ids": _str_list(rootfs.get("diff_ids")),
        }
        hist = raw.get("history")
        if hist is not None:
            if not isinstance(hist, list):
                raise ValueError("history is not a list")
            entries = []
            for h in hist:
                if not isinstance(h, Mapping):
                    raise ValueError("history entry is not an object")
                entry: dict[str, Any] = {}
                for key in _HISTORY:
                    if h.get(key) is not None:
                        entry[key] = bool(h[key]) if key == "empty_layer" else str(h[key])
                entries.append(entry)
            img["history"] = entries
        img["config"] = _parse_config(raw.get("config") or {})
    except (ValueError, TypeError, AttributeError) as exc:
        where = f" of {ref}" if ref else ""
        raise FrontendError(f"failed to parse image config{where}: {exc}") from exc
    return img


def _parse_config(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError("config is not an object")
    cfg: dict[str, Any] = {}
    for key in ("User", "WorkingDir", "StopSignal"):
        if raw.get(key):
            cfg[key] = str(raw[key])
    for key in _LIST_KEYS:
        if raw.get(key) is not None:
            cfg[key] = _str_list(raw[key])
    for key in _SET_KEYS:
        if raw.get(key) is not None:
            cfg[key] = _str_set(raw[key])
    if raw.get("Labels") is not None:
        cfg["Labels"] = _str_map(raw["Labels"])
    if raw.get("ArgsEscaped"):
        cfg["ArgsEscaped"] = True
    if raw.get("StopTimeout") is not None:
        cfg["StopTimeout"] = int(raw["StopTimeout"])
    hc = raw.get("Healthcheck")
    if hc is not None:
        if not isinstance(hc, Mapping):
            raise ValueError("Healthcheck is not an object")
        health: dict[str, Any] = {}
        if hc.get("Test") is not None:
            health["Test"] = _str_list(hc["Test"])
        for key in ("Interval", "Timeout", "StartPeriod", "Retries"):
            if hc.get(key):
                health[key] = int(hc[key])
        cfg["Healthcheck"] = health
    return cfg


def clone_image(img: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy (a child stage must not change its parent's config)."""
    return copy.deepcopy(dict(img))


def _empty(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == "" or len_zero(value)


def len_zero(value: Any) -> bool:
    return isinstance(value, list | dict | tuple | str) and len(value) == 0


def _config_out(cfg: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, omitempty in _CONFIG:
        value = cfg.get(key)
        if omitempty and _empty(value):
            continue
        if key in _SET_KEYS or key == "Labels":
            value = {k: value[k] for k in sorted(value)} if value is not None else None
        elif key == "Healthcheck" and isinstance(value, Mapping):
            value = {k: value[k] for k in _HEALTH if not _empty(value.get(k))}
        out[key] = value
    return out


def _image_out(img: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, omitempty in _TOP:
        value = img.get(key)
        if key == "config":
            value = _config_out(value or {})
        elif key == "rootfs":
            rootfs = value or {}
            value = {"type": rootfs.get("type", ""), "diff_ids": rootfs.get("diff_ids") or None}
        elif key == "history" and value:
            value = [{k: h[k] for k in _HISTORY if not _empty(h.get(k))} for h in value]
        elif key in ("architecture", "os"):
            value = value or ""
        if omitempty and _empty(value):
            continue
        out[key] = value
    return out


def image_to_go(img: Mapping[str, Any]) -> dict[str, Any]:
    """``img`` with Go's field order and ``omitempty`` applied (JSON-ready)."""
    return _image_out(img)


def marshal_image(img: Mapping[str, Any]) -> bytes:
    """The config bytes, as Go's ``json.Marshal`` of BuildKit's image struct (compact,
    ``<``/``>``/``&`` escaped like Go)."""
    text = json.dumps(_image_out(img), separators=(",", ":"), ensure_ascii=False)
    for raw, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, esc)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode()
