"""The ``http://`` and ``https://`` sources: one downloaded file in a new snapshot."""
