"""LLB op adapters: each LLB op kind as a solver :class:`~bkcore.solver.types.Op`.

* :mod:`bkcore.ops.load`: ``build_graph(definition, engine, ...)`` -> head edge of adapters;
* :mod:`bkcore.ops.cachejson`: Go-JSON cache-map documents and digests (solver.md §2);
* :mod:`bkcore.ops.source`, ``exec``, ``file``, ``mergediff``: one adapter per op kind.

Nothing is imported here, so importing one adapter stays cheap.
"""
