"""An independent reader of zstd:chunked layers, for the tests: it shares no code with
ocipush/zstdchunked.py (the writer) and reads the layer the way containers/storage does —
through the annotations, never through the writer's own bookkeeping.

``check_layer`` verifies, and raises AssertionError naming what is wrong:
- the annotations (current ``io.github.containers.*`` keys, or podman 4.3's older
  ``io.containers.*``) locate the TOC in a skippable frame, and the manifest-checksum is
  the sha256 of the compressed TOC;
- the whole blob decompresses (skippable frames skipped) to a tar hashing to the diff_id;
- every tar entry has its TOC entry (same type, size, mode, link), and every regular
  file's ``digest`` is the sha256 of its bytes; the compressed range each TOC entry (or
  chunk) names decompresses, alone, to exactly those bytes;
- with a tar-split (current format), its digest is the TOC's ``tarSplitDigest``, its
  segments and files (name, size, CRC-64) rebuild the tar byte for byte;
- the footer, when present, repeats the positions.
Validated on podman's own output (fixtures/oci/zstd-chunked) by test_zstdchunked_reader.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import tarfile
from dataclasses import dataclass, field
from typing import Any

import zstandard

CURRENT = "io.github.containers.zstd-chunked."
LEGACY = "io.containers.zstd-chunked."
SKIPPABLE = b"\x50\x2a\x4d\x18"
TYPES = {
    tarfile.REGTYPE: "reg", tarfile.AREGTYPE: "reg", tarfile.LNKTYPE: "hardlink", tarfile.SYMTYPE: "symlink",
    tarfile.DIRTYPE: "dir", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}


def _crc64_table() -> list[int]:
    poly = 0xD800000000000000  # Go's crc64.ISO, reflected
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc64_table()


def crc64_iso(data: bytes) -> int:
    """Go's crc64.Checksum(data, crc64.MakeTable(crc64.ISO)), slowly (test-sized data)."""
    crc = 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


@dataclass
class Layer:
    toc: dict[str, Any]
    tar: bytes
    prefix: str  # which generation of annotation keys
    tarsplit: list[dict[str, Any]] | None = None
    fetched: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # name → compressed ranges


def _position(value: str, parts: int) -> list[int]:
    fields = value.split(":")
    assert len(fields) == parts and all(f.isdigit() for f in fields), f"bad position annotation {value!r}"
    return [int(f) for f in fields]


def _skippable_at(blob: bytes, offset: int, length: int, what: str) -> bytes:
    assert offset >= 8 and offset + length <= len(blob), f"{what}: position outside the blob"
    assert blob[offset - 8 : offset - 4] == SKIPPABLE, f"{what}: not in a skippable frame"
    assert struct.unpack("<I", blob[offset - 4 : offset])[0] == length, f"{what}: frame size differs"
    return blob[offset : offset + length]


def _decompress_exact(data: bytes, size: int, what: str) -> bytes:
    out = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert len(out) == size, f"{what}: decompresses to {len(out)} bytes, not {size}"
    return out


def _range(blob: bytes, start: int, end: int, what: str) -> bytes:
    assert 0 <= start < end <= len(blob), f"{what}: bad range {start}-{end}"
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob[start:end]), read_across_frames=True)
    return reader.read()


def check_layer(blob: bytes, annotations: dict[str, str], diff_id: str) -> Layer:
    prefix = CURRENT if CURRENT + "manifest-checksum" in annotations else LEGACY
    checksum = annotations.get(prefix + "manifest-checksum")
    assert checksum, f"no zstd:chunked annotations in {sorted(annotations)}"
    toc_off, toc_len, toc_plain, toc_type = _position(annotations[prefix + "manifest-position"], 4)
    assert toc_type == 1, "manifest type is not CRFS (1)"
    compressed_toc = _skippable_at(blob, toc_off, toc_len, "TOC")
    assert "sha256:" + hashlib.sha256(compressed_toc).hexdigest() == checksum, "manifest-checksum is wrong"
    toc = json.loads(_decompress_exact(compressed_toc, toc_plain, "TOC"))
    assert toc.get("version") == 1, "TOC version is not 1"

    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id, "the blob does not decompress to the diff_id"
    layer = Layer(toc, tar, prefix)
    _check_entries(layer, blob)

    if prefix == CURRENT and prefix + "tarsplit-position" in annotations:
        ts_off, ts_len, ts_plain = _position(annotations[prefix + "tarsplit-position"], 3)
        compressed = _skippable_at(blob, ts_off, ts_len, "tar-split")
        assert toc.get("tarSplitDigest") == "sha256:" + hashlib.sha256(compressed).hexdigest(), "tarSplitDigest"
        lines = _decompress_exact(compressed, ts_plain, "tar-split").splitlines()
        layer.tarsplit = [json.loads(line) for line in lines]
        _check_tarsplit(layer)
        _check_footer(blob, [toc_off, toc_len, toc_plain, 1, ts_off, ts_len, ts_plain])
    return layer


def _check_entries(layer: Layer, blob: bytes) -> None:
    entries = layer.toc["entries"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_name.setdefault(e["name"].rstrip("/"), []).append(e)
    with tarfile.open(fileobj=io.BytesIO(layer.tar), mode="r:") as tf:
        members = tf.getmembers()
        raw_names = _raw_names(layer.tar)
        assert len(raw_names) == len(members)
        for member, name in zip(members, raw_names, strict=True):
            found = [e for e in by_name.get(name, []) if e["type"] != "chunk"]
            assert len(found) == 1, f"{name}: {len(found)} TOC entries"
            entry = found[0]
            assert entry["type"] == TYPES[member.type], f"{name}: type {entry['type']}"
            assert entry.get("mode", 0) == member.mode, f"{name}: mode"
            assert entry.get("uid", 0) == member.uid and entry.get("gid", 0) == member.gid, f"{name}: owner"
            if member.issym() or member.islnk():
                assert entry.get("linkName") == member.linkname, f"{name}: link"
            if not member.isreg():
                continue
            data = tf.extractfile(member).read()  # type: ignore[union-attr]
            assert entry.get("size", 0) == len(data), f"{name}: size"
            if not data:
                assert "digest" not in entry or not entry["digest"], f"{name}: an empty file with a digest"
                continue
            assert entry["digest"] == "sha256:" + hashlib.sha256(data).hexdigest(), f"{name}: digest"
            _check_ranges(layer, blob, name, entry, by_name[name], data)
    assert len(members) == sum(1 for e in entries if e["type"] != "chunk"), "TOC entries without a tar entry"


def _check_ranges(layer: Layer, blob: bytes, name: str, entry: dict[str, Any], all_entries: list[dict[str, Any]],
                  data: bytes) -> None:
    """What containers/storage fetches for the file: each chunk's range, alone."""
    chunks = [entry, *[e for e in all_entries if e["type"] == "chunk"]]
    if len(chunks) == 1 and "chunkSize" not in entry:
        got = _range(blob, entry["offset"], entry["endOffset"], name)
        assert got == data, f"{name}: its range does not decompress to its content"
        layer.fetched[name] = [(entry["offset"], entry["endOffset"])]
        return
    layer.fetched[name] = []
    rebuilt = b""
    for i, chunk in enumerate(chunks):
        end = chunks[i + 1]["offset"] if i + 1 < len(chunks) else entry["endOffset"]
        part = _range(blob, chunk["offset"], end, f"{name} chunk {i}")
        assert chunk.get("chunkOffset", 0) == len(rebuilt), f"{name} chunk {i}: chunkOffset"
        assert len(part) == chunk["chunkSize"], f"{name} chunk {i}: chunkSize"
        assert chunk["chunkDigest"] == "sha256:" + hashlib.sha256(part).hexdigest(), f"{name} chunk {i}: digest"
        rebuilt += part
        layer.fetched[name].append((chunk["offset"], end))
    assert rebuilt == data, f"{name}: its chunks do not make its content"


def _raw_names(tar: bytes) -> list[str]:
    """Each member's name, compared without a trailing slash (tarfile strips a
    directory's; the TOC keeps the tar's)."""
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        return [m.name.rstrip("/") for m in tf.getmembers()]


def _check_tarsplit(layer: Layer) -> None:
    assert layer.tarsplit is not None
    contents: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(layer.tar), mode="r:") as tf:
        for member, name in zip(tf.getmembers(), _raw_names(layer.tar), strict=True):
            if member.isreg():
                contents[name] = tf.extractfile(member).read()  # type: ignore[union-attr]
    rebuilt = bytearray()
    for i, record in enumerate(layer.tarsplit):
        assert record["position"] == i, "tar-split positions"
        if record["type"] == 2:
            rebuilt += base64.b64decode(record["payload"] or "")
        else:
            assert record["type"] == 1, f"tar-split record type {record['type']}"
            size = record.get("size", 0)
            if size:
                data = contents[record["name"].rstrip("/")]
                assert len(data) == size, f"tar-split {record['name']}: size"
                crc = struct.unpack(">Q", base64.b64decode(record["payload"]))[0]
                assert crc == crc64_iso(data), f"tar-split {record['name']}: CRC-64"
                rebuilt += data
    assert bytes(rebuilt) == layer.tar, "the tar-split does not rebuild the tar"
    # containers/storage (ensureTOCMatchesTarSplit): the same entries, each once
    names = [r["name"] for r in layer.tarsplit if r["type"] == 1]
    toc_names = [e["name"] for e in layer.toc["entries"] if e["type"] != "chunk"]
    assert names == toc_names, "the tar-split and the TOC list different entries"
    assert len(set(names)) == len(names), "an entry twice"


def _check_footer(blob: bytes, fields: list[int]) -> None:
    footer = blob[-64:]
    assert blob[-72:-68] == SKIPPABLE and struct.unpack("<I", blob[-68:-64])[0] == 64, "footer frame"
    assert footer[56:] == b"GNUlInUx", "footer magic"
    assert list(struct.unpack("<7Q", footer[:56])) == fields, "footer positions differ from the annotations"
