"""ocipush: push container images from files to OCI registries in chunks."""

__version__ = "0.1.0"
