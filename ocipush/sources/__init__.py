"""Image sources, one module per transport, named as in containers-transports(5)."""

from __future__ import annotations

from collections.abc import Callable

from ..reference import SourceSpec, parse_source
from .base import MAX_MANIFEST_SIZE, ImageNode, Source, load_image
from .docker_archive import DockerArchive
from .engine import save_image
from .oci_archive import open_oci_archive
from .oci_layout import OCILayout, open_oci_layout
from .tarindex import open_tar

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


def open_docker_archive(spec: SourceSpec) -> DockerArchive:
    """``docker-archive:PATH[:REPO:TAG|@N]`` (its sibling openers live in their modules;
    this one stays here while docker_archive.py is reworked for cattrs)."""
    return DockerArchive(open_tar(spec.path), spec.ref, name=str(spec))


_OPENERS: dict[str, Callable[[SourceSpec], Source]] = {
    "oci": open_oci_layout,
    "oci-archive": open_oci_archive,
    "docker-archive": open_docker_archive,
    "docker-daemon": save_image,
    "containers-storage": save_image,
}


def open_source(spec: str | SourceSpec) -> Source:
    """``TRANSPORT:DETAILS`` (parsed here when given as text) → a source; close it when
    done (``with open_source(…) as s``).

    Archives are indexed here, and docker-daemon: and containers-storage: run their
    engine's ``save`` here: errors in either are raised now.
    """
    if isinstance(spec, str):
        spec = parse_source(spec)
    return _OPENERS[spec.transport](spec)
