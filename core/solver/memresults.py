"""An in-memory :class:`~bkcore.solver.types.ResultStore` counting references (tests, benches)."""

from __future__ import annotations

from collections import Counter

__all__ = ["MemoryResult", "MemoryResultStore"]


class MemoryResult:
    """One reference to a stored payload."""

    __slots__ = ("_id", "_released", "_store")

    def __init__(self, store: MemoryResultStore, result_id: str) -> None:
        self._store = store
        self._id = result_id
        self._released = False
        store._refs[result_id] += 1

    @property
    def id(self) -> str:
        return self._id

    @property
    def payload(self) -> object:
        return self._store.payload(self._id)

    def clone(self) -> MemoryResult:
        if self._released:
            raise RuntimeError(f"clone of released result {self._id}")
        return MemoryResult(self._store, self._id)

    async def release(self) -> None:
        if self._released:
            raise RuntimeError(f"result {self._id} released twice")
        self._released = True
        self._store._refs[self._id] -= 1

    def __repr__(self) -> str:
        return f"MemoryResult({self._id!r})"


class MemoryResultStore:
    """Payloads by result id; counts live references so tests can find leaks."""

    def __init__(self) -> None:
        self._payloads: dict[str, object] = {}
        self._refs: Counter[str] = Counter()
        self.loads: list[str] = []

    def add(self, result_id: str, payload: object = None) -> MemoryResult:
        """Store ``payload`` as ``result_id`` and return a first reference to it."""
        self._payloads[result_id] = payload
        return MemoryResult(self, result_id)

    def payload(self, result_id: str) -> object:
        return self._payloads[result_id]

    def prune(self, result_id: str) -> None:
        """Forget ``result_id`` (as a garbage collector would)."""
        self._payloads.pop(result_id, None)

    def refs(self, result_id: str) -> int:
        return self._refs[result_id]

    def live_refs(self) -> int:
        """References not yet released, over every result."""
        return sum(self._refs.values())

    async def load(self, result_id: str) -> MemoryResult | None:
        self.loads.append(result_id)
        if result_id not in self._payloads:
            return None
        return MemoryResult(self, result_id)
