"""Layer compression: detect it from magic bytes, undo it and redo it as a stream.

Decoders and encoders are incremental objects (``feed(data) -> bytes``, ``flush() ->
bytes``) so one layer flows through read → decompress → compress in blocks, never whole.

- gzip decompression uses ISA-L (``isal``) when it is installed: about twice zlib's speed,
  and decompression is the slowest stage of a gzip → zstd push. Output is the same.
- gzip compression uses zlib with a fixed header (no name, mtime 0): the same input and
  level give the same bytes, so re-pushes deduplicate.
- zstd uses the zstandard library's worker threads; with one or more workers its output
  does not depend on their number (nor on how the input is split), so it is deterministic
  across machines too.
"""

from __future__ import annotations

import os
import zlib
from typing import Protocol

import zstandard

from .errors import UsageError

try:  # ISA-L: same gzip, faster inflate
    from isal import isal_zlib as _inflate_lib
except ImportError:  # pragma: no cover - isal has wheels for the usual platforms
    _inflate_lib = zlib  # type: ignore[assignment]

__all__ = ["Codec", "FORMATS", "decoder", "detect", "encoder", "check_level"]

FORMATS = ("gzip", "zstd")
_LEVELS = {"gzip": (1, 9, 6), "zstd": (1, 22, 3)}  # min, max, default (podman's defaults)
_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bzip2",
}


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


class _GzipDecoder:
    # Concatenated gzip members are one valid stream (pigz and some tools write them).
    def __init__(self) -> None:
        self._d = _inflate_lib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        out = [self._d.decompress(data)]
        while self._d.eof and self._d.unused_data:
            rest = self._d.unused_data
            self._d = _inflate_lib.decompressobj(16 + zlib.MAX_WBITS)
            out.append(self._d.decompress(rest))
        return b"".join(out)

    def flush(self) -> bytes:
        if not self._d.eof:
            raise ValueError("gzip stream ends early")
        return b""


class _ZstdDecoder:
    def __init__(self) -> None:
        self._d = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)

    def feed(self, data: bytes) -> bytes:
        return self._d.decompress(data)

    def flush(self) -> bytes:
        return self._d.flush() if hasattr(self._d, "flush") else b""


class _GzipEncoder:
    def __init__(self, level: int) -> None:
        self._c = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9)

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush()


class _ZstdEncoder:
    def __init__(self, level: int) -> None:
        threads = max(1, min(os.cpu_count() or 1, 8))  # ≥1 worker keeps output deterministic
        self._c = zstandard.ZstdCompressor(level=level, threads=threads).compressobj()

    def feed(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush()


def decoder(fmt: str | None) -> Codec:
    if fmt is None:
        return _Identity()
    if fmt == "gzip":
        return _GzipDecoder()
    if fmt == "zstd":
        return _ZstdDecoder()
    raise ValueError(f"{fmt} layers are not supported")


def encoder(fmt: str | None, level: int | None = None) -> Codec:
    if fmt is None:
        return _Identity()
    if fmt == "gzip":
        return _GzipEncoder(check_level("gzip", level))
    if fmt == "zstd":
        return _ZstdEncoder(check_level("zstd", level))
    raise ValueError(f"cannot compress to {fmt}")
