"""Cache keys and BuildKit's match rule (spec/solver.md §3.1).

* Root key (op without inputs): ``sha256("<digest>@<output>")``; for a ``random:`` digest the
  id is ``random:`` + the hex of the same hash.
* Content key of an input: the root key of the content digest with output ``-1``, linked with
  an empty selector.
* A key with inputs is stored as links from every key of every input, labelled
  ``(input index, output, digest, selector)``; a new key gets a random id.
* Match rule: a stored key matches when, for every input i, at least one current key of input
  i links to it with label ``(i, output, digest, selector)``. The newest record wins.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence

from bkcore.solver.keystorage import KeyStorage, LinkLabel, ResultRecord

__all__ = ["InputKeys", "content_key", "match", "newest_records", "root_key", "save_key"]

InputKeys = Sequence[tuple[str, str]]
"""The current keys of one input: alternatives of (key id, selector)."""


def root_key(digest: str, output: int) -> str:
    """Id of the key of an op without inputs (or of a content digest with output -1)."""
    hexd = hashlib.sha256(f"{digest}@{output}".encode()).hexdigest()
    if digest.startswith("random:"):
        return "random:" + hexd
    return "sha256:" + hexd


def content_key(content_digest: str) -> str:
    """Id of the content key of an input whose content digest is ``content_digest``."""
    return root_key(content_digest, -1)


def match(storage: KeyStorage, digest: str, output: int, inputs: Sequence[InputKeys]) -> list[str]:
    """Stored keys of (digest, output) that every input links to (sorted ids)."""
    candidates: set[str] | None = None
    for index, alternatives in enumerate(inputs):
        found: set[str] = set()
        for key, selector in alternatives:
            found.update(storage.walk_links(key, LinkLabel(index, output, digest, selector)))
        candidates = found if candidates is None else candidates & found
        if not candidates:
            return []
    return sorted(candidates or ())


def newest_records(storage: KeyStorage, keys: Iterable[str]) -> list[ResultRecord]:
    """Every record saved under ``keys``, newest first (ties broken by result id)."""
    records: list[ResultRecord] = []
    for key in keys:
        records.extend(storage.results(key))
    records.sort(key=lambda r: (-r.created_at, r.result_id))
    return records


def save_key(
    storage: KeyStorage,
    digest: str,
    output: int,
    inputs: Sequence[InputKeys],
    result_id: str,
    created_at: float,
) -> str:
    """Save ``result_id`` under the key of (digest, output, inputs); return the key id.

    An existing key that already matches is reused, so repeated builds (and a normal build
    after an ignore_cache one) keep finding it; otherwise a new random id is made.
    """
    if not inputs:
        key = root_key(digest, output)
    else:
        found = match(storage, digest, output, inputs)
        key = found[0] if found else "sha256:" + os.urandom(32).hex()
        for index, alternatives in enumerate(inputs):
            for src, selector in alternatives:
                storage.add_link(src, LinkLabel(index, output, digest, selector), key)
    storage.add_result(key, result_id, created_at)
    return key
