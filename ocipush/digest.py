"""Content digests (``sha256:…``) and a reader that verifies bytes as they stream past."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import attrs

from .errors import BlobVerificationError

__all__ = ["BlobReader", "Digest"]

# The OCI image spec's digest grammar, with the two registered algorithms checked strictly.
_DIGEST_RE = re.compile(r"^(?P<alg>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)$")
_HEX_LEN = {"sha256": 64, "sha512": 128}


@attrs.frozen(order=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        m = _DIGEST_RE.match(text)
        if not m:
            raise ValueError(f"not a digest: {text!r}")
        alg, hexpart = m["alg"], m["hex"]
        if alg not in _HEX_LEN:
            raise ValueError(f"unsupported digest algorithm {alg!r} in {text!r}")
        if len(hexpart) != _HEX_LEN[alg] or not re.fullmatch(r"[0-9a-f]+", hexpart):
            raise ValueError(f"malformed {alg} digest: {text!r}")
        return cls(alg, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self):
        return hashlib.new(self.algorithm)

    @property
    def short(self) -> str:
        """The form people read in progress lines: ``sha256:0123456789ab``."""
        return f"{self.algorithm}:{self.hex[:12]}"

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


class BlobReader:
    """A blob's bytes, readable chunk by chunk (any chunk again, for retries), verified.

    Each byte is hashed once, the first time it is read in order, so re-sending a chunk
    costs a re-read but never corrupts the digest.  ``finish()`` after the last byte checks
    the count and the digest; an uploader sends its final PUT only after it, so a corrupt
    source never becomes a blob on the registry.  Errors name ``what`` (a file or member).
    """

    BLOCK = 1 << 20  # what one read and one socket write handle: memory per upload

    def __init__(self, opener: Callable[[], BinaryIO], digest: Digest, size: int, what: str):
        self.digest = digest
        self.size = size
        self.what = what
        self._opener = opener
        self._file: BinaryIO | None = None
        self._hash = digest.hasher()
        self._hashed = 0  # bytes [0, _hashed) are in _hash

    def chunk(self, offset: int, length: int, on_bytes: Callable[[int], None] | None = None) -> Iterable[bytes]:
        """A body for one request: iterating it again re-reads the same bytes."""
        return _Chunk(self, offset, length, on_bytes)

    def read_all(self) -> bytes:
        data = b"".join(self.chunk(0, self.size))
        self.finish()
        return data

    def _read(self, offset: int, length: int, on_bytes) -> Iterator[bytes]:
        if self._file is None:
            self._file = self._opener()
        self._file.seek(offset)
        pos, end = offset, offset + length
        while pos < end:
            block = self._file.read(min(self.BLOCK, end - pos))
            if not block:
                raise BlobVerificationError(
                    f"{self.what}: truncated at {pos} bytes, descriptor says {self.size}"
                )
            if pos <= self._hashed < pos + len(block):
                self._hash.update(memoryview(block)[self._hashed - pos :])
                self._hashed = pos + len(block)
            pos += len(block)
            if on_bytes:
                on_bytes(len(block))
            yield block

    def finish(self) -> None:
        """The last byte has been read: the blob must hash to its digest."""
        self.close()
        if self._hashed != self.size:
            raise BlobVerificationError(f"{self.what}: read {self._hashed} of {self.size} bytes")
        got = self._hash.hexdigest()
        if got != self.digest.hex:
            raise BlobVerificationError(
                f"{self.what}: content does not match its digest {self.digest} "
                f"(it hashes to {self.digest.algorithm}:{got})"
            )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@attrs.frozen
class _Chunk:
    # Not a generator: httpx replays a non-generator iterable when it resends a request
    # (an auth challenge, a retry), where a generator would already be consumed.
    reader: BlobReader
    offset: int
    length: int
    on_bytes: Callable[[int], None] | None

    def __iter__(self) -> Iterator[bytes]:
        return self.reader._read(self.offset, self.length, self.on_bytes)
