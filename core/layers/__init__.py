"""OCI image layers: snapshot diffs to layer tars (:mod:`.write`), compression and the
compressed-blob cache (:mod:`.compress`, :mod:`.blobcache`), layer extraction (:mod:`.apply`)."""
