"""Parallel gzip, pigz-style: one gzip member whose deflate blocks are made on all cores.

The uncompressed stream is cut into blocks of ``BLOCK`` bytes *by offset* (never by how
the caller happens to feed it), and each block is deflated on a worker thread of one
process-wide pool (ISA-L and zlib release the GIL while they work). A block is a raw
deflate stream primed with the 32 KiB before it (``zdict``, so matches may reach back
across the cut, as in pigz) and ended by a sync flush — an empty stored block that puts
the output on a byte boundary with the final bit unset — except the last, which is
finished. Joined in order under a fixed header (no name, mtime 0, OS unknown) and
followed by the CRC-32 of the whole (combined from the blocks' CRCs) and the length
mod 2^32, they are *one* valid gzip member: every gzip reader takes it, and the same
input, level and library version give the same bytes, however many cores there are.

Memory is bounded: an encoder has at most ``IN_FLIGHT`` blocks submitted and not yet
returned (input and output of each, about 0.5 MiB), and the pool has one thread a core,
shared by every layer, so layers pushed at once share the cores instead of each
claiming them all — and one layer alone, at the end of a push, gets them all.

Levels: ISA-L has 0-3 where zlib has 1-9 (``LEVELS`` maps podman's 1-9 onto them; see
docs/compression.md for the measurements that chose it).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

from isal import isal_zlib

__all__ = ["BLOCK", "HEADER", "IN_FLIGHT", "LEVELS", "ParallelGzip", "version"]

BLOCK = 256 << 10  # uncompressed bytes a block: ISA-L picks Huffman codes per block, so smaller is smaller output
# (0.4 % less than 1 MiB on a real tree), down to where Python's per-block cost shows (64 KiB: +25 % CPU)
DICT = 32 << 10  # deflate's window: the tail of the previous block primes the next
IN_FLIGHT = 16  # blocks an encoder has at the pool at once (4 MiB of input): keeps the cores fed, ~8 MiB at most
# A fixed gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS 255 (unknown).
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

# podman's --compression-level 1-9 → (library, level): ISA-L's 0-3 for 1-7, zlib for 8-9
# (slower, smaller). The default, 6, is ISA-L level 2 (docs/compression.md: output within
# 5 % of skopeo's, ~13x zlib 6's speed on one core).
LEVELS: dict[int, tuple[str, int]] = {
    1: ("isal", 0),
    2: ("isal", 1),
    3: ("isal", 1),
    4: ("isal", 2),
    5: ("isal", 2),
    6: ("isal", 2),
    7: ("isal", 3),
    8: ("zlib", 6),
    9: ("zlib", 9),
}

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def version() -> str:
    """What makes the bytes: the libraries, and this module's block layout (a change of
    ``BLOCK`` or of the level map changes the output, so it changes the cache key)."""
    import isal

    return f"pgzip/1 block {BLOCK} isal {isal.__version__} zlib {zlib.ZLIB_RUNTIME_VERSION}"


def _shared_pool() -> ThreadPoolExecutor:
    """One worker a core for every gzip stream of the process, made on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="pgzip")
        return _pool


def _deflate(library: str, level: int, zdict: bytes, data: bytes | memoryview, last: bool) -> bytes:
    """One block, raw, primed with ``zdict`` (if any); ``last`` finishes the deflate stream."""
    lib: Any = isal_zlib if library == "isal" else zlib
    primed = {"zdict": zdict} if zdict else {}  # an empty dictionary is refused, None too
    c = lib.compressobj(level, lib.DEFLATED, -15, 9, **primed)
    return cast(bytes, c.compress(data) + c.flush(lib.Z_FINISH if last else lib.Z_SYNC_FLUSH))


def _block(library: str, level: int, zdict: bytes, data: bytes | memoryview, last: bool) -> tuple[bytes, int]:
    """Work for a pool thread: the deflated block and the CRC-32 of its input."""
    return _deflate(library, level, zdict, data, last), isal_zlib.crc32(data)


class ParallelGzip:
    """An incremental gzip encoder (``feed``/``flush``, as ``compression.Codec``) that
    deflates blocks on the shared pool; see the module docstring."""

    def __init__(self, level: int, *, block: int = BLOCK, in_flight: int = IN_FLIGHT) -> None:
        self._library, self._level = LEVELS[level]
        self._block = block
        self._in_flight = in_flight
        self._pending = bytearray()  # input not yet a whole block
        self._previous = b""  # the last DICT bytes submitted: the next block's dictionary
        self._futures: deque[tuple[Future[tuple[bytes, int]], int]] = deque()
        self._crc = 0
        self._length = 0
        self._started = False
        self._pool = _shared_pool()

    def feed(self, data: bytes) -> bytes:
        # Whole blocks go to the pool as views of ``data`` (immutable bytes), not copies:
        # at a GB a second, each copy of the stream costs a core-second per GB.
        out = [self._header()]
        view = memoryview(data if isinstance(data, bytes) else bytes(data))  # views must not change under the pool
        if self._pending:  # complete the block a previous feed began
            need = self._block - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            if len(self._pending) < self._block:
                return b"".join(out)
            out.append(self._submit(bytes(self._pending), last=False))
            self._pending = bytearray()
        while len(view) >= self._block:
            out.append(self._submit(view[: self._block], last=False))
            view = view[self._block :]
        self._pending += view
        return b"".join(out)

    def flush(self) -> bytes:
        out = [self._header(), self._submit(bytes(self._pending), last=True)]
        self._pending = bytearray()
        while self._futures:
            out.append(self._collect())
        out.append(struct.pack("<II", self._crc, self._length & 0xFFFFFFFF))
        return b"".join(out)

    def close(self) -> None:
        """Drop the blocks still at the pool (a stream stopped half-way): the ones not
        started are cancelled, so a failed or cancelled layer does not keep the cores."""
        while self._futures:
            self._futures.popleft()[0].cancel()
        self._pending = bytearray()

    def _header(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return HEADER

    def _submit(self, data: bytes | memoryview, *, last: bool) -> bytes:
        """Hand a block to the pool; returns the finished blocks it had to wait for, so
        that no more than ``in_flight`` are out at once, and any others already done."""
        out = []
        while len(self._futures) >= self._in_flight:
            out.append(self._collect())
        self._futures.append(
            (self._pool.submit(_block, self._library, self._level, self._previous, data, last), len(data))
        )
        self._previous = (self._previous + data)[-DICT:] if len(data) < DICT else bytes(data[-DICT:])
        while self._futures and self._futures[0][0].done() and not last:
            out.append(self._collect())
        return b"".join(out)

    def _collect(self) -> bytes:
        """The oldest block, waited for; its CRC folded into the stream's."""
        future, length = self._futures.popleft()
        deflated, crc = future.result()
        self._crc = isal_zlib.crc32_combine(self._crc, crc, length)
        self._length += length
        return deflated
