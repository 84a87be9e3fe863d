"""Read a tar archive in place: index its members once, then open each as a slice of the file.

Image archives (``docker save``, ``podman save``, skopeo, buildkit) are plain tars of
blobs that can weigh many GB; extracting them would double the disk use and the time.
One pass over the headers gives every member's offset and size — tarfile seeks over
member data when the file is seekable, so the scan reads one header per member
whatever the sizes — and each blob is then read as a slice of the archive, on a file
handle of its own so that parallel uploads never share a file position.

Links are resolved inside the archive as a file system would, because legacy
``docker save`` stores a repeated layer as a symlink ``<id>/layer.tar ->
../<id>/layer.tar``: symlinks relative to their own directory, hard links relative to
the archive root, ``..`` taken after the link it follows, at most 40 links per lookup
(Linux's limit) so that loops end. A link that is absolute or climbs above the
archive root is refused, never followed.

A compressed archive (``docker save | gzip``: gzip, zstd, xz or bzip2, told by its
magic bytes) cannot be sliced. It is decompressed once into a temporary file in
``$TMPDIR``, deleted by ``close()``: one uncompressed copy of the archive on disk, the
accepted price. Plain tars, the common case, are never copied.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import lzma
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, BinaryIO, ClassVar, Protocol, cast

import zstandard

from ..compression import detect
from ..errors import SourceError, local_io_error
from ..localfile import NotRegularFile, open_regular

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "TarIndex",
    "TarSlice",
    "detect_compression",
    "normalise_name",
    "open_decompressor",
    "open_tar",
    "read_decompressed",
    "sniff_compression",
    "temporary_file",
]

_PROC_FD = "/proc/self/fd"  # Linux: a path that opens an open file anew, with its own offset
_MAX_LINKS = 40  # Linux's MAXSYMLINKS: deeper chains are loops in practice
_COPY_BLOCK = 1 << 20
_MAGIC_LEN = 6  # the longest magic compression.detect knows: xz's


class _Decompressing(Protocol):
    """What the decompressors below give: gzip, bz2 and lzma files, zstandard's reader."""

    def read(self, size: int = ..., /) -> bytes: ...

    def __enter__(self) -> _Decompressing: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None, /
    ) -> object: ...


def _open_zstd(raw: IO[bytes]) -> _Decompressing:
    # Concatenated frames are valid zstd (pzstd writes them), as gzip members are.
    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)


# Each wraps an open file: the archive is opened once, by open_regular, never by name.
# (Factories: the caller's ``with`` closes what they open.)
_DECOMPRESSORS: dict[str, Callable[[IO[bytes]], _Decompressing]] = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "bzip2": lambda raw: bz2.BZ2File(raw, "rb"),
    "xz": lambda raw: lzma.LZMAFile(raw, "rb"),  # noqa: SIM115
    "zstd": _open_zstd,
}


def open_decompressor(compression: str, raw: IO[bytes]) -> _Decompressing:
    """The decompressed view of ``raw`` (``"gzip"``, ``"zstd"``, ``"xz"`` or ``"bzip2"``, as
    ``sniff_compression`` says); closing it leaves ``raw`` open.  Read it with
    ``read_decompressed``, which words its errors."""
    return _DECOMPRESSORS[compression](raw)


def sniff_compression(stream: IO[bytes]) -> str | None:
    """``"gzip"``, ``"zstd"``, ``"xz"``, ``"bzip2"`` or None (a plain tar, say), from the
    magic bytes at the stream's position, which it is left at. Never from names: a
    ``layer.tar`` may be gzip and ``blobs/sha256/…`` says nothing."""
    start = stream.tell()
    head = stream.read(tarfile.BLOCKSIZE)
    stream.seek(start)
    return detect_compression(head)


def detect_compression(head: bytes) -> str | None:
    """``sniff_compression`` of a stream's first 512 bytes: a magic at their start, unless
    they are a tar header — a tar whose first member is named ``BZh…`` is a plain tar."""
    compression = detect(head[:_MAGIC_LEN])
    if compression is None or len(head) < tarfile.BLOCKSIZE:
        return compression
    try:
        tarfile.TarInfo.frombuf(head[: tarfile.BLOCKSIZE], tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return compression
    return None


def open_tar(
    path: str | os.PathLike[str],
    label: str | None = None,
    *,
    temp: IO[bytes] | None = None,
    require_end: bool = False,
) -> TarIndex:
    """Index the archive at ``path``, decompressing it into a temporary file first if it
    is compressed. ``label`` names it in messages (default: the path). ``temp``, when
    given, is a temporary file holding the archive: the index owns it from now on.
    ``require_end``: the archive must end with tar's two zero blocks (a stream cut at a
    member boundary lacks them; a file on disk may, as some writers omit them)."""
    label = label or str(path)
    try:
        try:
            with _open_archive(path, label) as f:
                compression = sniff_compression(f)
        except FileNotFoundError:
            raise SourceError(f"{label}: no such file") from None
        except OSError as e:
            raise SourceError(f"{label}: {e.strerror}") from None
        if compression is not None:
            plain, plain_path = _decompress(path, compression, label)
            if temp is not None:
                temp.close()
            temp, path = plain, plain_path
        return TarIndex(Path(path), label, temp, require_end=require_end)
    except BaseException:
        if temp is not None:
            temp.close()
        raise


def _open_archive(path: str | os.PathLike[str], label: str) -> IO[bytes]:
    """The archive, which must be a regular file: a FIFO (``<(docker save …)``) would
    block, and could not be sliced anyway."""
    try:
        return open_regular(path)
    except NotRegularFile as e:
        if e.kind == "a directory":
            raise SourceError(f"{label}: a directory, not an archive") from None
        raise SourceError(f"{label}: {e.kind}, not a regular file; save the archive to a file") from None


def temporary_file(prefix: str) -> tuple[IO[bytes], str]:
    """A temporary file in ``$TMPDIR`` and a path that opens it again (readers each open
    their own).  On Linux the file never has a name (``O_TMPFILE``, or unlinked at once):
    its space is freed when it is closed *or when the process dies*, so a second Ctrl-C
    (which exits at once) or a kill leaves no gigabytes behind.  Elsewhere, a named file
    deleted on close.  OSError for the caller to word."""
    if os.path.isdir(_PROC_FD):
        anonymous = tempfile.TemporaryFile(prefix=prefix)  # noqa: SIM115 (the caller owns it)
        return anonymous, f"{_PROC_FD}/{anonymous.fileno()}"
    named = tempfile.NamedTemporaryFile(prefix=prefix, suffix=".tar")  # noqa: SIM115
    return named, named.name


def _decompress(path: str | os.PathLike[str], compression: str, label: str) -> tuple[IO[bytes], str]:
    """The archive decompressed into a temporary file in ``$TMPDIR``. A failing read is
    the archive's fault (SourceError); a failing write is the machine's (LocalIOError,
    naming the temporary directory: a full ``$TMPDIR`` is the usual cause)."""
    tmpdir = tempfile.gettempdir()
    try:
        # Not a with: the file is returned, and the TarIndex that reads it deletes it.
        temp, temp_path = temporary_file("ocipush-")
    except OSError as e:
        raise local_io_error(tmpdir, f"decompressing {label}", e) from None
    try:
        with _open_archive(path, label) as raw, open_decompressor(compression, raw) as stream:
            while block := read_decompressed(stream, compression, label):
                try:
                    temp.write(block)
                except OSError as e:
                    raise local_io_error(tmpdir, f"decompressing {label}", e) from None
            try:
                temp.flush()
            except OSError as e:
                raise local_io_error(tmpdir, f"decompressing {label}", e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            temp.close()  # flushes, which fails again on a full disk; the file is deleted anyway
        raise
    return temp, temp_path


def read_decompressed(stream: _Decompressing, compression: str, label: str, size: int = _COPY_BLOCK) -> bytes:
    """Up to ``size`` bytes (b"" at the end): corrupt data is a SourceError naming ``label``."""
    try:
        return stream.read(size)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as e:
        if isinstance(e, OSError) and e.errno:  # the disk under the archive failed, not the data
            raise SourceError(f"{label}: reading: {e.strerror}") from None
        raise SourceError(f"{label}: corrupt {compression} data: {e}") from None


class TarIndex:
    """The members of a plain tar file, by normalised name (``./a//b`` is ``a/b``).

    A FileStore: ``open(name)`` gives a TarSlice, FileNotFoundError for a missing member.
    """

    kind: ClassVar[str] = "archive"

    def __init__(self, path: Path, label: str, temp: IO[bytes] | None = None, *, require_end: bool = False):
        self.path = path
        self.label = label
        self._temp = temp
        self._members: dict[str, tarfile.TarInfo] = {}
        self._dirs: set[str] = set()  # explicit directories and every member's parents
        for info in _scan(path, label, require_end):
            name = normalise_name(info.name)
            self._members[name] = info  # a later member of the same name wins, as on extraction
            parts = name.split("/")
            self._dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
            if info.isdir():
                self._dirs.add(name)
        if not self._members:
            raise SourceError(f"{label}: empty archive")

    def describe(self, name: str) -> str:
        return f"{self.label} member {name}"

    def has(self, name: str) -> bool:
        """Whether ``name`` leads to a regular file (through links)."""
        try:
            self._resolve(name)
        except FileNotFoundError:
            return False
        return True

    def open(self, name: str) -> BinaryIO:
        info = self._resolve(name)
        if self._temp is not None and self._temp.closed:
            # A temporary_file's path names a file descriptor, which may be another file's now.
            raise SourceError(f"{self.describe(name)}: the archive's temporary copy was closed")
        try:
            # A TarSlice is a binary file (RawIOBase: read, readinto, seek, tell, with),
            # which typeshed does not declare as BinaryIO.
            raw = cast(io.FileIO, open_regular(self.path, buffering=0))  # unbuffered: a FileIO
            return cast(BinaryIO, TarSlice(raw, info.offset_data, info.size))
        except OSError as e:  # the archive was removed or replaced since it was indexed
            raise SourceError(f"{self.label}: {e.strerror or e}") from None

    def close(self) -> None:
        if self._temp is not None:
            self._temp.close()  # a temporary_file: gone on close

    def _resolve(self, name: str) -> tarfile.TarInfo:
        todo = name.split("/")
        done: list[str] = []
        links = 0
        while todo:
            part = todo.pop(0)
            if part in ("", ".", "..") and done and "/".join(done) not in self._dirs:
                # "file/." or "file/..": the kernel says ENOTDIR, and so do we
                raise FileNotFoundError(errno.ENOTDIR, "not a directory", name)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise SourceError(f"{self.describe(name)}: leads outside the archive")
                done.pop()
                continue
            path = "/".join([*done, part])
            info = self._members.get(path)
            if info is not None and (info.issym() or info.islnk()):
                links += 1
                if links > _MAX_LINKS:
                    raise SourceError(f"{self.describe(name)}: more than {_MAX_LINKS} links deep (a link loop?)")
                if info.linkname.startswith("/"):
                    raise SourceError(
                        f"{self.describe(path)}: absolute link to {info.linkname!r}; links must stay inside the archive"
                    )
                if info.islnk():
                    done = []  # a hard link names its target from the archive root
                todo[:0] = info.linkname.split("/")
                continue
            if todo and path not in self._dirs:
                raise FileNotFoundError(errno.ENOENT, "no such member", name)
            done.append(part)
        info = self._members.get("/".join(done))
        if info is None and "/".join(done) not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such member", name)
        if info is None or not info.isreg() or info.issparse():
            # Sparse members store holes elsewhere: a slice of the file would be wrong.
            raise SourceError(f"{self.describe(name)}: not a regular file")
        return info


def normalise_name(name: str) -> str:
    """A member name as the index keys it: ``./a//b`` is ``a/b``."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _scan(path: Path, label: str, require_end: bool = False) -> list[tarfile.TarInfo]:
    with _open_archive(path, label) as f:
        if os.fstat(f.fileno()).st_size == 0:
            return []
        try:
            tar = tarfile.TarFile(fileobj=f)  # plain tar only: compression is handled before
        except tarfile.ReadError as e:
            raise SourceError(f"{label}: not a tar archive ({e})") from None
        try:
            members = tar.getmembers()
        except tarfile.ReadError as e:
            raise SourceError(f"{label}: truncated or corrupt tar archive ({e})") from None
        # tarfile takes the first header it cannot parse for the end of the archive;
        # a real end is zero blocks (or nothing), anything else was cut off or damaged.
        f.seek(tar.offset)
        end = f.read(2 * tarfile.BLOCKSIZE)
        if end[: tarfile.BLOCKSIZE].strip(b"\0"):
            raise SourceError(
                f"{label}: truncated or corrupt tar archive after member {members[-1].name!r}"
            )
        if require_end and len(end) < 2 * tarfile.BLOCKSIZE:
            after = f" after member {members[-1].name!r}" if members else ""
            raise SourceError(f"{label}: truncated tar archive: it ends{after} without the end-of-archive blocks")
        return members


class TarSlice(io.RawIOBase):
    """Bytes [start, start + size) of ``file``, read-only and seekable; closes ``file``.

    Each slice must have a file handle of its own: reads seek it.
    """

    def __init__(self, file: io.FileIO, start: int, size: int):
        super().__init__()
        self._file = file
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer)
        n = max(0, min(len(view), self._size - self._pos))
        if n == 0:
            return 0
        self._file.seek(self._start + self._pos)
        got = self._file.readinto(view[:n])
        self._pos += got
        return got

    def readall(self) -> bytes:
        return self.read(max(0, self._size - self._pos))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._file.close()
        super().close()
