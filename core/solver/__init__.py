"""The generic solver: graphs of :class:`~bkcore.solver.types.Op` vertices, cache keys,
scheduling, deduplication across jobs and cancellation (spec/solver.md).

Modules: ``types`` (interfaces), ``definition`` (load checks, graph building), ``keys`` (key
ids and the match rule), ``keystorage`` (storage contract), ``memkeys`` / ``memresults``
(in-memory storage), ``flight`` (shared computations), ``scheduler`` (:class:`Solver`).
Nothing is imported here, so importing one module stays cheap.
"""
