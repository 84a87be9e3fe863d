"""Destinations: a registry (``[docker://]HOST/REPO[:TAG]``), or ``oci:PATH[:TAG]``,
``oci-archive:PATH[:TAG]`` and ``docker-archive:PATH[:REPO:TAG]`` on disk."""

from __future__ import annotations

from ..events import Notes
from ..reference import DestinationRef, LayoutReference, parse_destination
from ..registry.client import ClientOptions
from ..registry.retry import RetryPolicy
from .base import Destination
from .docker_archive import DockerArchiveDestination, prepare_docker_archive
from .layout import ArchiveDestination, LayoutDestination
from .registry import RegistryDestination

__all__ = [
    "ArchiveDestination",
    "Destination",
    "DockerArchiveDestination",
    "LayoutDestination",
    "RegistryDestination",
    "open_destination",
    "parse_destination",
    "prepare_docker_archive",
]

_LOCAL: dict[str, type[LayoutDestination]] = {
    "oci": LayoutDestination,
    "oci-archive": ArchiveDestination,
    "docker-archive": DockerArchiveDestination,
}


def open_destination(
    destination: DestinationRef,
    options: ClientOptions,
    retry: RetryPolicy,
    chunk_size: int | None,
    events: Notes,
    *,
    dry_run: bool = False,
) -> LayoutDestination | RegistryDestination:
    """A context manager giving a ready ``Destination`` (connected, or its directory made;
    with ``dry_run``, local destinations are only looked at)."""
    if isinstance(destination, LayoutReference):
        return _LOCAL[destination.transport](destination.path, destination.tag, dry_run=dry_run)
    return RegistryDestination(destination, options, retry, chunk_size, events)
