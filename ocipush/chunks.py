"""Chunk arithmetic for the chunked upload: pure functions and the limits learnt, no I/O.

Rules (distribution-spec 1.1 plus what serverless registries require):
- a chunk is a ``Content-Range`` of ``start-end``, inclusive, starting at 0, in order;
- every chunk but the last has exactly the same size (object-store multipart parts must
  be equal: serverless-registry answers 416 to a part larger than the first);
- every chunk but the last is at least ``OCI-Chunk-Min-Length``;
- no chunk is larger than ``OCI-Chunk-Max-Length`` (not in the spec; sent by
  serverless-registry) nor than the user's ``--chunk-size``.

The registry's answers (``Range``, the ``OCI-Chunk-*`` limits) are read by the strict
grammars of ``headers.py``; what arrives here is already a checked number.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from .errors import UploadError

__all__ = ["HostLimits", "choose_chunk_size", "chunk_ranges", "content_range"]


def choose_chunk_size(requested: int | None, minimum: int | None, maximum: int | None) -> int | None:
    """The size of every chunk but the last, or None for the whole blob in one request.

    The smaller of the user's size and the registry's maximum; raised to the registry's
    minimum when below it, unless that would exceed the maximum (a registry that
    advertises min > max is contradicting itself; its maximum is the hard limit).
    """
    limits = [x for x in (requested, maximum) if x]
    if not limits:
        return None
    size = min(limits)
    if minimum and size < minimum:
        size = min(minimum, maximum) if maximum else minimum
    return max(size, 1)


def chunk_ranges(size: int, chunk: int | None, start: int = 0) -> Iterator[tuple[int, int]]:
    """(offset, length) of each chunk from ``start``; ``start`` must lie on a chunk boundary."""
    if chunk is None:
        chunk = max(size - start, 1)
    if start % chunk:
        raise ValueError(f"offset {start} is not a multiple of the chunk size {chunk}")
    for offset in range(start, size, chunk):
        yield offset, min(chunk, size - offset)


def content_range(offset: int, length: int) -> str:
    """The spec's form: inclusive, no ``bytes `` prefix, no ``/total``."""
    return f"{offset}-{offset + length - 1}"


class HostLimits:
    """What we learnt about the registry's body limit, shared by all uploads of a push.

    A ``413`` that nobody announced halves the refused size, but never below the largest
    body the registry accepted (known to pass): from 64 MiB to an 8 MiB limit is three
    refusals, said once, after the push (``learnt``).  ``equal_chunks`` is learnt when a
    registry refuses the smaller chunks that follow a re-cut (serverless-registry's rule)."""

    def __init__(self, requested: int | None):
        self.requested = requested  # the user's --chunk-size
        self._learnt: int | None = None  # after a 413: the largest size that may pass
        self._accepted = 0  # the largest body the registry took
        self.equal_chunks = False
        self._lock = threading.Lock()

    @property
    def learnt(self) -> int | None:
        """The size unannounced 413s taught us, None when there was none."""
        with self._lock:
            return self._learnt

    def chunk_size(self, minimum: int | None, maximum: int | None) -> int | None:
        with self._lock:
            caps = [c for c in (self.requested, self._learnt) if c]
        return choose_chunk_size(min(caps) if caps else None, minimum, maximum)

    def accepted(self, size: int) -> None:
        """The registry took a body of ``size``: no 413 needs to take us below it."""
        with self._lock:
            self._accepted = max(self._accepted, size)

    def too_large(self, size: int, minimum: int | None) -> int:
        """A body of ``size`` got 413: remember half of it (not below the largest body
        accepted, nor the registry's minimum); raise when we cannot go smaller. Returns
        the size to use from now on."""
        floor = minimum or 1
        if size <= floor:
            raise UploadError(f"the registry refuses bodies of {size} bytes (413), and chunks cannot be smaller")
        with self._lock:
            good = self._accepted if self._accepted < size else 0
            self._learnt = min(self._learnt or size, max(size // 2, floor, good))
            return self._learnt
