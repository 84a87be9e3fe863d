"""Layer compression: detect it from magic bytes, undo it and redo it as a stream.

Decompression is a reader (``read(n)`` gives at most n bytes), compression an incremental
encoder (``feed(data) -> bytes``, ``flush() -> bytes``), so one layer flows through
read → decompress → compress in bounded blocks, never whole.

- gzip decompression uses ISA-L (``isal``) when it is installed: about twice zlib's speed,
  and decompression is the slowest stage of a gzip → zstd push. Output is the same.
- gzip compression is ``pgzip``'s: ISA-L deflate, pigz-style, blocks on all cores joined
  into one member with a fixed header (no name, mtime 0): the same input, level and
  library version give the same bytes, so re-pushes deduplicate.
- zstd is always zstd's multithreaded mode, in jobs of ``ZSTD_JOB`` bytes: its output is
  the same for any number of worker threads (≥ 1) and however the input is fed, so a
  layer can be given the cores that are free when it starts (``SLOTS``) and still come
  out byte for byte the same on any machine.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, Protocol, cast

import attrs
import zstandard

from .errors import UsageError
from .pgzip import ParallelGzip

_GzipFile: Callable[..., Any]  # a gzip reader class: ISA-L's when installed, the standard library's otherwise
try:  # ISA-L: the same gzip, inflated about twice as fast as zlib
    from isal.igzip import IGzipFile as _GzipFile
except ImportError:  # pragma: no cover - isal has wheels for the usual platforms
    from gzip import GzipFile as _GzipFile

__all__ = [
    "FORMATS",
    "SLOTS",
    "ZSTD_JOB",
    "ZSTD_MAX_WORKERS",
    "Codec",
    "Compression",
    "CoreSlots",
    "check_level",
    "decompressing_reader",
    "detect",
    "encoder",
    "zstd_version",
]

FORMATS = ("gzip", "zstd", "zstd:chunked")  # zstd:chunked's writer is zstdchunked.py
_LEVELS = {"gzip": (1, 9, 6), "zstd": (1, 22, 3), "zstd:chunked": (1, 22, 3)}  # min, max, default (podman's defaults)
_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bzip2",
}


@attrs.frozen
class Compression:
    """The user's choice for layers (``--compression-format``, ``--compression-level``)."""

    format: str | None = None  # "gzip", "zstd", or None: keep compressed layers as they are
    level: int | None = None


class Codec(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...

    def close(self) -> None:
        """Give back threads and memory; safe to call twice, after ``flush`` or instead of it
        (an error or a cancelled upload stops a stream half-way)."""


def detect(head: bytes) -> str | None:
    """The compression of a stream from its first bytes; None for none we know (a plain tar)."""
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return None


def check_level(fmt: str, level: int | None) -> int:
    low, high, default = _LEVELS[fmt]
    if level is None:
        return default
    if not low <= level <= high:
        raise UsageError(f"--compression-level {level}: {fmt} takes {low} to {high}")
    return level


class _Identity:
    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


ZSTD_JOB = 4 << 20  # input bytes a zstd job: every job boundary costs ratio (4 MiB: +0.5 %, 8 MiB: +0.2 % on
# the bench image; docs/compression.md), and a stream holds ~(3 + workers) jobs of buffers
ZSTD_WINDOW_LOG = 23  # 8 MiB: as small as skopeo's output (zstd's default at level 3, 2 MiB, is ~4 % larger)
ZSTD_MAX_WORKERS = 2  # per stream: each worker beyond the first holds ~20 MiB more (docs/compression.md)
ZSTD_WORKER_BUDGET = 5  # zstd workers in the process at once: 2 + 2 + 1 for three layers (--jobs' default)


class CoreSlots:
    """A process-wide budget of compression workers, bounding the memory of the zstd
    streams that run at once.

    A zstd stream takes its workers when it starts and keeps them to its end (zstd cannot
    add workers to a frame in progress): as many as it wants if the budget has them, else
    what is left, and always at least one (the budget may go below zero: a stream never
    waits). The workers decide the speed, never the bytes. They go back when the stream
    ends, fails or is cancelled, for the layers that start later."""

    def __init__(self, total: int) -> None:
        self._free = total
        self._lock = threading.Lock()

    @property
    def free(self) -> int:
        with self._lock:
            return self._free

    def take(self, most: int) -> int:
        """Between 1 and ``most`` workers: as many as are free, one if none is."""
        with self._lock:
            n = max(1, min(most, self._free))
            self._free -= n
            return n

    def give(self, n: int) -> None:
        with self._lock:
            self._free += n


SLOTS = CoreSlots(ZSTD_WORKER_BUDGET)


ZSTD_BIG_CONTEXT = 16 << 20  # a worker's own tables above this (levels ≥ 12): one worker, not two


def _wanted_workers(context_size: int) -> int:
    """A stream's workers: one a core, up to ``ZSTD_MAX_WORKERS``. With fewer layers than
    cores left, the last ones keep every core busy; with more, the OS shares the cores
    between their workers (no CPU is lost: each job is compressed once). At high levels
    each worker's match tables cost more memory than a core is worth (level 19: ~80 MiB
    a worker): one worker, the same bytes."""
    if context_size > ZSTD_BIG_CONTEXT:
        return 1
    return max(1, min(ZSTD_MAX_WORKERS, os.cpu_count() or 1))


class _ZstdEncoder:
    """zstd's multithreaded mode, always (see the module docstring): the workers a stream
    gets from ``SLOTS`` change its speed, not its bytes, and go back on ``flush``/``close``.
    Memory: about ``(3 + 2 × workers) × ZSTD_JOB`` of input and output buffers: measured,
    a stream of two workers adds ~50 MiB to a push, one of one ~30 MiB (docs/compression.md)."""

    def __init__(self, level: int, *, slots: CoreSlots | None = None, want: int | None = None) -> None:
        self._slots = slots or SLOTS
        window_log = max(ZSTD_WINDOW_LOG, _window_log(level))
        single = zstandard.ZstdCompressionParameters.from_level(level, window_log=window_log)
        self.workers = self._slots.take(want or _wanted_workers(single.estimated_compression_context_size()))
        try:
            params = zstandard.ZstdCompressionParameters.from_level(
                level, threads=self.workers, job_size=ZSTD_JOB, window_log=window_log
            )
            self._c: Any = zstandard.ZstdCompressor(compression_params=params).compressobj()
        except BaseException:
            self._release()
            raise

    def feed(self, data: bytes) -> bytes:
        return cast(bytes, self._c.compress(data))

    def flush(self) -> bytes:
        try:
            return cast(bytes, self._c.flush())
        finally:
            self.close()

    def close(self) -> None:
        """Free zstd's context (its worker threads and buffers) and the slots."""
        self._c = None
        self._release()

    def _release(self) -> None:
        workers, self.workers = self.workers, 0
        if workers:
            self._slots.give(workers)

    def __del__(self) -> None:  # a stream dropped without close (a bug elsewhere) still gives its slots back
        if hasattr(self, "workers"):
            self._release()


def zstd_version() -> str:
    """What makes zstd's bytes: the library, and this module's framing (multithreaded
    jobs of ``ZSTD_JOB``, window): a change of either changes the cache key."""
    libzstd = ".".join(map(str, zstandard.ZSTD_VERSION))
    return f"zstandard {zstandard.__version__} libzstd {libzstd} mt job {ZSTD_JOB} window {ZSTD_WINDOW_LOG}"


def _window_log(level: int) -> int:
    """The window the level picks by itself: higher levels want more than 8 MiB."""
    return zstandard.ZstdCompressionParameters.from_level(level).window_log


def decompressing_reader(raw: BinaryIO, fmt: str | None) -> BinaryIO:
    """A reader of ``raw``'s uncompressed bytes. Each ``read(n)`` returns at most ``n``:
    a small layer that inflates to gigabytes (zeros compress 1000:1) never sits in memory."""
    if fmt is None:
        return raw
    if fmt == "gzip":  # concatenated members are one valid stream (pigz writes them)
        return cast(BinaryIO, _GzipFile(fileobj=raw, mode="rb"))
    if fmt == "zstd":
        return cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    raise ValueError(f"{fmt} layers are not supported")


def encoder(fmt: str | None, level: int | None = None) -> Codec:
    if fmt is None:
        return _Identity()
    if fmt == "gzip":
        return ParallelGzip(check_level("gzip", level))
    if fmt == "zstd":
        return _ZstdEncoder(check_level("zstd", level))
    raise ValueError(f"cannot compress to {fmt}")
