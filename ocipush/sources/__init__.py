"""Image sources, one module per transport, named as in containers-transports(5)."""

from __future__ import annotations

from ..errors import UsageError
from ..reference import check_printable, check_spec
from .base import MAX_MANIFEST_SIZE, ImageNode, Source, load_image
from .docker_archive import DockerArchive
from .engine import SAVE_COMMANDS, save_image
from .oci_archive import open_oci_archive
from .oci_layout import OCILayout
from .store import DirStore
from .tarindex import open_tar

__all__ = [
    "MAX_MANIFEST_SIZE",
    "TRANSPORTS",
    "DockerArchive",
    "ImageNode",
    "OCILayout",
    "Source",
    "load_image",
    "open_source",
]

# Transports of containers-transports(5); the ones without an entry here are not readable yet.
TRANSPORTS = ("oci", "oci-archive", "docker-archive", "docker-daemon", "containers-storage", "dir", "docker")

_FORMS = (
    "oci:PATH[:REF]",
    "oci-archive:PATH[:REF]",
    "docker-archive:PATH[:REPO:TAG|@N]",
    "docker-daemon:IMAGE",
    "containers-storage:IMAGE",
)
_SUPPORTED = ", ".join(_FORMS)


def open_source(spec: str) -> Source:
    """``TRANSPORT:DETAILS`` → a source; close it when done (``with open_source(…) as s``).

    PATH and REF split at the first colon, as in containers/image, so paths with colons
    are not supported there either. Archives are indexed here, and docker-daemon: and
    containers-storage: run their engine's ``save`` here: errors in either are raised now.
    """
    check_spec(spec, "source")
    transport, sep, rest = spec.partition(":")
    if not sep or transport not in TRANSPORTS:
        raise UsageError(f"unknown source transport in {spec!r}: use one of {_SUPPORTED}")
    if transport in SAVE_COMMANDS:
        if not rest:
            raise UsageError(f"{spec!r}: missing the image name")
        check_printable(rest, "image name")
        return save_image(transport, rest, name=spec)
    path, _, ref = rest.partition(":")
    check_spec(path, "source path")
    check_printable(ref, "source REF")
    if transport in ("oci", "oci-archive", "docker-archive") and not path:
        raise UsageError(f"{spec!r}: missing the {'layout' if transport == 'oci' else 'archive'} path")
    if transport == "oci":
        return OCILayout(DirStore(path), ref or None, name=spec)
    if transport == "oci-archive":
        return open_oci_archive(path, ref or None, name=spec)
    if transport == "docker-archive":
        return DockerArchive(open_tar(path), ref or None, name=spec)
    raise UsageError(f"source transport {transport!r} is not supported yet (use one of {_SUPPORTED})")
