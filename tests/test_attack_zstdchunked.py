"""Hostile and odd tars fed to the zstd:chunked writer (issue 13 under attack): never a
traceback or a hang, memory bounded, the output always the same tar (the diff_id), and
either a zstd:chunked layer the independent reader accepts or plain zstd with a reason.
Header fields are read as Go's archive/tar (tar-split's fork, which containers/storage
uses) reads them: the TOC must name what that reader sees."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import signal
import tarfile
import tracemalloc
from collections.abc import Iterator

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ocipush.compression import Compression
from ocipush.digest import Digest
from ocipush.mediatypes import OCI_LAYER_ZSTD, is_zstd_chunked
from ocipush.models import Descriptor
from ocipush.plan import _target
from ocipush.zstdchunked import MAX_SPECIAL, ZstdChunkedEncoder
from tests.test_zstdchunked import FILES, make_tar
from tests.zstdchunked_reader import _decompress_exact, _position, _skippable_at, check_layer


@contextlib.contextmanager
def deadline(seconds: int = 20) -> Iterator[None]:
    """A hang is a failure, not a stuck suite (the encoder is pure Python: SIGALRM reaches it)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"the encoder ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def field(value: int | bytes, width: int) -> bytes:
    if isinstance(value, bytes):
        return value.ljust(width, b"\x00")[:width]
    return (b"%0*o" % (width - 1, value)) + b"\x00"


def base256(value: int, width: int) -> bytes:
    """GNU's binary numbers: the high bit of the first byte set, two's complement."""
    raw = (value % (1 << (8 * width))).to_bytes(width, "big")
    return bytes([raw[0] | 0x80]) + raw[1:]


def header(name: bytes, *, size: int | bytes = 0, typeflag: bytes = b"0", linkname: bytes = b"",
           mode: int = 0o644, magic: bytes = b"ustar\x0000") -> bytes:
    """One raw header block, any field as given (``size`` as raw bytes for odd encodings)."""
    block = bytearray(512)
    block[0:100] = field(name, 100)
    block[100:108] = field(mode, 8)
    block[108:116] = field(0, 8)
    block[116:124] = field(0, 8)
    block[124:136] = size if isinstance(size, bytes) else field(size, 12)
    block[136:148] = field(1700000000, 12)
    block[156:157] = typeflag
    block[157:257] = field(linkname, 100)
    block[257:265] = magic
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def pax(records: dict[bytes, bytes], name: bytes = b"PaxHeader") -> bytes:
    body = b""
    for key, value in records.items():
        rest = b" " + key + b"=" + value + b"\n"
        length = len(rest) + 1
        while length != len(rest) + len(str(length)):  # the length counts its own digits
            length = len(rest) + len(str(length))
        body += str(length).encode() + rest
    return header(name, size=len(body), typeflag=b"x") + padded(body)


def padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


END = bytes(1024)


def encode(tar: bytes, step: int = 4096, **options: int) -> tuple[bytes, ZstdChunkedEncoder]:
    enc = ZstdChunkedEncoder(3, **options)
    with deadline():
        out = b"".join(enc.feed(tar[i : i + step]) for i in range(0, len(tar), step)) + enc.flush()
    return out, enc


def plain(out: bytes) -> bytes:
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out), read_across_frames=True).read()


def diff_id(tar: bytes) -> str:
    return "sha256:" + hashlib.sha256(tar).hexdigest()


def same_layer(tar: bytes, **options: int) -> ZstdChunkedEncoder:
    """Whatever the tar, the output is that tar; a TOC, when written, is exact."""
    out, enc = encode(tar, **options)
    assert plain(out) == tar
    if enc.fallback is None:
        check_layer(out, enc.annotations, diff_id(tar))
    else:
        assert enc.annotations == {}
    return enc


# -- numbers Go refuses --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [base256(-1, 12), base256(-512, 12), base256(-(1 << 40), 12)],
                         ids=["-1", "-512", "-2^40"])
def test_a_negative_base256_size_is_plain_zstd_not_a_hang(size):
    tar = header(b"evil", size=size) + b"x" * 4096 + END
    enc = same_layer(tar)
    assert enc.fallback and "'evil' has size -" in enc.fallback


def test_a_huge_base256_size_is_a_tar_that_ends_inside_an_entry():
    tar = header(b"big", size=base256(1 << 90, 12)) + b"x" * 10_000 + END
    enc = same_layer(tar)
    assert enc.fallback and "'big' has size 1237940039285380274899124224" in enc.fallback


def test_a_small_base256_size_is_read_as_go_reads_it():
    tar = header(b"b256", size=base256(5, 12)) + padded(b"hello") + END
    enc = same_layer(tar)
    assert enc.fallback is None


@pytest.mark.parametrize("value", [b"-5", b"1_0", b" 5", b"5 ", b"0x10", b"\xd9\xa3", b"", b"99999999999999999999"])
def test_a_pax_size_go_would_refuse_is_plain_zstd(value):
    tar = pax({b"size": value}) + header(b"f", size=5) + padded(b"hello") + END
    enc = same_layer(tar)
    assert enc.fallback and "'f'" in enc.fallback and ("PAX size" in enc.fallback or "size -5" in enc.fallback)


def test_pax_numbers_go_accepts_are_read():
    tar = pax({b"size": b"+5", b"uid": b"0012"}) + header(b"f", size=5) + padded(b"hello") + END
    enc = same_layer(tar)
    assert enc.fallback is None


# -- which name wins: Go's rules ------------------------------------------------------------------


def entry_names(tar: bytes) -> list[str]:
    """The TOC's names, read directly: the test reader checks entries against Python's
    tarfile, which differs from Go's archive/tar exactly in these corners."""
    out, enc = encode(tar)
    assert enc.fallback is None, enc.fallback
    assert plain(out) == tar
    prefix = "io.github.containers.zstd-chunked."
    offset, length, size, _ = _position(enc.annotations[prefix + "manifest-position"], 4)
    toc = json.loads(_decompress_exact(_skippable_at(out, offset, length, "TOC"), size, "TOC"))
    return [e["name"] for e in toc["entries"] if e["type"] != "chunk"]


def test_a_second_pax_header_replaces_the_first():
    # Go's reader keeps only the last PAX header before an entry (paxHdrs = parsePAX(tr)).
    tar = pax({b"path": b"from-first-pax"}) + pax({b"uid": b"7"}) + header(b"plain", size=0) + END
    assert entry_names(tar) == ["plain"]


def test_a_gnu_long_name_wins_over_a_pax_path():
    # Go: mergePAX first, then "if gnuLongName != "" { hdr.Name = gnuLongName }".
    long = b"gnu/" + b"n" * 120
    record = header(b"././@LongLink", size=len(long) + 1, typeflag=b"L", magic=b"ustar  \x00") + padded(long + b"\x00")
    tar = pax({b"path": b"pax-name"}) + record + header(b"short", magic=b"ustar  \x00") + END
    assert entry_names(tar) == [long.decode()]


def test_an_empty_gnu_long_name_is_ignored():
    record = header(b"././@LongLink", size=1, typeflag=b"L", magic=b"ustar  \x00") + padded(b"\x00")
    tar = record + header(b"kept", magic=b"ustar  \x00") + END
    assert entry_names(tar) == ["kept"]


# -- memory: what the parser holds before an entry ------------------------------------------------


def peak_while(tar_parts: Iterator[bytes]) -> tuple[int, ZstdChunkedEncoder, bytes]:
    enc = ZstdChunkedEncoder(3)
    digest, out = hashlib.sha256(), hashlib.sha256()
    tracemalloc.start()
    try:
        with deadline(60):
            for part in tar_parts:
                digest.update(part)
                out.update(enc.feed(part))
            out.update(enc.flush())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, enc, digest.digest()


def test_a_long_chain_of_pax_headers_is_bounded():
    # Each PAX header alone is within Go's limit; a chain of them, before any entry, grows
    # the next tar-split segment: 40 MiB of them must not be held.
    record = pax({b"comment": b"c" * (MAX_SPECIAL - 64)})

    def parts() -> Iterator[bytes]:
        for _ in range(40):
            yield record
        yield header(b"f", size=5) + padded(b"hello") + END

    peak, enc, _ = peak_while(parts())
    assert enc.fallback and "PAX/GNU records" in enc.fallback
    assert peak < 24 << 20, f"peak {peak >> 20} MiB"


def test_a_huge_trailer_after_the_end_blocks_is_bounded():
    def parts() -> Iterator[bytes]:
        yield make_tar(FILES)
        for _ in range(48):
            yield b"t" * (1 << 20)

    peak, enc, _ = peak_while(parts())
    assert enc.fallback and "after the end" in enc.fallback
    assert peak < 24 << 20, f"peak {peak >> 20} MiB"


def test_a_usual_trailer_keeps_the_toc():
    tar = make_tar(FILES) + bytes(20 * 512 * 8)  # a blocking factor of 160
    assert same_layer(tar).fallback is None


# -- the same bytes however the input is split ------------------------------------------------


def _split_encode(tar: bytes, cuts: list[int], chunk: int) -> bytes:
    enc = ZstdChunkedEncoder(3, chunk=chunk)
    parts, pos, i = [], 0, 0
    with deadline():
        while pos < len(tar):
            step = cuts[i % len(cuts)]
            parts.append(enc.feed(tar[pos : pos + step]))
            pos, i = pos + step, i + 1
        return b"".join(parts) + enc.flush()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 9000), min_size=1, max_size=6), st.sampled_from(["fallback", "trailer", "headers"]))
def test_the_output_does_not_depend_on_the_split_after_a_fallback_or_in_a_trailer(cuts, case):
    chunk = 4096
    if case == "fallback":  # a path twice: plain zstd from there on
        tar = make_tar([("a", b"1" * 3000), ("./a", b"2" * 9000), ("b", b"3" * 20000)], specials=False)
    elif case == "trailer":
        tar = make_tar(FILES) + bytes(20_000) + b"junk" * 3000
    else:  # runs of header blocks and padding with no content between: frames cut among them
        tar = make_tar([(f"d{n}/", None) for n in range(40)] + [(f"f{n}", b"x" * n) for n in range(1, 30)],
                       specials=False)
    whole = _split_encode(tar, [len(tar)], chunk)
    assert _split_encode(tar, cuts, chunk) == whole
    assert plain(whole) == tar


# -- anything at all: no traceback, the same tar ------------------------------------------------

_types = st.sampled_from([b"0", b"\x00", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"x", b"L", b"K", b"g", b"S", b"V"])
_sizes = st.one_of(
    st.integers(0, 3000),
    st.integers(-(1 << 50), 1 << 70).map(lambda n: base256(n, 12)),
    st.binary(min_size=12, max_size=12),
)
_pax_values = st.one_of(st.binary(max_size=20), st.integers(-10, 10**20).map(lambda n: str(n).encode()))


@st.composite
def hostile_tars(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            key = draw(st.sampled_from([b"path", b"linkpath", b"size", b"uid", b"mtime", b"SCHILY.xattr.a",
                                        b"GNU.sparse.size", b"atime"]))
            out += pax({key: draw(_pax_values)})
        name = draw(st.binary(min_size=1, max_size=120))
        size = draw(_sizes)
        block = header(name, size=size, typeflag=draw(_types), linkname=draw(st.binary(max_size=20)),
                       magic=draw(st.sampled_from([b"ustar\x0000", b"ustar  \x00", bytes(8)])))
        n = size if isinstance(size, int) else draw(st.integers(0, 2000))
        out += block + padded(draw(st.binary(min_size=n, max_size=n)) if n < 50 else b"z" * n)
    if draw(st.booleans()):
        out += END + draw(st.binary(max_size=700))
    cut = draw(st.integers(0, len(out)))
    return out[:cut] if draw(st.booleans()) else out


@settings(max_examples=300, deadline=None)
@given(hostile_tars(), st.integers(1, 3000))
def test_any_tar_at_all_gives_the_same_tar_and_never_a_traceback(tar, step):
    out, enc = encode(tar, step=step, chunk=2048)
    assert plain(out) == tar
    assert (enc.fallback is None) == bool(enc.annotations)


def test_a_hardlink_to_a_later_entry_and_a_sparse_file():
    tar = (header(b"early", typeflag=b"1", linkname=b"late") + header(b"late", size=3) + padded(b"abc") + END)
    assert same_layer(tar).fallback is None
    sparse = header(b"sp", size=0, typeflag=b"S", magic=b"ustar  \x00") + END
    enc = same_layer(sparse)
    assert enc.fallback and "sp" in enc.fallback


def test_a_tarfile_sparse_pax_entry_falls_back():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("s")
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tar.addfile(info)
    enc = same_layer(out.getvalue())
    assert enc.fallback and "sparse" in enc.fallback


# -- a zstd:chunked SOURCE layer's annotations are the source's word -------------------------------

GOOD = {
    "io.github.containers.zstd-chunked.manifest-checksum": "sha256:" + "a" * 64,
    "io.github.containers.zstd-chunked.manifest-position": "900:80:300:1",
}


@pytest.mark.parametrize("change", [
    {},
    {"io.github.containers.zstd-chunked.manifest-checksum": "garbage"},
    {"io.github.containers.zstd-chunked.manifest-checksum": "sha256:" + "A" * 64},
    {"io.github.containers.zstd-chunked.manifest-position": None},
    {"io.github.containers.zstd-chunked.manifest-position": "900:80:300"},
    {"io.github.containers.zstd-chunked.manifest-position": "900:80:300:2"},
    {"io.github.containers.zstd-chunked.manifest-position": "-1:80:300:1"},
    {"io.github.containers.zstd-chunked.manifest-position": "990:80:300:1"},  # past the blob's 1000 bytes
    {"io.github.containers.zstd-chunked.manifest-position": "9" * 400 + ":1:1:1"},
], ids=["well-formed", "checksum-garbage", "checksum-uppercase", "no-position", "three-fields", "not-crfs",
        "negative", "past-the-end", "huge"])
def test_a_source_layers_chunked_annotations_count_only_when_well_formed(change):
    annotations = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    layer = Descriptor(OCI_LAYER_ZSTD, Digest.of(b"layer"), 1000, annotations=annotations)
    good = not change
    assert is_zstd_chunked(layer.media_type, layer.annotations, layer.size) is good
    # Asked for zstd:chunked: a layer whose annotations describe nothing is recompressed
    # (and loses them, push._layer_annotations); a well-formed one is kept as it is.
    assert _target(layer, Compression("zstd:chunked")) == (None if good else "zstd:chunked")
