"""zstd on several cores: the bytes do not depend on the workers nor on how the input is
fed, the output stays within 1 % of one stream's, and the workers always go back."""

from __future__ import annotations

import glob
import gzip
import io
import os
import random
import sys
import tarfile

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ocipush import compression
from ocipush.cache import compressor_of
from ocipush.compression import ZSTD_JOB, CoreSlots
from ocipush.digest import Digest
from ocipush.errors import BlobVerificationError
from ocipush.transcode import TranscodedContent


def _mixed(size: int, seed: int = 7) -> bytes:
    """Text-like runs with repeats further apart than a job, and random stretches."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(3, 12)).hex().encode() for _ in range(2000)]
    parts, n = [], 0
    while n < size:
        if rng.random() < 0.2:
            part = rng.randbytes(rng.randint(1, 64 << 10))
        elif parts and rng.random() < 0.3:
            part = rng.choice(parts)  # a file met before, maybe a job or more back
        else:
            part = b" ".join(rng.choice(words) for _ in range(rng.randint(10, 20_000)))
        parts.append(part)
        n += len(part)
    return b"".join(parts)[:size]


DATA = _mixed(2 * ZSTD_JOB + 777_777)  # three jobs, the last one short


def _compress(data: bytes, *, want: int, feeds: list[int] | None = None, level: int = 3) -> bytes:
    slots = CoreSlots(8)
    enc = compression._ZstdEncoder(level, slots=slots, want=want)
    assert enc.workers == want
    out, pos, i = [], 0, 0
    sizes = feeds or [1 << 20]
    while pos < len(data):
        step = sizes[i % len(sizes)]
        out.append(enc.feed(data[pos : pos + step]))
        pos, i = pos + step, i + 1
    out.append(enc.flush())
    assert slots.free == 8, "flush gives the workers back"
    return b"".join(out)


def test_same_bytes_for_any_number_of_workers():
    outs = {w: _compress(DATA, want=w) for w in (1, 2, 4)}
    assert outs[1] == outs[2] == outs[4]
    assert zstandard.ZstdDecompressor().decompressobj().decompress(outs[1]) == DATA
    # ...and the bytes are zstd's multithreaded framing, not one stream's (which differ):
    assert outs[1] != zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters.from_level(3, window_log=23)
    ).compress(DATA)


_REFERENCE: list[bytes] = []


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(1, 3 << 20), min_size=1, max_size=6), st.sampled_from([1, 2]))
def test_same_bytes_however_the_input_is_fed(feeds, workers):
    if not _REFERENCE:
        _REFERENCE.append(_compress(DATA, want=1))
    feeds = [f if f > 4096 or i % 2 else f * 1000 for i, f in enumerate(feeds)]  # odd sizes, not only tiny ones
    assert _compress(DATA, want=workers, feeds=feeds) == _REFERENCE[0]


def _real_tree(budget: int) -> bytes:
    """A tar of real files of this machine: Python's standard library."""
    buf = io.BytesIO()
    roots = sorted(glob.glob(f"{sys.base_prefix}/lib/python3*/")) or [os.path.dirname(os.__file__)]
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(glob.glob(f"{roots[0]}**/*.py", recursive=True)):
            tar.add(path, recursive=False)
            if buf.tell() >= budget:
                break
    return buf.getvalue()


def test_output_within_one_percent_of_a_single_stream():
    tree = _real_tree(3 * ZSTD_JOB)
    if len(tree) < 2 * ZSTD_JOB:
        pytest.skip("too few Python files here for several jobs")
    one_stream = zstandard.ZstdCompressor(
        compression_params=zstandard.ZstdCompressionParameters.from_level(3, window_log=23)
    ).compress(tree)
    threaded = _compress(tree, want=2)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(threaded) == tree
    assert len(threaded) <= 1.01 * len(one_stream)


def test_a_stream_takes_what_is_free_and_at_least_one():
    slots = CoreSlots(3)
    a = compression._ZstdEncoder(3, slots=slots, want=2)
    b = compression._ZstdEncoder(3, slots=slots, want=2)
    c = compression._ZstdEncoder(3, slots=slots, want=2)
    assert (a.workers, b.workers, c.workers, slots.free) == (2, 1, 1, -1)
    b.close()
    c.close()
    c.close()  # twice is harmless
    assert slots.free == 1
    a.flush()
    assert slots.free == 3


def test_high_levels_take_one_worker():
    """Level 19's match tables are ~80 MiB a worker: a second one would double that."""
    slots = CoreSlots(8)
    assert compression._ZstdEncoder(3, slots=slots).workers == min(2, os.cpu_count() or 1)
    high = compression._ZstdEncoder(19, slots=slots)
    assert high.workers == 1
    high.close()


def test_the_cache_keys_zstd_on_the_job_size():
    assert compressor_of("zstd") == compression.zstd_version()
    assert f"job {ZSTD_JOB}" in compressor_of("zstd")


class _FailingReader(io.RawIOBase):
    """A source that breaks after ``good`` bytes (a disk error half-way)."""

    def __init__(self, data: bytes, good: int):
        self._data, self._pos, self._good = data, 0, good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self._pos >= self._good:
            raise OSError(5, "injected I/O error")
        n = min(len(buffer), self._good - self._pos, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("target", ["zstd", "gzip"])
def test_workers_go_back_on_error(target):
    free = compression.SLOTS.free
    tar = DATA[: ZSTD_JOB + 1000]
    content = TranscodedContent(
        lambda: _FailingReader(tar, ZSTD_JOB // 2), Digest.of(tar), len(tar), "layer L", diff_id=None, target=target
    )
    with pytest.raises((OSError, BlobVerificationError), match="injected"):
        for chunk in content.chunks(1 << 20):
            b"".join(chunk)
    assert compression.SLOTS.free == free


def test_workers_go_back_on_a_corrupt_source():
    free = compression.SLOTS.free
    blob = bytearray(gzip.compress(DATA[: 3 << 20], 1))
    blob[len(blob) // 2] ^= 0xFF
    content = TranscodedContent(
        lambda: io.BytesIO(bytes(blob)), Digest.of(bytes(blob)), len(blob), "layer L", diff_id=None, target="zstd"
    )
    with pytest.raises(BlobVerificationError):
        for chunk in content.chunks(1 << 20):
            b"".join(chunk)
    assert compression.SLOTS.free == free


def test_workers_go_back_when_the_upload_is_cancelled():
    free = compression.SLOTS.free
    content = TranscodedContent(
        lambda: io.BytesIO(DATA), Digest.of(DATA), len(DATA), "layer L", diff_id=None, target="zstd"
    )
    chunks = content.chunks(100_000)
    b"".join(next(chunks))
    assert compression.SLOTS.free < free  # the stream holds its workers while it runs
    chunks.close()  # the uploader gave up
    assert compression.SLOTS.free == free


def test_workers_go_back_after_a_whole_layer():
    free = compression.SLOTS.free
    content = TranscodedContent(
        lambda: io.BytesIO(DATA), Digest.of(DATA), len(DATA), "layer L", diff_id=None, target="zstd"
    )
    out = b"".join(b"".join(c) for c in content.chunks(None))
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == DATA
    assert compression.SLOTS.free == free
