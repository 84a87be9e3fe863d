"""Which compression a stream uses, from its magic bytes.

File names lie (``layer.tar`` may be gzip, ``blobs/sha256/…`` says nothing), and so do
media types in hand-made archives, so only the first bytes decide — the same magic
numbers docker and containers/image check.
"""

from __future__ import annotations

from typing import BinaryIO

__all__ = ["sniff_compression"]

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)
_HEAD = max(len(magic) for magic, _ in _MAGIC)


def sniff_compression(stream: BinaryIO) -> str | None:
    """``"gzip"``, ``"zstd"``, ``"xz"``, ``"bzip2"`` or None (not compressed, e.g. a tar).

    Reads a few bytes at the current position and seeks back, so the caller can read on.
    """
    start = stream.tell()
    head = stream.read(_HEAD)
    stream.seek(start)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)
