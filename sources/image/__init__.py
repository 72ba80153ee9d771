"""The ``docker-image://`` source: images pulled from OCI registries into shared layer chains."""
