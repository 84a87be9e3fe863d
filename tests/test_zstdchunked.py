"""The zstd:chunked writer, read back by the independent reader (tests/zstdchunked_reader.py):
every kind of tar entry, split input, chunking, determinism, and every fallback to plain
zstd (a tar the format cannot describe, the caps)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ocipush.cache import BlobCache, CacheKey
from ocipush.digest import Digest
from ocipush.seal import document_sum as _seal
from ocipush.zstdchunked import ZstdChunkedEncoder, crc64
from tests.zstdchunked_reader import check_layer, crc64_iso


def make_tar(entries: list[tuple[str, bytes | None]], fmt: int = tarfile.PAX_FORMAT, **extra: object) -> bytes:
    """A tar of (name, content) — content None for a directory — plus the kinds of entry
    the TOC describes: a symlink, a hardlink, a fifo, a long name, xattrs."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid = 1700000000, 1000, 100
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        if extra.get("specials", True):
            link = tarfile.TarInfo("etc/link")
            link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "hello", 1700000000
            tar.addfile(link)
            hard = tarfile.TarInfo("etc/hard")
            hard.type, hard.linkname = tarfile.LNKTYPE, "etc/hello"
            tar.addfile(hard)
            fifo = tarfile.TarInfo("run/fifo")
            fifo.type = tarfile.FIFOTYPE
            tar.addfile(fifo)
            long = tarfile.TarInfo("deep/" + "x" * 150 + "/file")
            long.size = 3
            tar.addfile(long, io.BytesIO(b"abc"))
    return out.getvalue()


def encode(tar: bytes, step: int = 1 << 20, **options: int) -> tuple[bytes, ZstdChunkedEncoder]:
    enc = ZstdChunkedEncoder(3, **options)
    out = b"".join(enc.feed(tar[i : i + step]) for i in range(0, len(tar), step)) + enc.flush()
    return out, enc


def diff_id(tar: bytes) -> str:
    return "sha256:" + hashlib.sha256(tar).hexdigest()


FILES = [
    ("etc", None),
    ("etc/hello", b"hello\n"),
    ("etc/empty", b""),
    ("usr/share/big", bytes(range(256)) * 1500 + b"tail"),
]


def test_crc64_is_gos_iso_table():
    assert crc64(b"123456789") == 0xB90956C775A41001  # Go's crc64.Checksum with crc64.ISO
    data = bytes(range(256)) * 7
    assert crc64(data[500:], crc64(data[:500])) == crc64_iso(data)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_every_entry_is_described(fmt):
    entries = FILES if fmt != tarfile.USTAR_FORMAT else FILES[:3]  # ustar: no 150-char names
    tar = make_tar(entries, fmt, specials=fmt != tarfile.USTAR_FORMAT)
    out, enc = encode(tar)
    assert enc.fallback is None
    layer = check_layer(out, enc.annotations, diff_id(tar))
    types = {e["name"].rstrip("/"): e["type"] for e in layer.toc["entries"]}
    assert types["etc"] == "dir" and types["etc/hello"] == "reg"
    if fmt != tarfile.USTAR_FORMAT:
        assert types["etc/link"] == "symlink" and types["etc/hard"] == "hardlink" and types["run/fifo"] == "fifo"
        assert types["deep/" + "x" * 150 + "/file"] == "reg"
    hello = next(e for e in layer.toc["entries"] if e["name"] == "etc/hello")
    assert hello["uid"] == 1000 and hello["gid"] == 100 and hello["modtime"] == "2023-11-14T22:13:20Z"


def test_large_files_are_cut_into_chunks_of_their_own_frames():
    tar = make_tar(FILES)
    out, enc = encode(tar, chunk=100_000)
    layer = check_layer(out, enc.annotations, diff_id(tar))
    big = [e for e in layer.toc["entries"] if e["name"] == "usr/share/big"]
    assert [e["type"] for e in big] == ["reg", "chunk", "chunk", "chunk"]
    assert [e.get("chunkOffset", 0) for e in big] == [0, 100_000, 200_000, 300_000]
    assert len(layer.fetched["usr/share/big"]) == 4


def test_xattrs_and_pax_times():
    out_tar = io.BytesIO()
    with tarfile.open(fileobj=out_tar, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("bin/ping")
        info.size = 4
        info.pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00", "mtime": "1700000000.25",
                            "atime": "1700000001"}
        tar.addfile(info, io.BytesIO(b"ping"))
    tar_bytes = out_tar.getvalue()
    out, enc = encode(tar_bytes)
    layer = check_layer(out, enc.annotations, diff_id(tar_bytes))
    (entry,) = layer.toc["entries"]
    assert entry["xattrs"] == {"security.capability": "AQA="}
    assert entry["modtime"] == "2023-11-14T22:13:20.25Z" and entry["accesstime"] == "2023-11-14T22:13:21Z"


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 70_000), min_size=1, max_size=8))
def test_the_output_does_not_depend_on_how_the_input_is_split(cuts):
    tar = make_tar(FILES)
    whole, _ = encode(tar, chunk=150_000)
    enc = ZstdChunkedEncoder(3, chunk=150_000)
    parts, pos, i = [], 0, 0
    while pos < len(tar):
        step = cuts[i % len(cuts)]
        parts.append(enc.feed(tar[pos : pos + step]))
        pos, i = pos + step, i + 1
    assert b"".join(parts) + enc.flush() == whole


names = st.lists(st.text("abcxyz019._-", min_size=1, max_size=12), min_size=1, max_size=3).map("/".join)


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(names, st.integers(0, 40_000), min_size=1, max_size=12), st.integers(1, 5))
def test_any_tree_reads_back_exactly(sizes, seed):
    rng = random.Random(seed)
    names_seen = {n.strip("/") for n in sizes}
    files = [(n, rng.randbytes(s // 2) + bytes(s - s // 2)) for n, s in sizes.items()
             if n.strip("/") and n.count("/") == n.strip("/").count("/")
             and not any(other.startswith(n.strip("/") + "/") for other in names_seen)]
    tar = make_tar(files, specials=False)
    out, enc = encode(tar, step=rng.randint(100, 9000), chunk=16_384)
    if enc.fallback:  # "a" and "./a", "a//b": paths twice after cleaning
        assert "twice" in enc.fallback
        return
    check_layer(out, enc.annotations, diff_id(tar))


def test_trailing_bytes_after_the_end_blocks_are_kept():
    tar = make_tar(FILES) + bytes(10240) + b"junk"
    out, enc = encode(tar)
    assert enc.fallback is None
    check_layer(out, enc.annotations, diff_id(tar))


def _fallback(tar: bytes, **options: int) -> str:
    out, enc = encode(tar, step=4096, **options)
    assert enc.annotations == {}
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out), read_across_frames=True).read()
    assert plain == tar  # still the same layer, as plain zstd
    assert enc.fallback
    return enc.fallback


def test_duplicate_paths_fall_back_to_plain_zstd():
    assert "twice" in _fallback(make_tar([("a", b"1"), ("./a", b"2")], specials=False))


def test_past_the_toc_cap_the_layer_is_plain_zstd():
    tar = make_tar([(f"f{n}", b"x") for n in range(200)], specials=False)
    assert "table of contents" in _fallback(tar, max_toc=4096)
    assert "table of contents" in _fallback(tar, max_metadata=1024)


def test_what_the_format_cannot_describe_falls_back():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "x"}) as tar:
        tar.addfile(tarfile.TarInfo("a"))
    assert "type b'g'" in _fallback(out.getvalue())  # a PAX global header
    assert "not UTF-8" in _fallback(make_tar([("caf\udce9", b"1")], tarfile.GNU_FORMAT, specials=False))
    truncated = make_tar(FILES)[:1500]
    assert "ends inside" in _fallback(truncated)


# -- the blob cache remembers the annotations ---------------------------------------------

CHUNKED_ANNOTATIONS = {
    "io.github.containers.zstd-chunked.manifest-checksum": "sha256:" + "a" * 64,
    "io.github.containers.zstd-chunked.manifest-position": "100:20:300:1",
    "io.github.containers.zstd-chunked.tarsplit-position": "128:10:900",
}


def test_the_cache_keeps_a_chunked_layers_annotations(tmp_path):
    cache = BlobCache(tmp_path / "cache")
    key = CacheKey(Digest.of(b"src"), "zstd:chunked", 3, Digest.of(b"tar"))
    assert key.compressor.startswith("ocipush zstd:chunked ")  # its own entries, its own version
    cache.store(key, Digest.of(b"out"), 10, "r.io/a", annotations=CHUNKED_ANNOTATIONS)
    assert cache.lookup(key).annotations == CHUNKED_ANNOTATIONS  # type: ignore[union-attr]
    cache.store(key, Digest.of(b"out"), 10, "r.io/b")  # a mount: the entry keeps them
    assert cache.lookup(key).annotations == CHUNKED_ANNOTATIONS  # type: ignore[union-attr]


@pytest.mark.parametrize("annotations", [
    {"org.example": "x"},
    {"io.github.containers.zstd-chunked.manifest-position": "1:2"},
    {"io.github.containers.zstd-chunked.manifest-checksum": "sha256:" + "a" * 64 + "\n"},
    ["not", "a", "map"],
])
def test_forged_annotations_are_a_miss_even_when_sealed(tmp_path, annotations):
    cache = BlobCache(tmp_path / "cache")
    key = CacheKey(Digest.of(b"src"), "zstd:chunked", 3, Digest.of(b"tar"))
    cache.store(key, Digest.of(b"out"), 10, "r.io/a", annotations=CHUNKED_ANNOTATIONS)
    path = next(cache.root.glob("*.json"))
    doc = {k: v for k, v in json.loads(path.read_text()).items() if k != "sum"}
    doc["annotations"] = annotations
    path.write_text(json.dumps({**doc, "sum": _seal(doc, cache.key())}))
    assert cache.lookup(key) is None


def test_a_tar_cut_inside_a_file_is_plain_zstd():
    tar = make_tar(FILES)
    assert "ends inside" in _fallback(tar[: len(tar) // 2])  # inside usr/share/big's content
