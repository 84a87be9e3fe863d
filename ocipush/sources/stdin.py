"""``docker-archive:-`` and ``oci-archive:-`` — an image archive piped to standard input.

``docker save img | ocipush docker-archive:- …``, ``buildctl … --output
type=oci,dest=- | ocipush oci-archive:- …``. A file named ``-`` is ``./-``.

Every producer we know writes the archive's catalogue *after* the blobs (measured on
docker ≤ 24 and 25+, podman, skopeo, buildkit and containerd exports: ``manifest.json``
and ``index.json`` are the last members; see docs/sources.md), so which blobs make the
image, and what their digests are, is known only at the end of the stream. A push
cannot start before that, and a pipe cannot be read twice: the stream is spooled to
one temporary file in ``$TMPDIR`` (``tarindex.temporary_file``: on Linux it has no name,
so it is gone when the process ends, however it ends), in
blocks of 1 MiB, so memory stays bounded whatever the size, then read in place as any
archive file. A compressed stream (``docker save | gzip``) is decompressed as a
compressed archive file is.

Progress is said through ``notes`` every 64 MiB. A stream that ends early — inside a
member, or without tar's end-of-archive blocks — is a SourceError (exit 3) before
anything is uploaded, so nothing is tagged.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from typing import IO, BinaryIO

from ..errors import SourceError, UsageError, local_io_error
from ..events import Notes
from ..reference import SourceSpec
from ..units import format_size
from .tarindex import TarIndex, open_tar, temporary_file

__all__ = ["LABEL", "PROGRESS_EVERY", "spool", "spool_stdin"]

LABEL = "standard input"
PROGRESS_EVERY = 64 << 20
_BLOCK = 1 << 20


def spool_stdin(spec: SourceSpec, notes: Notes | None) -> TarIndex:
    """The archive on this process's standard input, spooled and indexed. A terminal
    there is a usage error: the user forgot the pipe."""
    stdin = sys.stdin
    if stdin is None or stdin.isatty():
        raise UsageError(
            f"{spec}: standard input is a terminal (or closed); pipe an archive in, as in "
            f"docker save IMAGE | ocipush {spec} DESTINATION (a file named - is ./-)"
        )
    return spool(stdin.buffer, notes)


def spool(stream: BinaryIO, notes: Notes | None = None) -> TarIndex:
    """``stream`` copied to a temporary file, which the returned index owns (and deletes
    on ``close()``)."""
    tmpdir = tempfile.gettempdir()
    what = f"spooling {LABEL}"
    try:
        # Not a with: the TarIndex owns the file from here on, and deletes it.
        temp, path = temporary_file("ocipush-stdin-")
    except OSError as e:
        raise local_io_error(tmpdir, what, e) from None
    try:
        total = _copy(stream, temp, notes, tmpdir)
        try:
            temp.flush()
        except OSError as e:
            raise local_io_error(tmpdir, what, e) from None
        if notes is not None:
            notes.note(
                f"read {format_size(total)} from {LABEL} into a temporary file in {tmpdir} "
                "(archives list their manifests after their blobs)"
            )
    except BaseException:
        with contextlib.suppress(OSError):
            temp.close()
        raise
    return open_tar(path, LABEL, temp=temp, require_end=True)


def _copy(stream: BinaryIO, temp: IO[bytes], notes: Notes | None, tmpdir: str) -> int:
    total = 0
    next_note = PROGRESS_EVERY
    while True:
        try:
            block = stream.read(_BLOCK)
        except OSError as e:
            raise SourceError(f"{LABEL}: reading: {e.strerror or e}") from None
        if not block:
            return total
        try:
            temp.write(block)
        except OSError as e:
            raise local_io_error(tmpdir, f"spooling {LABEL}", e) from None
        total += len(block)
        if notes is not None and total >= next_note:
            notes.note(f"reading {LABEL}: {format_size(total)}")
            next_note = (total // PROGRESS_EVERY + 1) * PROGRESS_EVERY
