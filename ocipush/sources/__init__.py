"""Image sources, one module per transport, named as in containers-transports(5)."""

from __future__ import annotations

from ..errors import UsageError
from .base import MAX_MANIFEST_SIZE, ImageNode, Source, load_image
from .oci_layout import OCILayout

__all__ = ["ImageNode", "MAX_MANIFEST_SIZE", "OCILayout", "Source", "TRANSPORTS", "load_image", "open_source"]

# Transports of containers-transports(5); the ones without an entry here are not readable yet.
TRANSPORTS = ("oci", "oci-archive", "docker-archive", "docker-daemon", "containers-storage", "dir", "docker")


def open_source(spec: str) -> Source:
    """``TRANSPORT:DETAILS`` → a source. PATH and REF split at the first colon, as in
    containers/image, so paths with colons are not supported there either."""
    transport, sep, rest = spec.partition(":")
    if not sep or transport not in TRANSPORTS:
        raise UsageError(
            f"unknown source transport in {spec!r}: write it as oci:PATH[:REF]"
        )
    if transport == "oci":
        path, _, ref = rest.partition(":")
        if not path:
            raise UsageError(f"{spec!r}: missing the layout path")
        return OCILayout(path, ref or None, name=spec)
    raise UsageError(f"source transport {transport!r} is not supported yet (use oci:PATH[:REF])")
