"""Layer compression: detect it from magic bytes, undo it and redo it as a stream.

Decompression is a reader (``read(n)`` gives at most n bytes), compression an incremental
encoder (``feed(data) -> bytes``, ``flush() -> bytes``), so one layer flows through
read → decompress → compress in bounded blocks, never whole.

- gzip decompression uses ISA-L (``isal``) when it is installed: about twice zlib's speed,
  and decompression is the slowest stage of a gzip → zstd push. Output is the same.
- gzip compression is ``pgzip``'s: ISA-L deflate, pigz-style, blocks on all cores joined
  into one member with a fixed header (no name, mtime 0): the same input, level and
  library version give the same bytes, so re-pushes deduplicate.
- zstd is single-threaded (one compressor per core runs at once): its output depends
  neither on the machine nor on how the input is split, so it is deterministic.
"""

from __future__ import annotations

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

__all__ = ["FORMATS", "Codec", "Compression", "check_level", "decompressing_reader", "detect", "encoder"]

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


class _ZstdEncoder:
    # Single-threaded, in the thread that decompresses and hashes (push runs no more
    # compressors than cores), with an 8 MiB window: as small as skopeo's zstd output and
    # ~10 MiB of memory, where zstd's multithreaded mode cuts the stream into jobs (0.4 %
    # larger output) and holds ~80 MiB per stream at its default sizing.
    WINDOW_LOG = 23

    def __init__(self, level: int) -> None:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=0, window_log=max(self.WINDOW_LOG, _window_log(level))
        )
        self._c = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush()


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
