"""Destinations: a registry (``[docker://]HOST/REPO[:TAG]``), or ``oci:PATH[:TAG]`` and
``oci-archive:PATH[:TAG]`` on disk."""

from __future__ import annotations

from ..events import Notes
from ..reference import DestinationRef, LayoutReference, parse_destination
from ..registry.client import ClientOptions
from ..registry.retry import RetryPolicy
from .base import Destination
from .layout import ArchiveDestination, LayoutDestination
from .registry import RegistryDestination

__all__ = [
    "ArchiveDestination",
    "Destination",
    "LayoutDestination",
    "RegistryDestination",
    "open_destination",
    "parse_destination",
]

_LOCAL = {"oci": LayoutDestination, "oci-archive": ArchiveDestination}


def open_destination(
    destination: DestinationRef,
    options: ClientOptions,
    retry: RetryPolicy,
    chunk_size: int | None,
    events: Notes,
    *,
    dry_run: bool = False,
) -> LayoutDestination | ArchiveDestination | RegistryDestination:
    """A context manager giving a ready ``Destination`` (connected, or its directory made;
    with ``dry_run``, local destinations are only looked at)."""
    if isinstance(destination, LayoutReference):
        return _LOCAL[destination.transport](destination.path, destination.tag, dry_run=dry_run)
    return RegistryDestination(destination, options, retry, chunk_size, events)
