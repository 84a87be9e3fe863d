"""A blob's bytes as a destination consumes them: chunk by chunk, any chunk again, verified.

This module is a value layer: the uploader (``registry/upload.py``), the offline ``oci:``
writer and the transcoder all depend on the protocols defined here, downward, and none
of them on each other.

- ``BlobContent`` is what every destination needs of a blob: its chunks (any of them
  again, to resend or start over), then ``finish()``, which verifies it.  ``ChunkBody`` is
  one request body.  ``UploadOutcome`` is what a destination says it did with a blob.
- ``FileContent`` is a blob whose digest and size are known (a file, an archive member):
  its chunks are slices read from the source when sent, so nothing is buffered, and a
  chunk that must be resent is simply read again.  Each byte is hashed once, the first
  time it is read in order, so resending never corrupts the digest; ``finish()`` after
  the last chunk checks count and digest, and an uploader commits only after it.

A layer (re)compressed while it uploads is ``transcode.TranscodedContent``: the same
protocol, with a digest known only at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import BinaryIO, Protocol

import attrs

from .chunks import chunk_ranges
from .digest import Digest
from .errors import BlobVerificationError, SourceError

__all__ = [
    "BLOCK", "BlobContent", "Chunk", "ChunkBody", "FileContent", "Position", "UploadJournal", "UploadOutcome",
    "UploadPoint",
]

Position = Callable[[int], None]  # told the blob offset reached after each block sent
BLOCK = 1 << 20  # one read, one socket write: the memory an upload holds


class ChunkBody(Protocol, Iterable[bytes]):
    """One request body: ``length`` bytes at ``offset``; iterating it again gives the same
    bytes (a resent request, or httpx replaying a body after an auth challenge)."""

    @property
    def offset(self) -> int: ...

    @property
    def length(self) -> int: ...

    @property
    def end(self) -> int: ...

    def piece(self, offset: int, length: int) -> ChunkBody:
        """``length`` bytes of this body from blob ``offset``: a refused (413) body is sent
        again in smaller pieces on the same upload, from bytes still at hand."""


class BlobContent(Protocol):
    """What a destination needs of a blob. ``digest`` may be None until ``finish()``
    (a stream being compressed); ``chunks`` may be called again to start over."""

    @property
    def digest(self) -> Digest | None: ...

    @property
    def size(self) -> int | None:
        """Known up front for a file; for a stream, after the last chunk."""

    def chunks(self, chunk_size: int | None, start: int = 0) -> Iterator[ChunkBody]: ...

    def stream(self) -> Iterator[bytes]:
        """The whole blob from the beginning, block by block (for writers that need no chunks)."""

    def finish(self) -> Digest:
        """The last byte was read: verify the blob and return its digest."""

    def close(self) -> None: ...


@attrs.frozen
class UploadOutcome:
    """What a destination did with one blob."""

    action: str  # "skipped" (the destination had it) or "uploaded"
    digest: Digest
    requests: int = 0  # chunks the registry accepted (PATCH 202/201)
    chunk_size: int | None = None  # the largest body of the chunks sent last
    retries: int = 0  # requests sent again after a transient failure, plus restarts
    sent: Mapping[str, int] = attrs.field(factory=dict)  # every request sent, by method, whatever its answer
    restarts: int = 0  # new uploads (POST) of the blob after the first
    refused: int = 0  # requests answered 413 (a body limit nobody announced)
    resumed_at: int | None = None  # an earlier run's upload went on from here (bytes it held)


@attrs.frozen
class UploadPoint:
    """Where an open upload stands: its URL (the registry's last ``Location``), the bytes
    the registry confirmed, and the chunk sizes it was cut into (its chunks must stay equal)."""

    url: str
    offset: int
    chunk_size: int | None  # every chunk but the last; None: the whole blob in one request
    minimum: int | None = None  # the registry's OCI-Chunk-Min-Length when the upload began
    maximum: int | None = None  # its OCI-Chunk-Max-Length


class UploadJournal(Protocol):
    """What the uploader needs of the record of open uploads (``resume.py``), for one blob:
    the upload an earlier run left open, and a place to say how this one stands.  A
    protocol here so that the HTTP layer never imports the record (nor it the HTTP layer)."""

    @property
    def resume(self) -> bool:
        """False (``--no-resume``): the recorded upload is cancelled, not continued."""

    @property
    def keep_partial(self) -> bool:
        """True (``--keep-partial``): an interrupted push keeps its open uploads."""

    def resume_point(self) -> UploadPoint | None:
        """The upload an earlier run left for this blob, as recorded; None when there is none."""

    def confirmed(self, point: UploadPoint) -> None:
        """The registry confirmed ``point``: record it (atomically) for a later run."""

    def kept(self) -> None:
        """The upload is left open on purpose (retries exhausted, ``--keep-partial``)."""

    def done(self) -> None:
        """The upload was committed or cancelled: forget it."""

    def release(self) -> None:
        """This run is finished with the blob (whatever the outcome): another run may take
        the record up (``resume.py`` locks it while a run uses it)."""


@attrs.frozen
class Chunk:
    """One request body: ``length`` bytes at ``offset``. Iterating it again re-reads them
    (it is not a generator: httpx replays a non-generator iterable when it resends a
    request after an auth challenge, where a generator would already be consumed)."""

    offset: int
    length: int
    _read: Callable[[int, int], Iterator[bytes]]

    @property
    def end(self) -> int:
        return self.offset + self.length

    def __iter__(self) -> Iterator[bytes]:
        return self._read(self.offset, self.length)

    def piece(self, offset: int, length: int) -> Chunk:
        """The same reader over a part of this chunk: its bytes are read again from there."""
        if offset < self.offset or length < 1 or offset + length > self.end:
            raise ValueError(f"{offset}+{length} is not inside the chunk {self.offset}+{self.length}")
        return Chunk(offset, length, self._read)


class FileContent:
    """A blob of known digest and size, read from its source when sent (see the module docstring)."""

    def __init__(self, opener: Callable[[], BinaryIO], digest: Digest, size: int, what: str):
        self.digest = digest
        self.size = size
        self.what = what
        self._opener = opener
        self._file: BinaryIO | None = None
        self._hash = digest.hasher()
        self._hashed = 0  # bytes [0, _hashed) are in _hash
        self.on_position: Position | None = None

    def chunks(self, chunk_size: int | None, start: int = 0) -> Iterator[ChunkBody]:
        """The chunks from ``start`` (a chunk boundary): equal sizes but the last; one
        chunk for the whole blob when ``chunk_size`` is None."""
        if self._hashed < start:
            self._hash_prefix(start)
        if start and start >= self.size:
            return  # a resumed upload that holds the whole blob: only its commit is left
        for offset, length in chunk_ranges(self.size, chunk_size, start):
            yield Chunk(offset, length, self._read)

    def _hash_prefix(self, end: int) -> None:
        """Read and hash ``[0, end)`` without sending it: an upload resumed at ``end``
        holds those bytes already, and ``finish()`` must still check the whole blob."""
        position, self.on_position = self.on_position, None
        try:
            for _ in self._read(self._hashed, end - self._hashed):
                pass
        finally:
            self.on_position = position

    def stream(self) -> Iterator[bytes]:
        """The whole blob, block by block (verified by ``finish()``)."""
        return self._read(0, self.size)

    def read_all(self) -> bytes:
        data = b"".join(self.stream())
        self.finish()
        return data

    def _read(self, offset: int, length: int) -> Iterator[bytes]:
        if self._file is None:
            self._file = self._opener()
        pos, end = offset, offset + length
        while pos < end:
            try:  # a failing disk under the source: its error, not a traceback
                self._file.seek(pos)
                block = self._file.read(min(BLOCK, end - pos))
            except OSError as e:
                raise SourceError(f"{self.what}: reading at {pos} bytes: {e.strerror or e}") from None
            if not block:
                raise BlobVerificationError(f"{self.what}: truncated at {pos} bytes, descriptor says {self.size}")
            if pos <= self._hashed < pos + len(block):
                self._hash.update(memoryview(block)[self._hashed - pos :])
                self._hashed = pos + len(block)
            pos += len(block)
            if self.on_position:
                self.on_position(pos)
            yield block

    def finish(self) -> Digest:
        """The last chunk was read: the blob must hash to its digest. Returns the digest."""
        self.close()
        if self._hashed != self.size:
            raise BlobVerificationError(f"{self.what}: read {self._hashed} of {self.size} bytes")
        got = self._hash.hexdigest()
        if got != self.digest.hex:
            raise BlobVerificationError(
                f"{self.what}: content does not match its digest {self.digest} "
                f"(it hashes to {self.digest.algorithm}:{got})"
            )
        return self.digest

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
