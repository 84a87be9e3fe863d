"""The zstd:chunked writer: a tar+zstd layer that containers/storage can pull file by file.

The output is one ordinary zstd stream of the layer's tar (any zstd reader gets the same
tar, hence the same diff_id), cut into frames so that each regular file's content starts
a frame of its own, then three zstd *skippable* frames that decoders ignore:

    [headers…][file 1 chunk 1][file 1 chunk 2][padding, headers…][file 2]…[trailer]
    [skippable: table of contents, zstd-compressed JSON]
    [skippable: tar-split, zstd-compressed JSON lines]
    [skippable: 64-byte footer]

The table of contents (TOC) lists every tar entry (type, name, link, mode, size, owner,
times, xattrs) and, for files with content, the sha256 of the content and the compressed
offsets of its frames; files larger than ``CHUNK`` are split into ``CHUNK``-sized chunks,
each its own frame with its own digest.  The tar-split (vbatts/tar-split's JSON packing:
raw header bytes and padding as base64 segments, each file as name, size and CRC-64)
lets containers/storage rebuild the exact tar from the files alone.  Where both are and
the sha256 of the compressed TOC are given by three layer annotations (``annotations``),
which the manifest carries: a client verifies the TOC against the manifest, then fetches
only the files it lacks with HTTP range requests.

The format is containers/storage's (``pkg/chunked/compressor`` and
``pkg/chunked/internal/minimal``); see docs/compression.md.  Two deliberate differences:
chunks are cut at fixed sizes, not by a rolling checksum (a byte-wise rolling sum is far
too slow in Python; fixed chunks dedupe identical files and unchanged prefixes), and runs
of zeros are not given "zeros" chunks (their frames compress to almost nothing anyway).

One pass, streamed: ``feed`` takes the uncompressed tar in blocks of any size and returns
the compressed bytes made so far; a small incremental tar parser finds the entries.  The
TOC and tar-split are compressed as they grow and kept in memory, so they are capped
(``MAX_TOC``, ``MAX_METADATA``).  A layer that zstd:chunked cannot describe — past a cap,
with duplicate paths, names that are not UTF-8, sparse files, PAX global headers or
unknown entry types, or a tar that does not parse — is not refused: from the entry at
fault on, the rest of the tar goes into the current frame, no TOC is written, and the
layer is an ordinary zstd layer; ``annotations`` is then empty and ``fallback`` says why.
The same input, level and library versions give the same bytes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib
import io
import json
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import zstandard

from .errors import UsageError

__all__ = [
    "CHUNK",
    "LEGACY_KEYS",
    "MANIFEST_CHECKSUM",
    "MANIFEST_POSITION",
    "MAX_METADATA",
    "MAX_SEGMENT",
    "MAX_SPECIAL",
    "MAX_TOC",
    "TARSPLIT_POSITION",
    "WRITER_VERSION",
    "ZstdChunkedEncoder",
    "crc64",
]

MANIFEST_CHECKSUM = "io.github.containers.zstd-chunked.manifest-checksum"
MANIFEST_POSITION = "io.github.containers.zstd-chunked.manifest-position"
TARSPLIT_POSITION = "io.github.containers.zstd-chunked.tarsplit-position"
# Written by containers/storage before 1.45 (Debian's podman 4.3); read, never written.
LEGACY_KEYS = (
    "io.containers.zstd-chunked.manifest-checksum",
    "io.containers.zstd-chunked.manifest-position",
)
WRITER_VERSION = "2"  # bump when the output for the same input changes (cache entries)

CHUNK = 4 << 20  # files larger than this are cut into chunks of this size, one frame each
MAX_TOC = 64 << 20  # uncompressed TOC; containers/storage refuses more than 150 MiB
MAX_METADATA = 64 << 20  # compressed TOC + tar-split, held in memory until the end
MAX_SPECIAL = 1 << 20  # a PAX or GNU long-name record's content (Go's archive/tar limit)
# Raw tar bytes between two entries' contents (headers, PAX and GNU records, padding) or
# after the end-of-archive blocks, held until they become one tar-split segment: a chain
# of PAX headers or gigabytes of trailer must not be held whole.  A real tar needs a few
# records (3 MiB at most) or a blocking factor's zeros here.
MAX_SEGMENT = 4 << 20
_MAX_INT64 = (1 << 63) - 1

_SKIPPABLE = b"\x50\x2a\x4d\x18"
_FOOTER_MAGIC = b"GNUlInUx"
_MANIFEST_TYPE_CRFS = 1
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_TYPES = {b"0": "reg", b"1": "hardlink", b"2": "symlink", b"3": "char", b"4": "block", b"5": "dir", b"6": "fifo"}
_HEADER_ONLY = {"hardlink", "symlink", "char", "block", "dir", "fifo"}  # Go reads no content for these
_XATTR = "SCHILY.xattr."


@functools.cache
def _crc_function() -> Callable[[bytes, int], int]:
    """CRC-64 with Go's ``crc64.ISO`` table, as tar-split checksums file contents:
    anycrc's carry-less-multiply code (~4 GB/s; a table-driven CRC ran at 0.4 GB/s, a
    third of the writer's time). Imported on first use: only zstd:chunked needs it."""
    try:
        anycrc: Any = importlib.import_module("anycrc")
    except ImportError:  # pragma: no cover - a dependency in pyproject
        raise UsageError("--compression-format zstd:chunked needs the Python package anycrc") from None
    fn: Callable[[bytes, int], int] = anycrc.Model("CRC64-GO-ISO").calc
    return fn


def crc64(data: bytes, crc: int = 0) -> int:
    """Go's ``crc64.Update(crc, crc64.MakeTable(crc64.ISO), data)``."""
    return _crc_function()(data, crc)


class _Unsupported(Exception):
    """The tar holds what zstd:chunked cannot describe: the writer falls back to zstd."""


class ZstdChunkedEncoder:
    """``feed(tar bytes) -> compressed bytes``, ``flush()``; then ``annotations`` for the
    layer descriptor (empty after a fallback, which ``fallback`` explains)."""

    def __init__(self, level: int, *, chunk: int = CHUNK, max_toc: int = MAX_TOC, max_metadata: int = MAX_METADATA):
        # One compressor per stream at a time (a ZstdCompressor is one context): the
        # frames of the tar, the TOC and the tar-split each have their own.
        _crc_function()  # fail now, not at the first file, without anycrc
        self._compressor = zstandard.ZstdCompressor(level=level)
        self._chunk = chunk
        self._max_toc = max_toc
        self._max_metadata = max_metadata
        self.annotations: dict[str, str] = {}
        self.fallback: str | None = None
        self._out: list[bytes] = []
        self._written = 0  # compressed bytes produced so far: offsets in the blob
        self._frame: list[bytes | memoryview] = []  # the open frame's tar bytes, compressed when it closes
        self._frame_size = 0
        self._pending = bytearray()  # tar bytes not yet consumed by the parser
        self._segment = bytearray()  # raw tar bytes since the last file: the next tar-split segment
        self._pax: dict[str, str] = {}
        self._long_name: str | None = None
        self._long_link: str | None = None
        self._file: _OpenFile | None = None
        self._skip = 0  # padding after a file's content still to consume
        self._ended = False  # the end-of-archive blocks were read: the rest is trailer
        self._names: set[str] = set()
        self._toc = _Metadata(zstandard.ZstdCompressor(level=level))
        self._toc.write(b'{"version":1,"entries":[')
        self._toc_first = True
        self._tarsplit = _Metadata(zstandard.ZstdCompressor(level=level))
        self._position = 0  # tar-split entry counter

    # -- the Codec interface ------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        if self.fallback is not None:
            self._write(data if isinstance(data, bytes) else bytes(data))  # kept until the frame closes
        else:
            self._pending += data
            self._parse()
        return self._take()

    def close(self) -> None:
        """Nothing to give back: the frames are compressed on the caller's thread."""

    def flush(self) -> bytes:
        if self.fallback is None:
            try:
                self._finish_tar()
            except _Unsupported as e:
                self._fall_back(str(e))
        if self.fallback is not None:
            self._write(bytes(self._pending))
            self._pending.clear()
            self._close_frame()
            return self._take()
        self._close_frame()
        self._write_metadata()
        return self._take()

    # -- output -------------------------------------------------------------------------

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.append(data)
            self._written += len(data)

    def _write(self, data: bytes) -> None:
        """Tar bytes into the open frame. A frame is compressed whole when it closes (at
        most ``chunk`` bytes): zstd sizes its tables to a known, small input, several
        times faster than a stream per frame for the many small files of a layer.
        Outside a file's content (headers, the tar after a fallback) a frame is cut at
        exactly ``chunk`` bytes, wherever the input was split: the same tar gives the same
        blob however it arrives (a resumed upload compresses it again and must match)."""
        if self._file is not None:  # _payload cuts a file's content at its chunk boundaries
            self._add_to_frame(data)
            return
        view = memoryview(data)
        while view:
            room = self._chunk - self._frame_size
            self._add_to_frame(view[:room])
            view = view[room:]
            if self._frame_size >= self._chunk:
                self._close_frame()

    def _add_to_frame(self, data: bytes | memoryview) -> None:
        if data:
            self._frame.append(data)
            self._frame_size += len(data)

    def _close_frame(self) -> None:
        if self._frame:
            self._emit(self._compressor.compress(b"".join(self._frame)))
            self._frame.clear()
            self._frame_size = 0

    def _fall_back(self, reason: str) -> None:
        """Stop describing: the remaining tar (``_pending`` on) is plain zstd."""
        self.fallback = reason
        self._toc = self._tarsplit = _Metadata(None)
        self._names.clear()
        self._file = None  # only at the end, for a tar cut inside a file: its bytes are written

    # -- the tar parser -----------------------------------------------------------------

    def _parse(self) -> None:
        try:
            while self._step():
                pass
        except _Unsupported as e:
            self._fall_back(str(e))
            self._write(bytes(self._pending))
            self._pending.clear()

    def _step(self) -> bool:
        """Consume what the pending bytes allow; False when more input is needed."""
        if self._file is not None:
            return self._payload()
        if self._skip:
            n = min(self._skip, len(self._pending))
            if not n:
                return False
            self._consume_raw(n)
            self._skip -= n
            return True
        if self._ended:
            if self._pending:
                self._consume_raw(len(self._pending))
            return False
        return self._header()

    def _consume_raw(self, n: int) -> None:
        """Header, padding or trailer bytes: into the frame and the next tar-split segment
        (at most ``MAX_SEGMENT`` bytes of it)."""
        if len(self._segment) + n > MAX_SEGMENT:
            where = ("after the end-of-archive blocks" if self._ended
                     else "of PAX/GNU records and headers before an entry")
            raise _Unsupported(f"more than {MAX_SEGMENT >> 20} MiB {where}")
        raw = bytes(self._pending[:n])
        del self._pending[:n]
        self._write(raw)
        self._segment += raw

    def _header(self) -> bool:
        if len(self._pending) < _BLOCK:
            return False
        block = bytes(self._pending[:_BLOCK])
        if block == _ZERO_BLOCK:
            if len(self._pending) < 2 * _BLOCK:
                return False
            if bytes(self._pending[_BLOCK : 2 * _BLOCK]) != _ZERO_BLOCK:
                raise _Unsupported("a zero block not followed by another inside the tar")
            self._ended = True
            self._consume_raw(2 * _BLOCK)
            return True
        header = _parse_header(block)
        typeflag = block[156:157]
        if typeflag in (b"x", b"L", b"K"):
            if not 0 <= header.size <= MAX_SPECIAL:
                raise _Unsupported(f"a {typeflag.decode()} header of {header.size} bytes")
            total = _BLOCK + _padded(header.size)
            if len(self._pending) < total:
                return False
            content = bytes(self._pending[_BLOCK : _BLOCK + header.size])
            if typeflag == b"x":
                self._pax = _parse_pax(content)  # Go keeps the last PAX header before an entry
            elif typeflag == b"L":
                self._long_name = _c_string(content)
            else:
                self._long_link = _c_string(content)
            self._consume_raw(total)
            return True
        entry = self._entry(block, header)
        self._consume_raw(_BLOCK)
        self._pax, self._long_name, self._long_link = {}, None, None
        self._add_tarsplit_segment()
        self._start_file(entry)
        return True

    def _entry(self, block: bytes, header: _Header) -> dict[str, Any]:
        """The TOC entry of the header in ``block`` (PAX and GNU records applied), checked
        for everything zstd:chunked needs; raises _Unsupported otherwise."""
        pax = self._pax
        # Go's order: the header's name, PAX's path over it, a (non-empty) GNU long name over both.
        name = self._long_name or pax.get("path", header.name)
        kind, size = _kind_and_size(block[156:157], name, pax, header)
        cleaned = _clean(name)
        if cleaned in self._names:
            raise _Unsupported(f"the tar holds {name!r} twice")
        entry: dict[str, Any] = {"type": kind, "name": name}
        link = self._long_link or pax.get("linkpath", header.linkname)
        if link:
            entry["linkName"] = link
        entry.update(_attributes(header, pax, name, size))
        xattrs = _xattrs(pax)
        if xattrs:
            entry["xattrs"] = xattrs
        for text in (name, link, *xattrs):
            if not _utf8(text):
                raise _Unsupported(f"tar entry {name!r}: a name or link that is not UTF-8")
        self._names.add(cleaned)
        return entry

    # -- file contents ------------------------------------------------------------------

    def _start_file(self, entry: dict[str, Any]) -> None:
        size = int(entry.get("size", 0))
        if size == 0:
            self._finish_entry(entry, [], "", 0)
            return
        self._close_frame()  # the content starts a frame of its own
        self._file = _OpenFile(entry, size, self._written, chunked=size > self._chunk)

    def _payload(self) -> bool:
        f = self._file
        assert f is not None
        if not self._pending:
            return False
        take = min(len(self._pending), f.remaining, self._chunk - f.chunk_filled)
        data = bytes(self._pending[:take])
        del self._pending[:take]
        self._write(data)
        f.update(data)
        if f.chunk_filled == self._chunk or f.remaining == 0:
            self._close_frame()
            f.end_chunk(self._written)
        if f.remaining == 0:
            self._file = None
            self._skip = _padded(f.size) - f.size
            self._finish_entry(f.entry, f.chunks, f.digest.hexdigest(), f.crc, f.size)
        return True

    def _finish_entry(
        self, entry: dict[str, Any], chunks: list[_ChunkInfo], digest: str, crc: int, size: int = 0
    ) -> None:
        entries = [entry]
        if size:
            entry["digest"] = f"sha256:{digest}"
            entry["offset"] = chunks[0].offset
            entry["endOffset"] = chunks[-1].end
            if len(chunks) > 1:
                entry["chunkSize"] = chunks[0].size
                entry["chunkDigest"] = chunks[0].digest
                for c in chunks[1:]:
                    entries.append({"type": "chunk", "name": entry["name"], "offset": c.offset,
                                    "chunkSize": c.size, "chunkOffset": c.chunk_offset, "chunkDigest": c.digest})
        for e in entries:
            self._toc.write(b"" if self._toc_first else b",")
            self._toc_first = False
            self._toc.write(_json(e))
        record: dict[str, Any] = {"type": 1, "name": entry["name"]}
        if size:
            record["size"] = size
        record["payload"] = base64.b64encode(struct.pack(">Q", crc)).decode() if size else None
        self._tarsplit_record(record)
        self._check_caps()

    def _add_tarsplit_segment(self) -> None:
        self._tarsplit_record({"type": 2, "payload": base64.b64encode(bytes(self._segment)).decode()})
        self._segment.clear()

    def _tarsplit_record(self, record: dict[str, Any]) -> None:
        record["position"] = self._position
        self._position += 1
        self._tarsplit.write(_json(record) + b"\n")

    def _check_caps(self) -> None:
        if self._toc.plain > self._max_toc:
            raise _Unsupported(f"its table of contents would pass {self._max_toc >> 20} MiB (too many files)")
        if self._toc.compressed + self._tarsplit.compressed > self._max_metadata:
            raise _Unsupported(f"its table of contents and tar-split would pass {self._max_metadata >> 20} MiB")

    def _finish_tar(self) -> None:
        """End of input: the tar must have ended cleanly (or at a header boundary, as Go's
        reader allows); the trailer is the last tar-split segment."""
        if self._file is not None or self._skip or (self._pending and not self._ended):
            raise _Unsupported("the tar ends inside an entry")
        # tar-split: the end-of-archive blocks, then whatever follows them, as two segments
        self._add_tarsplit_segment()
        self._add_tarsplit_segment()

    # -- the skippable frames -----------------------------------------------------------

    def _write_metadata(self) -> None:
        tarsplit = self._tarsplit.finish()
        tarsplit_digest = "sha256:" + hashlib.sha256(tarsplit).hexdigest()
        self._toc.write(b'],"tarSplitDigest":' + json.dumps(tarsplit_digest).encode() + b"}")
        toc_plain = self._toc.plain
        toc = self._toc.finish()
        toc_offset = self._written + 8
        self._emit(_skippable(toc))
        tarsplit_offset = self._written + 8
        self._emit(_skippable(tarsplit))
        footer = struct.pack(
            "<7Q8s", toc_offset, len(toc), toc_plain, _MANIFEST_TYPE_CRFS,
            tarsplit_offset, len(tarsplit), self._tarsplit.plain, _FOOTER_MAGIC,
        )
        self._emit(_skippable(footer))
        self.annotations = {
            MANIFEST_CHECKSUM: "sha256:" + hashlib.sha256(toc).hexdigest(),
            MANIFEST_POSITION: f"{toc_offset}:{len(toc)}:{toc_plain}:{_MANIFEST_TYPE_CRFS}",
            TARSPLIT_POSITION: f"{tarsplit_offset}:{len(tarsplit)}:{self._tarsplit.plain}",
        }


class _Metadata:
    """A JSON document compressed as it is written (TOC, tar-split), kept in memory."""

    def __init__(self, compressor: zstandard.ZstdCompressor | None):
        self._buffer = io.BytesIO()
        self._c = compressor.compressobj() if compressor is not None else None
        self.plain = 0

    @property
    def compressed(self) -> int:
        return self._buffer.tell()

    def write(self, data: bytes) -> None:
        if self._c is not None:
            self.plain += len(data)
            self._buffer.write(self._c.compress(data))

    def finish(self) -> bytes:
        assert self._c is not None
        self._buffer.write(self._c.flush())
        return self._buffer.getvalue()


class _ChunkInfo:
    __slots__ = ("chunk_offset", "digest", "end", "offset", "size")

    def __init__(self, offset: int, chunk_offset: int, size: int, digest: str, end: int):
        self.offset, self.chunk_offset, self.size, self.digest, self.end = offset, chunk_offset, size, digest, end


class _OpenFile:
    """A file whose content is being compressed: its hashes and finished chunks."""

    def __init__(self, entry: dict[str, Any], size: int, offset: int, *, chunked: bool):
        self.entry = entry
        self.size = size
        self.remaining = size
        self.digest = hashlib.sha256()
        self.crc = 0
        self._crc = _crc_function()
        self.chunks: list[_ChunkInfo] = []
        self._chunked = chunked
        self._chunk_hash = hashlib.sha256() if chunked else None
        self.chunk_filled = 0
        self._chunk_start = offset  # compressed offset where the current chunk's frame starts

    def update(self, data: bytes) -> None:
        self.digest.update(data)
        if self._chunk_hash is not None:
            self._chunk_hash.update(data)
        self.crc = self._crc(data, self.crc)
        self.remaining -= len(data)
        self.chunk_filled += len(data)

    def end_chunk(self, written: int) -> None:
        digest = "sha256:" + (self._chunk_hash or self.digest).hexdigest()
        done = sum(c.size for c in self.chunks)
        self.chunks.append(_ChunkInfo(self._chunk_start, done, self.chunk_filled, digest, written))
        self._chunk_start = written
        self.chunk_filled = 0
        if self._chunked:
            self._chunk_hash = hashlib.sha256()


class _Header:
    __slots__ = ("atime", "ctime", "devmajor", "devminor", "gid", "linkname", "mode", "mtime", "name", "size", "uid")

    def __init__(self, **fields: Any):
        for k, v in fields.items():
            setattr(self, k, v)

    name: str
    linkname: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    atime: int | None
    ctime: int | None
    devmajor: int
    devminor: int


def _parse_header(block: bytes) -> _Header:
    """One tar header block, read as Go's archive/tar reads it (the reader containers/storage
    compares the TOC with): V7, USTAR/PAX, GNU and STAR layouts."""
    if not _checksum_ok(block):
        raise _Unsupported("a tar header with a bad checksum")
    magic, version, trailer = block[257:263], block[263:265], block[508:512]
    name = _c_string(block[0:100])
    atime = ctime = None
    devmajor = devminor = 0
    if magic == b"ustar\x00" and version == b"00":
        star = trailer == b"tar\x00"
        prefix = _c_string(block[345 : 345 + (131 if star else 155)])
        if star:
            atime, ctime = _number(block[476:488]), _number(block[488:500])
        if prefix:
            name = prefix + "/" + name
        devmajor, devminor = _number(block[329:337]), _number(block[337:345])
    elif magic == b"ustar " and version == b" \x00":
        if block[345] != 0:
            atime = _number(block[345:357])
        if block[357] != 0:
            ctime = _number(block[357:369])
        devmajor, devminor = _number(block[329:337]), _number(block[337:345])
    return _Header(
        name=name, linkname=_c_string(block[157:257]), mode=_number(block[100:108]),
        uid=_number(block[108:116]), gid=_number(block[116:124]), size=_number(block[124:136]),
        mtime=_number(block[136:148]), atime=atime, ctime=ctime, devmajor=devmajor, devminor=devminor,
    )


def _kind_and_size(typeflag: bytes, name: str, pax: dict[str, str], header: _Header) -> tuple[str, int]:
    """The TOC type of an entry and its content's size, as Go reads them; _Unsupported
    for what zstd:chunked cannot describe or Go refuses."""
    if typeflag == b"\x00":  # Go reads the old "regular file" type as a file or a directory
        typeflag = b"5" if name.endswith("/") else b"0"
    kind = _TYPES.get(typeflag)
    if kind is None:
        raise _Unsupported(f"tar entry {name!r} has type {typeflag!r}")
    if any(k.startswith("GNU.sparse.") for k in pax):
        raise _Unsupported(f"tar entry {name!r} is a sparse file")
    size = _pax_int(pax, "size", header.size, name)
    if not 0 <= size <= _MAX_INT64:  # Go refuses it (a negative one would never be consumed)
        raise _Unsupported(f"tar entry {name!r} has size {size}, outside 0 to 2^63-1")
    if kind in _HEADER_ONLY and size != 0:
        raise _Unsupported(f"tar entry {name!r} ({kind}) has a size")
    return kind, size


def _attributes(header: _Header, pax: dict[str, str], name: str, size: int) -> dict[str, Any]:
    """Mode, size, owner, times and device numbers, each left out when zero or unset
    (as containers/storage's ``omitempty``)."""
    found: dict[str, Any] = {}
    for key, value in (
        ("mode", header.mode),
        ("size", size),
        ("uid", _pax_int(pax, "uid", header.uid, name)),
        ("gid", _pax_int(pax, "gid", header.gid, name)),
    ):
        if value:
            found[key] = value
    for key, pax_key, seconds in (
        ("modtime", "mtime", header.mtime),
        ("accesstime", "atime", header.atime),
        ("changetime", "ctime", header.ctime),
    ):
        stamp = _pax_time(pax[pax_key]) if pax_key in pax else (None if seconds is None else (seconds, 0))
        if stamp is not None:
            found[key] = _rfc3339(stamp, name)
    if header.devmajor:
        found["devMajor"] = header.devmajor
    if header.devminor:
        found["devMinor"] = header.devminor
    return found


def _xattrs(pax: dict[str, str]) -> dict[str, str]:
    """PAX ``SCHILY.xattr.*`` records: name → base64 of the value's bytes, sorted."""
    found = {k[len(_XATTR) :]: base64.b64encode(v.encode("utf-8", "surrogateescape")).decode()
             for k, v in pax.items() if k.startswith(_XATTR)}
    return dict(sorted(found.items()))


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156])
    except _Unsupported:
        return False
    field = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(field)
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * sum(1 for b in field if b > 127)  # old tars summed signed bytes


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (first byte's high bit set)."""
    if field and field[0] & 0x80:
        value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        if field[0] & 0x40:  # negative
            value -= 1 << (8 * len(field) - 1)
        return value
    text = field.strip(b" \x00")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise _Unsupported(f"a tar header field {field!r} is not a number") from None


def _c_string(data: bytes) -> str:
    end = data.find(b"\x00")
    return (data if end < 0 else data[:end]).decode("utf-8", "surrogateescape")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_pax(content: bytes) -> dict[str, str]:
    """PAX records: ``"%d %s=%s\\n"``, each length counting itself."""
    records: dict[str, str] = {}
    rest = content
    while rest:
        space = rest.find(b" ")
        if space <= 0 or not rest[:space].isdigit():
            raise _Unsupported("a malformed PAX header")
        length = int(rest[:space])
        record, rest = rest[:length], rest[length:]
        if length <= space or len(record) != length or not record.endswith(b"\n") or b"=" not in record:
            raise _Unsupported("a malformed PAX header")
        key, _, value = record[space + 1 : -1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return records


def _pax_int(pax: dict[str, str], key: str, default: int, name: str) -> int:
    """Go's ``strconv.ParseInt(v, 10, 64)``: an optional sign and decimal digits (no
    spaces, no ``_``, which Python's ``int`` would take), within 64 bits."""
    if key not in pax:
        return default
    value = pax[key]
    if not _DECIMAL.fullmatch(value) or abs(number := int(value, 10)) > _MAX_INT64:
        raise _Unsupported(f"tar entry {name!r}: PAX {key}={value[:40]!r} is not a 64-bit number")
    return number


_DECIMAL = re.compile(r"[+-]?[0-9]{1,20}", re.ASCII)


def _pax_time(value: str) -> tuple[int, int]:
    """Go's parsePAXTime: seconds and nanoseconds, the fraction truncated to 9 digits."""
    seconds, _, fraction = value.partition(".")
    negative = seconds.startswith("-")
    try:
        secs = int(seconds or "0", 10)
        nanos = int((fraction + "000000000")[:9], 10) if fraction else 0
    except ValueError:
        raise _Unsupported(f"PAX time {value!r}") from None
    if fraction and not fraction.isdigit():
        raise _Unsupported(f"PAX time {value!r}")
    return (secs, -nanos) if negative else (secs, nanos)


def _rfc3339(stamp: tuple[int, int], name: str) -> str:
    """Go's ``time.Time`` JSON (RFC 3339, nanoseconds without trailing zeros), in UTC."""
    seconds, nanos = stamp
    try:
        when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    except OverflowError:
        raise _Unsupported(f"tar entry {name!r} has a time outside years 1-9999") from None
    if nanos < 0:
        when -= timedelta(seconds=1)
        nanos += 1_000_000_000
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def _clean(name: str) -> str:
    """Go's ``filepath.Clean``, which tar-split's packer uses to refuse duplicate paths."""
    rooted = name.startswith("/")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    return ("/" + cleaned) if rooted else (cleaned or ".")


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _skippable(data: bytes) -> bytes:
    return _SKIPPABLE + struct.pack("<I", len(data)) + data
