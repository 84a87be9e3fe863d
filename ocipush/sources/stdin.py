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
archive file.

The spool follows the tar while it copies (``_Follower``): each 512-byte header is
checked (its checksum, as tarfile does) and the member's data, rounded up to 512 bytes,
copied after it; the two zero blocks end the copy.  So a stream that is not a tar —
``< /dev/zero``, random bytes, a text file — is refused at its first block instead of
filling ``$TMPDIR``, and a corrupt header midway stops the copy where it is.  A
compressed stream (``docker save | gzip``: gzip, zstd, xz or bzip2, by its magic bytes)
is followed through its decompressed view, which is what is spooled (one plain copy on
disk, no compressed one).  What comes after the end blocks — tar pads to its record size,
10 KiB by default — is read and dropped, so the writer ends without a broken pipe, but
only up to ``TRAILING_LIMIT``: past it the stream is left unread, and a note says so.
What follows the end is never examined (for a compressed stream, its checksum trailer
included): the blobs' digests are what verify the image.  What cannot be judged cheaply
is left alone: headers that pass their checksum but claim a member of more bytes than
``$TMPDIR`` holds still fill it (exit 6), as a real archive that large would.

Progress is said through ``notes`` every 64 MiB. A stream that ends early — inside a
member, or without tar's end-of-archive blocks — is a SourceError (exit 3) before
anything is uploaded, so nothing is tagged.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tarfile
import tempfile
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from ..errors import SourceError, UsageError, local_io_error
from ..events import Notes
from ..reference import SourceSpec
from ..units import format_size
from .tarindex import TarIndex, detect_compression, open_decompressor, open_tar, read_decompressed, temporary_file

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["LABEL", "MAX_EXTENSION", "PROGRESS_EVERY", "TRAILING_LIMIT", "spool", "spool_stdin"]

LABEL = "standard input"
PROGRESS_EVERY = 64 << 20
# Read and dropped after the end blocks: tar pads the archive to its record size (10 KiB
# by default, ``tar -b`` up to a few MiB in practice), a compressor adds its trailer.
TRAILING_LIMIT = 1 << 20
# The data of a pax or GNU long-name header, held in memory to be parsed: real ones are a
# path or two (PATH_MAX is 4 KiB).
MAX_EXTENSION = 1 << 20
_BLOCK = 1 << 20
_HEADER = tarfile.BLOCKSIZE
_EXTENSIONS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
               tarfile.SOLARIS_XHDTYPE)
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")  # tarfile's


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
    """The tar archive on ``stream`` copied to a temporary file, which the returned index
    owns (and deletes on ``close()``); ``stream`` is read up to the archive's end and at
    most ``TRAILING_LIMIT`` bytes more."""
    tmpdir = tempfile.gettempdir()
    what = f"spooling {LABEL}"
    try:
        # Not a with: the TarIndex owns the file from here on, and deletes it.
        temp, path = temporary_file("ocipush-stdin-")
    except OSError as e:
        raise local_io_error(tmpdir, what, e) from None
    try:
        raw = _Input(stream, notes)
        spooled, compression = _spool_tar(raw, _writer(temp, tmpdir))
        try:
            temp.flush()
        except OSError as e:
            raise local_io_error(tmpdir, what, e) from None
        left = _drop_trailing(raw)
        if notes is not None:
            plain = f" ({compression}: {format_size(spooled)} decompressed)" if compression else ""
            notes.note(
                f"read {format_size(raw.total)} from {LABEL}{plain} into a temporary file in {tmpdir} "
                "(archives list their manifests after their blobs)"
            )
            if left:
                notes.note(f"{LABEL}: more than {format_size(TRAILING_LIMIT)} follow the archive's end; "
                           "left unread (the writer may report a broken pipe)")
    except BaseException:
        with contextlib.suppress(OSError):
            temp.close()
        raise
    return open_tar(path, LABEL, temp=temp, require_end=True)


def _writer(temp: IO[bytes], tmpdir: str) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        try:
            temp.write(data)
        except OSError as e:
            raise local_io_error(tmpdir, f"spooling {LABEL}", e) from None

    return write


def _spool_tar(raw: _Input, write: Callable[[bytes], None]) -> tuple[int, str | None]:
    """The tar on ``raw``, decompressed if it is compressed, written up to its end blocks
    included: (bytes written, the compression or None)."""
    head = raw.read_exact(_HEADER)
    compression = detect_compression(head)
    raw.push_back(head)
    if compression is None:
        return _Follower(raw.read, write, "").run(), None
    # A RawIOBase is all a decompressor reads through; typeshed does not call it IO[bytes].
    with open_decompressor(compression, cast(IO[bytes], raw)) as plain:
        follower = _Follower(lambda n: read_decompressed(plain, compression, LABEL, n), write,
                             f"decompressed {compression}: ")
        return follower.run(), compression


def _drop_trailing(raw: _Input) -> bool:
    """Read and drop what follows the archive, up to ``TRAILING_LIMIT`` bytes: whether
    more was left unread."""
    dropped = 0
    while dropped < TRAILING_LIMIT:
        got = len(raw.read(min(_BLOCK, TRAILING_LIMIT - dropped)))
        if not got:
            return False
        dropped += got
    return bool(raw.read(1))


class _Input(io.RawIOBase):
    """The raw stream, counted (progress is said by it) and with its first bytes put
    back once looked at; its read errors are the source's."""

    def __init__(self, stream: BinaryIO, notes: Notes | None):
        super().__init__()
        self._stream = stream
        self._notes = notes
        self._back = b""
        self.total = 0  # bytes read from the stream
        self._next_note = PROGRESS_EVERY

    def readable(self) -> bool:
        return True

    def push_back(self, data: bytes) -> None:
        self._back = data + self._back

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (fewer only at the end), or all that is left."""
        if self._back:
            n = len(self._back) if size is None or size < 0 else size
            data, self._back = self._back[:n], self._back[n:]
            return data
        try:
            data = self._stream.read(-1 if size is None else size)
        except OSError as e:
            raise SourceError(f"{LABEL}: reading: {e.strerror or e}") from None
        self.total += len(data)
        if self._notes is not None and self.total >= self._next_note:
            self._notes.note(f"reading {LABEL}: {format_size(self.total)}")
            self._next_note = (self.total // PROGRESS_EVERY + 1) * PROGRESS_EVERY
        return data

    def readinto(self, buffer: WriteableBuffer) -> int:  # what the decompressors read through
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read_exact(self, size: int) -> bytes:
        return _read_exact(self.read, size)


def _read_exact(read: Callable[[int], bytes], size: int) -> bytes:
    """``size`` bytes, fewer only at the end of the stream."""
    data = read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size and (more := read(size - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _padded(size: int) -> int:
    return -(-size // _HEADER) * _HEADER


class _Follower:
    """Copies a tar from ``read`` to ``write``, header by header, as far as its end
    blocks; where it skips data is where ``tarfile`` does (the index reads the copy with
    it): after regular files (and types it does not know), by the header's size or the
    ``size`` of the pax header before it."""

    def __init__(self, read: Callable[[int], bytes], write: Callable[[bytes], None], view: str):
        self._read = read
        self._write = write
        self._view = view  # "decompressed gzip: ", or "" for a plain stream
        self.written = 0
        self._members = 0
        self._last = ""  # the last member's name, for messages
        self._headers = 0
        self._name: str | None = None  # from a GNU long-name or pax header, for the next member
        self._size: int | None = None  # from a pax header, for the next member
        self._global_size: int | None = None  # from a global pax header

    def run(self) -> int:
        """Bytes written, when the end blocks are."""
        while True:
            header = self._read_exact(_HEADER)
            if not header.strip(b"\0"):
                self._end(header)
                return self.written
            info = self._parse(header)
            self._copy(header)
            self._headers += 1
            if info.type == tarfile.GNUTYPE_SPARSE and header[482]:
                self._sparse_extensions()
            if info.type in _EXTENSIONS:
                self._extension(info)
                continue
            size = info.size if self._size is None else self._size
            name, self._name, self._size = self._name or info.name, None, None
            if info.isreg() or info.type not in tarfile.SUPPORTED_TYPES:
                self._member_data(name, size)
            self._members += 1
            self._last = name

    def _after(self) -> str:
        return f" after member {self._last!r}" if self._members else ""

    def _end(self, block: bytes) -> None:
        """A zero block (or a zero tail): tarfile stops at the first; the second must be
        there, else the stream was cut."""
        if not self._members and not self._headers:
            raise SourceError(f"{LABEL}: empty archive" + (" (its first block is zeros)" if block else ""))
        second = self._read_exact(_HEADER) if len(block) == _HEADER else b""
        if len(second) < _HEADER:
            raise SourceError(f"{LABEL}: truncated tar archive: it ends{self._after()} "
                              "without the end-of-archive blocks")
        self._copy(block + second)

    def _parse(self, header: bytes) -> tarfile.TarInfo:
        if len(header) < _HEADER:
            if not self._headers:
                raise SourceError(f"{LABEL}: not a tar archive ({self._view}{len(header)} bytes, "
                                  "shorter than a tar header)")
            raise SourceError(f"{LABEL}: truncated tar archive: it ends inside the header{self._after()}")
        try:
            return tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError as e:
            if not self._headers:
                raise SourceError(f"{LABEL}: not a tar archive ({self._view}its first block is not a tar header: "
                                  f"{e})") from None
            raise SourceError(f"{LABEL}: corrupt tar archive: not a tar header{self._after()} ({e})") from None

    def _sparse_extensions(self) -> None:
        """A GNU sparse member's extra map blocks, each saying whether another follows."""
        while True:
            block = self._read_exact(_HEADER)
            if len(block) < _HEADER:
                raise SourceError(f"{LABEL}: truncated tar archive: it ends inside the header{self._after()}")
            self._copy(block)
            if not block[504]:
                return

    def _extension(self, info: tarfile.TarInfo) -> None:
        """A pax or GNU long-name header's data: what it says of the next member."""
        if info.size > MAX_EXTENSION:
            raise SourceError(f"{LABEL}: an extended tar header of {info.size} bytes{self._after()} "
                              f"(more than {MAX_EXTENSION}); refused")
        data = self._read_exact(_padded(info.size))
        if len(data) < _padded(info.size):
            raise SourceError(f"{LABEL}: truncated tar archive: it ends inside an extended header{self._after()}")
        self._copy(data)
        data = data[: info.size]
        if info.type == tarfile.GNUTYPE_LONGNAME:
            self._name = data.split(b"\0", 1)[0].decode(tarfile.ENCODING, "surrogateescape")
        elif info.type != tarfile.GNUTYPE_LONGLINK:
            records = _pax_records(data, self._after())
            if info.type == tarfile.XGLTYPE:
                self._global_size = _pax_size(records, None, self._global_size, self._after())
            else:
                self._size = _pax_size(records, self._size, self._global_size, self._after())
                if b"path" in records:
                    self._name = records[b"path"].decode("utf-8", "surrogateescape")

    def _member_data(self, name: str, size: int) -> None:
        left = _padded(size)
        while left:
            block = self._read(min(_BLOCK, left))
            if not block:
                raise SourceError(f"{LABEL}: truncated tar archive: it ends inside member {name!r}")
            self._copy(block)
            left -= len(block)

    def _read_exact(self, size: int) -> bytes:
        return _read_exact(self._read, size)

    def _copy(self, data: bytes) -> None:
        self._write(data)
        self.written += len(data)


def _pax_records(data: bytes, after: str) -> dict[bytes, bytes]:
    """``LENGTH KEY=VALUE\\n`` records, read as tarfile reads them (it stops at the first
    that does not parse)."""
    records: dict[bytes, bytes] = {}
    pos = 0
    while match := _PAX_RECORD.match(data, pos):
        length = int(match[1])
        if length == 0:
            raise SourceError(f"{LABEL}: corrupt tar archive: a pax header record of length 0{after}")
        records[match[2]] = data[match.end(2) + 1 : match.start(1) + length - 1]
        pos += length
    return records


def _pax_size(records: dict[bytes, bytes], current: int | None, default: int | None, after: str) -> int | None:
    """The ``size`` a pax header gives the next member; tarfile takes one it cannot read as 0."""
    if b"size" not in records:
        return current if current is not None else default
    try:
        size = int(records[b"size"].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return 0
    if size < 0:
        raise SourceError(f"{LABEL}: corrupt tar archive: a pax header gives a negative size{after}")
    return size
