"""In-process file system operations of the engine.

Modules (import the one you need; this package imports nothing on purpose):

* ``securepath``: resolve untrusted paths inside a root (``resolve``)
* ``patterns``: include/exclude matching (``PathMatcher``)
* ``fileops``: the LLB file actions ``mkdir``, ``mkfile``, ``rm``, ``copy``
* ``users``: ``Owner``, ``lookup_user``, ``lookup_group``
* ``contenthash``: content checksums of paths (``checksum``, ``ContentHasher``)
* ``errors``: ``FileOpError``, ``PathNotFoundError``
"""
