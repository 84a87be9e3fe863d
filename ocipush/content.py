"""A blob's bytes as an uploader consumes them: chunk by chunk, any chunk again, verified.

``FileContent`` is a blob whose digest and size are known (a file, an archive member):
its chunks are slices read from the source when sent, so nothing is buffered, and a
chunk that must be resent is simply read again.  Each byte is hashed once, the first time
it is read in order, so resending never corrupts the digest; ``finish()`` after the last
chunk checks count and digest, and an uploader commits only after it.

``StreamContent`` is a layer (re)compressed while it uploads: read → verify the source
digest → decompress → verify the diff_id → compress → hash and count the output.  Its
digest and size are known only at the end, which the chunked protocol allows (the digest
goes on the final PUT).  A chunk's length must be known before its PATCH, so each chunk
is spilled as it is produced — in memory up to 1 MiB, then to an anonymous temporary
file — and sent from there; a failed request resends the spilled chunk.  A producer
thread compresses the next chunk while the current one is sent.  When the whole
upload must start again, the stream is produced again: it is deterministic.  Memory per
upload stays at the spill limit plus the codecs' buffers, whatever the layer size.
"""

from __future__ import annotations

import hashlib
import io
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

import attrs

from . import compression
from .digest import Digest
from .errors import BlobVerificationError, SourceError, local_io_error
from .registry.chunks import chunk_ranges

__all__ = ["Chunk", "FileContent", "Position", "StreamContent", "in_thread"]

T = TypeVar("T")

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
        for offset, length in chunk_ranges(self.size, chunk_size, start):
            yield Chunk(offset, length, self._read)

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


SPOOL_MEMORY = 1 << 20  # a spilled chunk stays in memory up to this, then goes to disk
STREAM_CHUNK = 64 << 20  # chunk size for streams when neither user nor registry sets one


class StreamContent:
    """A layer recompressed on the fly (see the module docstring)."""

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
    ):
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

    def chunks(self, chunk_size: int | None, start: int = 0) -> Iterator[Chunk]:
        """Produce the stream from the beginning (again), cut into equal chunks; chunks
        before ``start`` are produced and dropped (the stream is deterministic).

        Three threads share the work of one layer: one decompresses and hashes, one
        compresses and spills the next chunk, and the caller's sends the current one."""
        current: BinaryIO | None = None
        try:
            for current, offset, length in in_thread(
                lambda: self._spills(chunk_size or STREAM_CHUNK, start), maxsize=1, discard=lambda item: _discard(item[0])
            ):
                yield self._spilled_chunk(current, offset, length)
                _discard(current)  # the uploader has moved past it
                current = None
        finally:
            if current is not None:
                _discard(current)

    def _spills(self, step: int, start: int) -> Iterator[tuple[BinaryIO, int, int]]:
        """The output cut into spills of ``step`` bytes: (spill, offset, length)."""
        spill = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
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
                        full, spill = spill, tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
                        if offset >= start:
                            yield full, offset, step
                        else:
                            _discard(full)
                        offset, filled = offset + step, 0
            if filled and offset >= start:
                last, spill = spill, None
                yield last, offset, filled
        finally:
            if spill is not None:
                _discard(spill)

    def _spill_write(self, spill: BinaryIO, data: memoryview) -> None:
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

    def _spilled_chunk(self, spill: BinaryIO, offset: int, length: int) -> Chunk:
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
        encode = compression.encoder(self._target, self._level)
        for block in in_thread(self._plain, maxsize=4):
            if out := encode.feed(block):
                yield out
        yield encode.flush()

    def _plain(self) -> Iterator[bytes]:
        """Source → verified → decompressed → verified, in bounded blocks."""
        # With a diff_id to check, the uncompressed bytes are verified, and those are what
        # goes out: hashing the compressed source too would only cost a core-second per GB.
        # Without one (a config that names none), the source digest is the check.
        check_source = self.diff_id is None
        with self._opener() as raw:
            source = _HashingReader(raw, self._source_digest.hasher() if check_source else None)
            found = compression.detect(source.peek(8))
            if found not in (None, "gzip", "zstd"):
                raise SourceError(f"{self.what}: {found}-compressed layers are not supported")
            plain = compression.decompressing_reader(source, found)
            tar_hash = hashlib.sha256()
            while True:
                try:
                    block = plain.read(BLOCK)
                except Exception as e:  # zlib.error, BadGzipFile, EOFError, ZstdError: corrupt data
                    raise BlobVerificationError(f"{self.what}: cannot decompress {found}: {e}") from None
                if not block:
                    break
                tar_hash.update(block)
                yield block
            source.drain()  # bytes after the compressed stream count for the digest too
        if source.count != self._source_size or (check_source and source.hash.hexdigest() != self._source_digest.hex):
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


def _discard(spill: BinaryIO) -> None:
    """Close a spill whose bytes are no longer wanted. Closing flushes, and on a full
    ``$TMPDIR`` the flush fails again: that must not replace the error already raised
    (the descriptor is closed and the anonymous file freed all the same)."""
    try:
        spill.close()
    except OSError:
        pass


class _HashingReader(io.RawIOBase):
    """Counts (and hashes, given a hasher) every byte the decompressor reads."""

    def __init__(self, raw: BinaryIO, hasher):
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

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._raw.read(len(buffer))
        self._account(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(BLOCK):
            pass


_DONE = object()


def in_thread(produce: Callable[[], Iterator[T]], *, maxsize: int, discard: Callable[[T], None] | None = None) -> Iterator[T]:
    """Run the generator ``produce()`` in a thread of its own, handing its items over a
    queue of ``maxsize``: the two sides work at the same time, with bounded memory. An
    exception in the thread is raised here. When the consumer stops early, the thread
    stops at its next hand-over, and items it made but nobody took go to ``discard``."""
    handover: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def hand(item) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def run() -> None:
        items = produce()
        try:
            for item in items:
                if not hand(item):
                    if discard:
                        discard(item)
                    return
            hand(_DONE)
        except BaseException as e:  # raised again in the consumer's thread
            hand(e)
        finally:
            items.close()  # the generator's own cleanup runs here, in its thread

    worker = threading.Thread(target=run, name="stream", daemon=True)
    worker.start()
    try:
        while True:
            item = handover.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
        while not handover.empty():
            item = handover.get_nowait()
            if discard and item is not _DONE and not isinstance(item, BaseException):
                discard(item)
