"""The ``oci-layout://`` source: images read from an OCI layout on the client."""
