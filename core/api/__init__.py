"""The daemon's API layer: the gRPC wire classes (``bkcore.api.pb``, generated from
``core/api/proto``), the mapping of bkcore errors to gRPC statuses (``bkcore.api.errors``),
and the Control servicer, client and gateway built on them.

Nothing is imported here: the daemon and client load these modules only when used, so the
start-up time of ``bkcore`` commands that do not talk to a daemon does not grow.
"""
