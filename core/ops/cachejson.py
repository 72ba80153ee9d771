"""Cache-map documents of LLB ops, encoded exactly like BuildKit's Go ``encoding/json``.

The cache-map digest of an exec, file, merge or diff op is derived from a JSON document
(spec/solver.md §2). Op adapters build the message they want to key on (for example an
ExecOp copy with selectors cleared) and pass it here; this module only encodes:

* :func:`go_json_message` / :func:`go_json`: Go JSON of a pb message or of plain values
  (omitempty except the always-written index fields, enums as numbers, bytes as base64,
  sorted map keys, HTML escaping); shared with ``dump-llb`` through :mod:`bkcore.llb.gojson`;
* :func:`exec_document`, :func:`file_document`, :func:`merge_document`,
  :func:`diff_document`: the exact wrapper documents of each op kind;
* :func:`digest_of`: ``sha256:<hex>`` of a text; :func:`source_digest`: the cache-map
  digest of a source key (``random:<hex>`` for ``session:`` keys, §2.3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import betterproto

from bkcore.llb import pb
from bkcore.llb.gojson import JSONValue, go_json, message_json

__all__ = [
    "JSONValue",
    "diff_document",
    "digest_of",
    "exec_document",
    "file_action_body",
    "file_document",
    "go_json",
    "go_json_message",
    "merge_document",
    "message_json",
    "source_digest",
]


def go_json_message(msg: betterproto.Message) -> str:
    """Go ``json.Marshal`` of one pb message (e.g. a ``FileActionCopy`` action body)."""
    return go_json(message_json(msg))


def digest_of(text: str | bytes) -> str:
    """``sha256:<hex>`` of ``text`` (UTF-8 encoded when a str)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return "sha256:" + hashlib.sha256(data).hexdigest()


def exec_document(exec_op: pb.ExecOp, os: str, arch: str, variant: str = "") -> str:
    """``{"Type":"buildkit.exec.v0","Exec":…,"OS":…,"Arch":…[,"Variant":…]}``.

    ``exec_op`` must already be the keyed copy (selectors, extra-host IPs and proxy env
    cleared, the lone root mount dropped; solver.md §2.1). ``OS``/``Arch`` are always
    written, ``Variant`` only when set.
    """
    doc: dict[str, JSONValue] = {
        "Type": "buildkit.exec.v0",
        "Exec": message_json(exec_op),
        "OS": os,
        "Arch": arch,
    }
    if variant:
        doc["Variant"] = variant
    return go_json(doc)


def file_action_body(action: pb.FileAction) -> betterproto.Message:
    """The inner message of a FileAction (copy/mkfile/mkdir/rm), without the index fields."""
    kind, body = betterproto.which_one_of(action, "action")
    if not kind or body is None:
        raise ValueError("file action has no copy, mkfile, mkdir or rm body")
    assert isinstance(body, betterproto.Message)
    return body


def file_document(
    action_jsons: Sequence[str], indexes: Sequence[tuple[int, int, int]] | None = None
) -> str:
    """``{"Type":"buildkit.file.v0","Actions":[<base64 of each>],"indexes":[[i,s,o],…]}``.

    ``action_jsons`` are the Go JSON texts of each action body (:func:`go_json_message`
    after the adapter's own rewrites, e.g. copy ``src`` → base name). ``indexes`` holds
    ``(input, secondaryInput, output)`` per action and is left out when None or empty (the
    default chain, solver.md §2.2).
    """
    doc: dict[str, JSONValue] = {
        "Type": "buildkit.file.v0",
        "Actions": [text.encode("utf-8") for text in action_jsons],
    }
    if indexes:
        doc["indexes"] = [list(triple) for triple in indexes]
    return go_json(doc)


def merge_document(merge: pb.MergeOp) -> str:
    """``{"Type":"buildkit.merge.v0","Merge":…}``: used as the cache-map digest as is."""
    return go_json({"Type": "buildkit.merge.v0", "Merge": message_json(merge)})


def diff_document(diff: pb.DiffOp) -> str:
    """``{"Type":"buildkit.diff.v0","Diff":…}``: used as the cache-map digest as is."""
    return go_json({"Type": "buildkit.diff.v0", "Diff": message_json(diff)})


def source_digest(key: str) -> str:
    """Cache-map digest of a source key: sha256 of ``buildkit.source.v0:<key>``.

    Keys starting with ``session:`` are only valid inside one session; their digest is
    ``random:<same hex>`` so the solver never exports or reuses them across sessions.
    """
    hexdigest = hashlib.sha256(("buildkit.source.v0:" + key).encode("utf-8")).hexdigest()
    if key.startswith("session:"):
        return "random:" + hexdigest
    return "sha256:" + hexdigest
