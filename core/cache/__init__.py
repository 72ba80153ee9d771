"""The cache store: content blobs, snapshots, leases, cache mounts and the key index.

Open it with :meth:`bkcore.cache.store.CacheStore.open`.
"""
