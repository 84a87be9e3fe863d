"""Parallel gzip (``pgzip``): one valid member, the source back, the same bytes whatever
the cores and the feeding; work spread over the pool; a real push that skopeo pulls back."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import shutil
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import igzip

from ocipush import compression, pgzip
from ocipush.cache import compressor_of
from ocipush.compression import Compression
from ocipush.push import PushOptions, push
from tests.imagegen import LayerSpec, make_layout


def sample(size: int, seed: int = 1) -> bytes:
    """Half text (compressible, with matches across block cuts), half random bytes."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghij klmnop\n", k=rng.randint(2, 12))) for _ in range(300)]
    out, n = bytearray(), 0
    while n < size:
        piece = b" ".join(rng.choices(words, k=200)) if rng.random() < 0.5 else rng.randbytes(5000)
        out += piece
        n += len(piece)
    return bytes(out[:size])


def encode(data: bytes, level: int = 6, *, feeds: list[int] | None = None, **kw) -> bytes:
    enc = pgzip.ParallelGzip(level, **kw)
    out, pos = [], 0
    for n in feeds or [len(data)]:
        out.append(enc.feed(data[pos : pos + n]))
        pos += n
    out.append(enc.feed(data[pos:]))
    out.append(enc.flush())
    return b"".join(out)


def one_member(stream: bytes) -> bytes:
    """The stream's content, asserting it is exactly one gzip member with the fixed header."""
    assert stream.startswith(pgzip.HEADER)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    content = d.decompress(stream) + d.flush()
    assert d.eof and d.unused_data == b""  # one member, nothing after it
    crc, size = struct.unpack("<II", stream[-8:])
    assert crc == zlib.crc32(content) and size == len(content) & 0xFFFFFFFF
    return content


@pytest.mark.parametrize("level", range(1, 10))
def test_every_level_is_one_member_that_every_reader_takes(level, tmp_path):
    data = sample(3_500_000)
    out = encode(data, level)
    assert one_member(out) == data
    assert gzip.decompress(out) == data and igzip.decompress(out) == data
    if shutil.which("gzip"):
        (tmp_path / "x.gz").write_bytes(out)
        subprocess.run(["gzip", "-t", str(tmp_path / "x.gz")], check=True)


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=6000) | st.integers(0, 40_000).map(sample),
    st.integers(1, 5000),
    st.integers(1, 4),
    st.lists(st.integers(0, 3000), max_size=6),
    st.sampled_from([1, 2, 6, 7, 8]),
)
def test_any_block_size_round_trips_and_feeding_does_not_matter(data, block, in_flight, feeds, level):
    out = encode(data, level, block=block, in_flight=in_flight, feeds=feeds)
    assert one_member(out) == data
    # The bytes depend on the input, the level and the block size only: not on how the
    # input was fed nor on how many blocks were at the pool at once.
    assert encode(data, level, block=block, in_flight=1) == out


def test_deterministic_and_independent_of_the_pool_size(monkeypatch):
    data = sample(5_000_000, seed=7)
    first = encode(data)
    assert encode(data, feeds=[1, 65536, 999_999, 3]) == first
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(pgzip, "_pool", ThreadPoolExecutor(max_workers=1))  # a one-core machine
    assert encode(data) == first


def test_blocks_are_deflated_on_several_pool_threads(monkeypatch):
    """The parallelism itself: one stream's blocks go to more than one worker thread,
    never to the caller's (what made one layer use one core)."""
    threads: set[str] = set()
    calls: list[int] = []
    real = pgzip._deflate
    gate = threading.Barrier(2, timeout=10)  # the first two blocks must be in work at the same time

    def spy(*args):
        threads.add(threading.current_thread().name)
        calls.append(1)
        if len(calls) <= 2:
            gate.wait()
        return real(*args)

    monkeypatch.setattr(pgzip, "_deflate", spy)
    monkeypatch.setattr(pgzip, "_pool", None)
    monkeypatch.setattr(pgzip.os, "cpu_count", lambda: 2)
    enc = compression.encoder("gzip", 6)
    data = sample(6 * pgzip.BLOCK)
    out = enc.feed(data) + enc.flush()
    assert one_member(out) == data
    assert len(threads) >= 2 and threading.current_thread().name not in threads


def test_whole_blocks_go_to_the_pool_uncopied(monkeypatch):
    """A block that lies within one fed buffer is deflated from that buffer (a view), not
    a copy: three copies of the stream cost more CPU than the sha256 of it."""
    seen: list[object] = []
    real = pgzip._block

    def spy(library, level, zdict, data, last):
        seen.append(data.obj if isinstance(data, memoryview) else None)
        return real(library, level, zdict, data, last)

    monkeypatch.setattr(pgzip, "_block", spy)
    data = sample(4 * pgzip.BLOCK + 1000)
    fed = [data[: 2 * pgzip.BLOCK + 10], data[2 * pgzip.BLOCK + 10 :]]
    enc = pgzip.ParallelGzip(6)
    out = enc.feed(fed[0]) + enc.feed(fed[1]) + enc.flush()
    assert one_member(out) == data
    # blocks 1-2 from the first buffer, block 3 straddles both (joined), block 4 from the second
    assert seen[0] is fed[0] and seen[1] is fed[0] and seen[2] is None and seen[3] is fed[1]


def test_a_closed_stream_cancels_its_blocks(monkeypatch):
    """A layer that fails or is cancelled half-way does not leave its blocks to the pool."""
    from concurrent.futures import ThreadPoolExecutor

    gate = threading.Event()
    real = pgzip._block

    def held(*args):
        gate.wait(10)
        return real(*args)

    monkeypatch.setattr(pgzip, "_block", held)
    pool = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(pgzip, "_pool", pool)
    enc = pgzip.ParallelGzip(6)
    enc.feed(sample(6 * pgzip.BLOCK))
    futures = [f for f, _ in enc._futures]
    enc.close()
    gate.set()
    pool.shutdown(wait=True)
    assert sum(f.cancelled() for f in futures) >= len(futures) - 1  # all but the one already running


def test_levels_trade_size_for_speed():
    data = sample(4_000_000, seed=3)
    sizes = {level: len(encode(data, level)) for level in (1, 6, 9)}
    assert sizes[1] > sizes[6] > sizes[9]
    # Near zlib 6 (this synthetic text is a worst case; real trees: 1.06x, docs/compression.md).
    assert sizes[6] <= 1.15 * len(gzip.compress(data, 6, mtime=0))


def test_cache_keys_gzip_on_the_parallel_compressor():
    assert compressor_of("gzip") == pgzip.version() and f"block {pgzip.BLOCK}" in pgzip.version()


@pytest.mark.integration
def test_uncompressed_layers_pushed_as_parallel_gzip_pull_back(registry, repo, tmp_path):
    """A real push of uncompressed layers bigger than several blocks; skopeo copies the
    image back (verifying every digest), and each layer is one member of its diff_id."""
    from tests.services import skopeo_pull

    info = make_layout(
        tmp_path / "img",
        [LayerSpec(5_000_000, "text", files=3, compression="none"), LayerSpec(3_000_000, compression="none")],
        ref="v1",
    )
    result = push(f"oci:{info.layout}", f"{registry.host}/{repo}:v1", PushOptions(compression=Compression("gzip")))
    dest = skopeo_pull(f"{registry.host}/{repo}:v1", tmp_path / "pulled")
    index = json.loads((dest / "index.json").read_text())

    def blob(d: str) -> bytes:
        return (Path(dest) / "blobs" / "sha256" / d.split(":")[1]).read_bytes()

    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert layer["mediaType"].endswith("tar+gzip")
        tar = one_member(blob(layer["digest"]))
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
    again = push(f"oci:{info.layout}", f"{registry.host}/{repo}-b:v1", PushOptions(compression=Compression("gzip")))
    assert again.digest == result.digest  # deterministic: the same image, the same bytes
