"""Opening local files that must be regular files, without ever blocking on one that is not.

``open()`` on a FIFO waits for a writer, forever; on a device it may rewind a tape or
read ``/dev/zero`` without end; on a socket it fails with a puzzling ENXIO. A blob,
``index.json``, ``oci-layout``, ``manifest.json`` or an archive is only ever a regular
file, so anything else is refused before it is opened for reading: ``os.stat`` first,
then ``O_NONBLOCK`` and ``fstat`` on the descriptor, so a file swapped for a FIFO between
the two is refused too, not waited on.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["MAX_CONFIG", "NotRegularFile", "file_kind", "open_regular", "read_regular"]

# A configuration file the user's tools wrote (auth.json, config.json, registries.conf, a
# certs.d PEM): a few KiB in practice; past this it is not one (``/dev/zero`` through a
# symbolic link would otherwise be read until memory runs out).
MAX_CONFIG = 4 << 20

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotRegularFile(OSError):
    """``path`` exists but is not a regular file; ``kind`` says what it is ("a FIFO …")."""

    def __init__(self, path: str | os.PathLike[str], kind: str):
        super().__init__(f"{path}: {kind}, not a regular file")
        self.path = str(path)
        self.kind = kind


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages: ``a FIFO (named pipe)``, ``a socket``…"""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike[str], *, buffering: int = -1) -> BinaryIO:
    """``path`` opened for reading, binary; NotRegularFile when it is anything but a
    regular file (after symlinks), checked without blocking. Other OSErrors
    (FileNotFoundError, PermissionError, …) propagate for the caller to word."""
    before = os.stat(path)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFile(path, file_kind(before.st_mode))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, file_kind(mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """A small regular file's bytes (a JSON document we write ourselves and read back);
    ValueError when it holds more than ``limit`` bytes."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{Path(path)}: larger than {limit} bytes")
    return data
