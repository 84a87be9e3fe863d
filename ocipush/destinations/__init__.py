"""Destinations: a registry (``[docker://]HOST/REPO[:TAG]``), or ``oci:PATH[:TAG]`` and
``oci-archive:PATH[:TAG]`` on disk."""

from __future__ import annotations

from ..errors import UsageError
from ..events import Notes
from ..reference import Reference, check_printable, check_spec
from ..registry.client import ClientOptions
from ..registry.retry import RetryPolicy
from .base import Destination, LocalReference
from .layout import ArchiveDestination, LayoutDestination
from .registry import RegistryDestination

__all__ = [
    "ArchiveDestination",
    "Destination",
    "LayoutDestination",
    "LocalReference",
    "RegistryDestination",
    "open_destination",
    "parse_destination",
]

_LOCAL = {"oci": LayoutDestination, "oci-archive": ArchiveDestination}
# Transports of containers-transports(5) we read but do not write.
_NOT_WRITABLE = ("docker-archive", "docker-daemon", "containers-storage", "dir")


def parse_destination(text: str) -> Reference | LocalReference:
    transport, sep, rest = text.partition(":")
    if sep and transport in _LOCAL:
        check_spec(text, "destination")
        path, _, tag = rest.partition(":")
        check_spec(path, "destination path")
        check_printable(tag, "destination tag")
        if not path:
            raise UsageError(f"{text!r}: missing the path")
        return LocalReference(transport, path, tag or None)
    if sep and transport in _NOT_WRITABLE:
        raise UsageError(
            f"destination transport {transport!r} is not supported; push to a registry, oci: or oci-archive:"
        )
    return Reference.parse(text)


def open_destination(
    destination: Reference | LocalReference,
    options: ClientOptions,
    retry: RetryPolicy,
    chunk_size: int | None,
    events: Notes,
    *,
    dry_run: bool = False,
) -> LayoutDestination | ArchiveDestination | RegistryDestination:
    """A context manager giving a ready ``Destination`` (connected, or its directory made;
    with ``dry_run``, local destinations are only looked at)."""
    if isinstance(destination, LocalReference):
        return _LOCAL[destination.transport](destination.path, destination.tag, dry_run=dry_run)
    return RegistryDestination(destination, options, retry, chunk_size, events)
