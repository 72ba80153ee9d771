"""Storage of cache keys, the links between them, and the results saved under them.

This is the contract between the solver (which computes keys and applies BuildKit's match
rule, spec/solver.md §3) and the store that persists them (in memory for tests, SQLite in
``bkcore.cache``). A key with inputs is found by following links labelled
``(input index, output, digest, selector)`` from every input's keys (§3.1 match rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class LinkLabel:
    """The label of a link from an input key to the key of the vertex that uses it."""

    input: int
    output: int
    digest: str
    selector: str


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """A result (snapshot or other ref, named by ``result_id``) saved under ``key``."""

    key: str
    result_id: str
    created_at: float


class KeyStorage(Protocol):
    """Persistence of keys, links and results. Implementations must be thread-safe."""

    def exists(self, key: str) -> bool:
        """True when ``key`` has links or results."""
        ...

    def add_link(self, src: str, label: LinkLabel, dst: str) -> None:
        """Record that input key ``src`` leads to key ``dst`` under ``label`` (idempotent)."""
        ...

    def walk_links(self, src: str, label: LinkLabel) -> list[str]:
        """Keys reached from ``src`` through links labelled ``label``."""
        ...

    def add_result(self, key: str, result_id: str, created_at: float) -> None:
        """Save ``result_id`` under ``key`` (idempotent for the same pair)."""
        ...

    def results(self, key: str) -> list[ResultRecord]:
        """Results saved under ``key``, newest first."""
        ...

    def release_result(self, result_id: str) -> None:
        """Forget every record of ``result_id`` (after it was pruned); dangling keys go too."""
        ...
