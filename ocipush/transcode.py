"""Transcoding a layer while it uploads: the streaming pipeline, named for what it does.

read → verify the source digest → decompress → verify the diff_id → compress → hash and
count the output.  ``TranscodedContent`` offers the result as a ``content.BlobContent``:
its digest and size are known only at the end, which the chunked protocol allows (the
digest goes on the final PUT).  A chunk's length must be known before its PATCH, so each
chunk is spilled as it is produced — in memory up to 1 MiB, then to an anonymous
temporary file — and sent from there; a failed request resends the spilled chunk.  A
producer thread compresses the next chunk while the current one is sent (``handover``).
When the whole upload must start again, the stream is produced again: it is
deterministic.  Memory per upload stays at the spill limit plus the codecs' buffers,
whatever the layer size.

The codecs themselves (detect, decompress, compress) are ``compression``'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from . import compression, zstdchunked
from .content import BLOCK, Chunk, ChunkBody, Position
from .digest import Digest
from .errors import BlobVerificationError, OcipushError, SourceError, local_io_error
from .handover import in_thread

if TYPE_CHECKING:
    from hashlib import _Hash

    from _typeshed import WriteableBuffer

__all__ = ["SPOOL_MEMORY", "STREAM_CHUNK", "TranscodedContent"]

SPOOL_MEMORY = 1 << 20  # a spilled chunk stays in memory up to this, then goes to disk
STREAM_CHUNK = 64 << 20  # chunk size for streams when neither user nor registry sets one


class TranscodedContent:
    """A layer (re)compressed on the fly (see the module docstring)."""

    def __init__(
        self,
        opener: Callable[[], BinaryIO],
        source_digest: Digest,
        source_size: int,
        what: str,
        *,
        diff_id: Digest | None,
        target: str | None,
        level: int | None = None,
    ) -> None:
        self.digest: Digest | None = None  # known after the last chunk
        self.size: int | None = None
        self.diff_id = diff_id
        self.what = what
        self.on_position: Position | None = None
        self._opener = opener
        self._source_digest = source_digest
        self._source_size = source_size
        self._target = target
        self._level = level
        # zstd:chunked: the layer annotations its table of contents needs, known at the end
        # (empty when the writer fell back to plain zstd; ``fallback`` says why).
        self.annotations: dict[str, str] = {}
        self.fallback: str | None = None

    def chunks(self, chunk_size: int | None, start: int = 0) -> Iterator[ChunkBody]:
        """Produce the stream from the beginning (again), cut into equal chunks; chunks
        before ``start`` are produced and dropped (the stream is deterministic).

        Three threads share the work of one layer: one decompresses and hashes, one
        compresses and spills the next chunk, and the caller's sends the current one."""
        current: IO[bytes] | None = None
        try:
            for current, offset, length in in_thread(
                lambda: self._spills(chunk_size or STREAM_CHUNK, start),
                maxsize=1,
                discard=lambda item: _discard(item[0]),
            ):
                yield self._spilled_chunk(current, offset, length)
                _discard(current)  # the uploader has moved past it
                current = None
        finally:
            if current is not None:
                _discard(current)

    def _spills(self, step: int, start: int) -> Iterator[tuple[IO[bytes], int, int]]:
        """The output cut into spills of ``step`` bytes: (spill, offset, length)."""
        spill: IO[bytes] = _new_spill()
        handed = False  # the last spill went to the consumer, who discards it
        try:
            offset, filled = 0, 0
            for block in self.stream():
                view = memoryview(block)
                while view:
                    take = view[: step - filled]
                    self._spill_write(spill, take)
                    filled += len(take)
                    view = view[len(take) :]
                    if filled == step:
                        full, spill = spill, _new_spill()
                        if offset >= start:
                            yield full, offset, step
                        else:
                            _discard(full)
                        offset, filled = offset + step, 0
            if filled and offset >= start:
                handed = True
                yield spill, offset, filled
        finally:
            if not handed:
                _discard(spill)

    def _spill_write(self, spill: IO[bytes], data: memoryview) -> None:
        """A failing write is the spill's disk (a full ``$TMPDIR``), not the layer: say
        so, naming the directory, instead of an OSError traceback."""
        try:
            spill.write(data)
        except OSError as e:
            raise local_io_error(tempfile.gettempdir(), f"spilling a compressed chunk of {self.what}", e) from None

    def stream(self) -> Iterator[bytes]:
        """The output from the beginning (again), verified; sets ``digest`` and ``size``
        once the last block was produced."""
        digest, size = hashlib.sha256(), 0
        self.digest = self.size = None
        for block in self._output():
            digest.update(block)
            size += len(block)
            yield block
        self.digest, self.size = Digest("sha256", digest.hexdigest()), size

    def _spilled_chunk(self, spill: IO[bytes], offset: int, length: int) -> Chunk:
        def read(start: int, n: int) -> Iterator[bytes]:
            pos = start
            while pos < start + n:
                try:
                    spill.seek(pos - offset)
                    block = spill.read(min(BLOCK, start + n - pos))
                except OSError as e:
                    raise local_io_error(tempfile.gettempdir(), f"reading back a chunk of {self.what}", e) from None
                if not block:
                    raise local_io_error(
                        tempfile.gettempdir(), f"reading back a chunk of {self.what}", OSError(0, "spill truncated")
                    )
                pos += len(block)
                if self.on_position:
                    self.on_position(pos)
                yield block

        return Chunk(offset, length, read)

    def _output(self) -> Iterator[bytes]:
        """Decompressed blocks (from their own thread) → compressed."""
        encode = _encoder(self._target, self._level)
        try:
            for block in in_thread(self._plain, maxsize=4):
                if out := encode.feed(block):
                    yield out
            yield encode.flush()
        finally:  # on an error or a cancelled upload too: the codec's threads and cores go back
            encode.close()
        if isinstance(encode, zstdchunked.ZstdChunkedEncoder):
            self.annotations, self.fallback = encode.annotations, encode.fallback

    def _plain(self) -> Iterator[bytes]:
        """Source → verified → decompressed → verified, in bounded blocks."""
        # With a diff_id to check, the uncompressed bytes are verified, and those are what
        # goes out: hashing the compressed source too would only cost a core-second per GB.
        # Without one (a config that names none), the source digest is the check.
        check_source = self.diff_id is None
        with self._opener() as raw:
            source_hash = self._source_digest.hasher() if check_source else None
            source = _HashingReader(raw, source_hash)
            found = compression.detect(source.peek(8))
            if found not in (None, "gzip", "zstd"):
                raise SourceError(f"{self.what}: {found}-compressed layers are not supported")
            # A raw reader is a binary file for the decompressors (read, readinto, readable).
            plain = compression.decompressing_reader(cast(BinaryIO, source), found)
            tar_hash = hashlib.sha256()
            while True:
                try:
                    block = plain.read(BLOCK)
                except OcipushError:  # the reader's own (a docker:// source failing): as it is
                    raise
                except Exception as e:  # zlib.error, BadGzipFile, EOFError, ZstdError: corrupt data
                    raise BlobVerificationError(f"{self.what}: cannot decompress {found}: {e}") from None
                if not block:
                    break
                tar_hash.update(block)
                yield block
            source.drain()  # bytes after the compressed stream count for the digest too
        if source.count != self._source_size or (
            source_hash is not None and source_hash.hexdigest() != self._source_digest.hex
        ):
            raise BlobVerificationError(
                f"{self.what}: content does not match its digest {self._source_digest} and size {self._source_size}"
            )
        if self.diff_id is not None and tar_hash.hexdigest() != self.diff_id.hex:
            raise BlobVerificationError(
                f"{self.what}: uncompressed content hashes to sha256:{tar_hash.hexdigest()}, "
                f"but the config's diff_id is {self.diff_id}"
            )

    def finish(self) -> Digest:
        if self.digest is None:
            raise BlobVerificationError(f"{self.what}: the stream was not read to its end")
        return self.digest

    def close(self) -> None:
        """Nothing to free between runs: each ``chunks()`` run frees its spills."""


def _encoder(target: str | None, level: int | None) -> compression.Codec:
    if target == "zstd:chunked":
        return zstdchunked.ZstdChunkedEncoder(compression.check_level(target, level))
    return compression.encoder(target, level)


def _new_spill() -> IO[bytes]:
    """An anonymous file for one chunk: in memory up to ``SPOOL_MEMORY``, then on disk.
    It outlives this call (the consumer discards it), hence no ``with``."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)


def _discard(spill: IO[bytes]) -> None:
    """Close a spill whose bytes are no longer wanted. Closing flushes, and on a full
    ``$TMPDIR`` the flush fails again: that must not replace the error already raised
    (the descriptor is closed and the anonymous file freed all the same)."""
    with contextlib.suppress(OSError):
        spill.close()


class _HashingReader(io.RawIOBase):
    """Counts (and hashes, given a hasher) every byte the decompressor reads."""

    def __init__(self, raw: BinaryIO, hasher: _Hash | None):
        self._raw = raw
        self.hash = hasher
        self.count = 0
        self._head = b""

    def readable(self) -> bool:
        return True

    def peek(self, n: int) -> bytes:
        """The first bytes, read now and served again by the next reads."""
        self._head = self._raw.read(n)
        self._account(self._head)
        return self._head

    def _account(self, data: bytes) -> None:
        if self.hash is not None:
            self.hash.update(data)
        self.count += len(data)

    def read(self, size: int = -1) -> bytes:
        """The source's own bytes object, not copied twice as ``RawIOBase.read`` would
        (buffer, then bytes): for an uncompressed layer this is the stream itself."""
        if size < 0:
            return self.readall()
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        data = self._raw.read(size)
        self._account(data)
        return data

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._raw.read(len(view))
        self._account(data)
        view[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(BLOCK):
            pass
