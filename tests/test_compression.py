"""Codecs, the streaming recompressor, the blob cache and manifest rewriting."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import threading

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ocipush import compression, mediatypes
from ocipush.cache import BlobCache
from ocipush.digest import Digest
from ocipush.errors import BlobVerificationError, SourceError
from ocipush.models import Descriptor, parse_manifest
from ocipush.rewrite import rewrite
from ocipush.sources.base import ImageNode
from ocipush.transcode import TranscodedContent


def small_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def recompress(blob: bytes, target: str | None, chunk: int | None = None, diff_id: Digest | None = None, level=None):
    content = TranscodedContent(lambda: io.BytesIO(blob), Digest.of(blob), len(blob), "layer L",
                            diff_id=diff_id, target=target, level=level)
    chunks = [b"".join(c) for c in content.chunks(chunk)]
    return b"".join(chunks), content.finish(), chunks


names = st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8}){0,2}", fullmatch=True)
tars = st.dictionaries(names, st.binary(max_size=20_000), min_size=1, max_size=5).map(small_tar)


@settings(max_examples=30, deadline=None)
@given(tars, st.sampled_from([None, "gzip", "zstd"]), st.sampled_from(["gzip", "zstd"]),
       st.one_of(st.none(), st.integers(100, 30_000)))
def test_recompression_round_trips_deterministically(tar, source_format, target, chunk):
    blob = {None: lambda t: t, "gzip": gzip.compress,
            "zstd": zstandard.ZstdCompressor().compress}[source_format](tar)
    out, digest, chunks = recompress(blob, target, chunk, Digest.of(tar))
    assert digest == Digest.of(out)
    back = gzip.decompress(out) if target == "gzip" else zstandard.ZstdDecompressor().decompressobj().decompress(out)
    assert back == tar
    if chunk:
        assert all(len(c) == chunk for c in chunks[:-1]) and 0 < len(chunks[-1]) <= chunk
    # The same input and settings give the same bytes, however the stream is cut.
    assert recompress(blob, target, 777, Digest.of(tar))[0] == out


def test_a_chunk_can_be_read_again():
    tar = small_tar({"a": b"x" * 50_000})
    content = TranscodedContent(lambda: io.BytesIO(tar), Digest.of(tar), len(tar), "L", diff_id=None, target="gzip")
    for chunk in content.chunks(1000):
        assert b"".join(chunk) == b"".join(chunk)


def test_diff_id_mismatch_names_the_layer():
    tar = small_tar({"a": b"hello"})
    message = r"layer L: uncompressed content hashes to sha256:.*diff_id is sha256:00"
    with pytest.raises(BlobVerificationError, match=message):
        recompress(gzip.compress(tar), "zstd", diff_id=Digest("sha256", "0" * 64))


def test_corrupt_source_refused():
    blob = bytearray(gzip.compress(small_tar({"a": b"hello" * 1000})))
    content = TranscodedContent(lambda: io.BytesIO(bytes(blob)), Digest.of(bytes(blob)), len(blob), "layer L",
                            diff_id=None, target="zstd")
    blob[len(blob) // 2] ^= 0xFF  # the opener now reads damaged bytes
    with pytest.raises(BlobVerificationError, match="layer L"):
        for chunk in content.chunks(None):
            b"".join(chunk)


def test_unsupported_source_compression():
    import lzma

    blob = lzma.compress(small_tar({"a": b"x"}))
    with pytest.raises(SourceError, match="layer L: xz-compressed layers are not supported"):
        recompress(blob, "zstd")


def test_truncated_gzip_refused():
    blob = gzip.compress(small_tar({"a": bytes(range(256)) * 100}))[:-20]
    with pytest.raises(BlobVerificationError, match="cannot decompress gzip"):
        recompress(blob, "zstd")


@pytest.mark.parametrize("head, name", [(b"\x1f\x8b\x08", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"),
                                        (b"\xfd7zXZ\x00", "xz"), (b"BZh9", "bzip2"), (b"ustar", None)])
def test_detect(head, name):
    assert compression.detect(head) == name


def test_cache_round_trip_and_damage(tmp_path):
    from ocipush.cache import CacheKey

    cache = BlobCache(tmp_path)
    src, out, tar = Digest.of(b"src"), Digest.of(b"out"), Digest.of(b"tar")
    key = CacheKey(src, "zstd", 3, tar)
    assert cache.lookup(key) is None
    cache.store(key, out, 10, "r.io/a")
    cache.store(key, out, 10, "r.io/b")
    hit = cache.lookup(key)
    assert hit.digest == out and hit.size == 10 and hit.locations == ("r.io/b", "r.io/a")
    assert cache.lookup(CacheKey(src, "zstd", 4, tar)) is None and cache.lookup(CacheKey(src, "gzip", 3, tar)) is None
    next((tmp_path / "blobs").glob("*.json")).write_text("{not json")
    assert cache.lookup(key) is None  # damaged entries are misses


# -- rewriting -----------------------------------------------------------------------

def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def node(doc: dict, media_type: str, children=()) -> ImageNode:
    data = json.dumps(doc).encode()
    desc = Descriptor(media_type, Digest.of(data), len(data))
    return ImageNode(desc, data, parse_manifest(data, media_type), tuple(children))


def docker_manifest(layer: str) -> dict:
    return {"schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST,
            "config": {"mediaType": mediatypes.DOCKER_CONFIG, "digest": d(1), "size": 5},
            "layers": [{"mediaType": mediatypes.DOCKER_LAYER, "digest": layer, "size": 7}]}


def test_unchanged_manifest_keeps_its_bytes():
    image = node(docker_manifest(d(2)), mediatypes.DOCKER_MANIFEST)
    (only,) = rewrite(image, {})
    assert only.data == image.data and only.descriptor == image.descriptor


def test_docker_manifest_to_zstd_becomes_oci():
    image = node(docker_manifest(d(2)), mediatypes.DOCKER_MANIFEST)
    new = Descriptor(mediatypes.OCI_LAYER_ZSTD, Digest.parse(d(3)), 6)
    (out,) = rewrite(image, {Digest.parse(d(2)): new})
    doc = json.loads(out.data)
    assert out.descriptor.media_type == doc["mediaType"] == mediatypes.OCI_MANIFEST
    assert doc["config"]["mediaType"] == mediatypes.OCI_CONFIG
    assert doc["layers"] == [{"mediaType": mediatypes.OCI_LAYER_ZSTD, "digest": d(3), "size": 6}]
    assert out.descriptor.digest == Digest.of(out.data)


def test_docker_manifest_to_gzip_stays_docker():
    image = node(docker_manifest(d(2)), mediatypes.DOCKER_MANIFEST)
    new = Descriptor(mediatypes.OCI_LAYER_GZIP, Digest.parse(d(3)), 6)
    (out,) = rewrite(image, {Digest.parse(d(2)): new})
    assert json.loads(out.data)["layers"][0]["mediaType"] == mediatypes.DOCKER_LAYER
    assert out.descriptor.media_type == mediatypes.DOCKER_MANIFEST


def test_index_children_attestation_links_and_subjects_follow():
    image_doc = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
                 "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": d(1), "size": 5},
                 "layers": [{"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": d(2), "size": 7,
                             "annotations": {"keep": "me"}}]}
    img = node(image_doc, mediatypes.OCI_MANIFEST)
    att_doc = {"schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
               "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": d(4), "size": 5},
               "layers": [{"mediaType": "application/vnd.in-toto+json", "digest": d(5), "size": 9}],
               "subject": {"mediaType": mediatypes.OCI_MANIFEST, "digest": str(img.descriptor.digest),
                           "size": img.descriptor.size}}
    att = node(att_doc, mediatypes.OCI_MANIFEST)
    index_doc = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [
        {"mediaType": mediatypes.OCI_MANIFEST, "digest": str(img.descriptor.digest), "size": img.descriptor.size,
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": mediatypes.OCI_MANIFEST, "digest": str(att.descriptor.digest), "size": att.descriptor.size,
         "platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                         "vnd.docker.reference.digest": str(img.descriptor.digest)}}]}
    index = node(index_doc, mediatypes.OCI_INDEX, [img, att])
    new_layer = Descriptor(mediatypes.OCI_LAYER_ZSTD, Digest.parse(d(3)), 6)
    out_img, out_att, out_index = rewrite(index, {Digest.parse(d(2)): new_layer})
    assert json.loads(out_img.data)["layers"][0]["annotations"] == {"keep": "me"}
    assert json.loads(out_att.data)["subject"]["digest"] == str(out_img.descriptor.digest)
    entries = json.loads(out_index.data)["manifests"]
    assert entries[0]["digest"] == str(out_img.descriptor.digest)
    assert entries[0]["platform"] == {"architecture": "amd64", "os": "linux"}
    assert entries[1]["digest"] == str(out_att.descriptor.digest)
    assert entries[1]["annotations"]["vnd.docker.reference.digest"] == str(out_img.descriptor.digest)


def test_zero_bomb_is_decompressed_in_bounded_blocks(monkeypatch):
    """64 MB of zeros gzip to 64 kB: no decompressed block is larger than one read."""
    tar = small_tar({"zeros": bytes(64 << 20)})
    blob = gzip.compress(tar, 9)
    seen = []
    real = compression.decompressing_reader

    class Recording:
        def __init__(self, raw, fmt):
            self._reader = real(raw, fmt)

        def read(self, n):
            data = self._reader.read(n)
            seen.append(len(data))
            return data

    monkeypatch.setattr(compression, "decompressing_reader", Recording)
    out, _, _ = recompress(blob, "zstd", diff_id=Digest.of(tar))
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == tar
    assert sum(seen) == len(tar) and max(seen) <= 1 << 20


def test_bytes_after_the_stream_are_part_of_the_digest():
    tar = small_tar({"a": b"x" * 1000})
    blob = gzip.compress(tar)
    content = TranscodedContent(lambda: io.BytesIO(blob + b"\0" * 10), Digest.of(blob), len(blob), "layer L",
                            diff_id=None, target="zstd")
    with pytest.raises(BlobVerificationError, match="layer L"):
        for chunk in content.chunks(None):
            b"".join(chunk)


def test_stopping_early_ends_the_worker_threads(monkeypatch):
    # Watch the threads this transcoding starts, not the process's count: a thread another
    # test left to end on its own would change that count while this test runs.
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def recording_start(thread: threading.Thread) -> None:
        started.append(thread)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    tar = small_tar({"a": bytes(range(256)) * 20_000})
    blob = gzip.compress(tar, 1)
    content = TranscodedContent(lambda: io.BytesIO(blob), Digest.of(blob), len(blob), "L", diff_id=None, target="zstd")
    chunks = content.chunks(10_000)
    b"".join(next(chunks))
    chunks.close()  # the uploader gave up after one chunk
    monkeypatch.undo()
    assert started, "the transcoder hands over between threads"
    assert [t.name for t in started if t.is_alive()] == []
