"""A blob's bytes as an uploader consumes them: chunk by chunk, any chunk again, verified.

``FileContent`` is a blob whose digest and size are known (a file, an archive member):
its chunks are slices read from the source when sent, so nothing is buffered, and a
chunk that must be resent is simply read again.  Each byte is hashed once, the first time
it is read in order, so resending never corrupts the digest; ``finish()`` after the last
chunk checks count and digest, and an uploader commits only after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

import attrs

from .digest import Digest
from .errors import BlobVerificationError

__all__ = ["Chunk", "FileContent", "Position"]

Position = Callable[[int], None]  # told the blob offset reached after each block sent
BLOCK = 1 << 20  # one read, one socket write: the memory an upload holds


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


class FileContent:
    def __init__(self, opener: Callable[[], BinaryIO], digest: Digest, size: int, what: str):
        self.digest = digest
        self.size = size
        self.what = what
        self._expected = digest
        self._opener = opener
        self._file: BinaryIO | None = None
        self._hash = digest.hasher()
        self._hashed = 0  # bytes [0, _hashed) are in _hash
        self.on_position: Position | None = None

    def chunks(self, chunk_size: int | None, start: int = 0) -> Iterator[Chunk]:
        """The chunks from ``start`` (a chunk boundary): equal sizes but the last; one
        chunk for the whole blob when ``chunk_size`` is None."""
        size = self.size
        step = chunk_size or max(size - start, 1)
        for offset in range(start, size, step):
            yield Chunk(offset, min(step, size - offset), self._read)

    def read_all(self) -> bytes:
        data = b"".join(b for c in self.chunks(None) for b in c)
        self.finish()
        return data

    def _read(self, offset: int, length: int) -> Iterator[bytes]:
        if self._file is None:
            self._file = self._opener()
        self._file.seek(offset)
        pos, end = offset, offset + length
        while pos < end:
            block = self._file.read(min(BLOCK, end - pos))
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
        if got != self._expected.hex:
            raise BlobVerificationError(
                f"{self.what}: content does not match its digest {self._expected} "
                f"(it hashes to {self._expected.algorithm}:{got})"
            )
        return self._expected

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
