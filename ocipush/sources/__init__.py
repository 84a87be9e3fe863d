"""Image sources, one module per transport, named as in containers-transports(5)."""

from __future__ import annotations

from collections.abc import Callable

from ..events import Notes
from ..reference import SourceSpec, parse_source, reads_stdin
from .base import MAX_MANIFEST_SIZE, ImageNode, Source, load_image
from .dir import open_dir
from .docker_archive import DockerArchive, open_docker_archive
from .engine import save_image
from .oci_archive import open_oci_archive
from .oci_layout import OCILayout, open_oci_layout
from .stdin import spool_stdin

__all__ = [
    "MAX_MANIFEST_SIZE",
    "DockerArchive",
    "ImageNode",
    "OCILayout",
    "Source",
    "SourceSpec",
    "load_image",
    "open_source",
    "parse_source",
]


_OPENERS: dict[str, Callable[[SourceSpec], Source]] = {
    "oci": open_oci_layout,
    "oci-archive": open_oci_archive,
    "docker-archive": open_docker_archive,
    "docker-daemon": save_image,
    "containers-storage": save_image,
    "dir": open_dir,
}


def open_source(spec: str | SourceSpec, notes: Notes | None = None) -> Source:
    """``TRANSPORT:DETAILS`` (parsed here when given as text) → a source; close it when
    done (``with open_source(…) as s``).

    Archives are indexed here, and docker-daemon: and containers-storage: run their
    engine's ``save`` here: errors in either are raised now. An archive on standard
    input (``docker-archive:-``) is spooled here, saying its progress to ``notes``.
    """
    if isinstance(spec, str):
        spec = parse_source(spec)
    if reads_stdin(spec):
        return _open_stdin(spec, notes)
    return _OPENERS[spec.transport](spec)


def _open_stdin(spec: SourceSpec, notes: Notes | None) -> Source:
    tar = spool_stdin(spec, notes)
    if spec.transport == "oci-archive":
        return OCILayout(tar, spec.ref, name=str(spec))
    return DockerArchive(tar, spec.ref, name=str(spec))
