"""The test reader (tests/zstdchunked_reader.py) validated on podman's own zstd:chunked
output (fixtures/oci/zstd-chunked, made by fixtures/make-zstdchunked-fixture.sh), and
shown to catch what a wrong layer gets wrong."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import zstandard

from tests.zstdchunked_reader import LEGACY, check_layer

FIXTURE = Path(__file__).parent.parent / "fixtures" / "oci" / "zstd-chunked"


def _blob(digest: str) -> bytes:
    return (FIXTURE / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def _podman_layer() -> tuple[bytes, dict[str, str], str]:
    manifest = json.loads(_blob(json.loads((FIXTURE / "index.json").read_text())["manifests"][0]["digest"]))
    config = json.loads(_blob(manifest["config"]["digest"]))
    layer = manifest["layers"][0]
    return _blob(layer["digest"]), layer["annotations"], config["rootfs"]["diff_ids"][0]


def test_podmans_layer_passes():
    blob, annotations, config_diff_id = _podman_layer()
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()
    # podman 4.3 (containers/storage 1.43) drops the zero blocks Go's tar writer pads the
    # archive with past the end-of-archive marker: its layer is the config's tar, short
    # of 13 blocks, so its diff_id is wrong. Fixed in later containers/storage.
    assert "sha256:" + hashlib.sha256(tar + bytes(13 * 512)).hexdigest() == config_diff_id
    layer = check_layer(blob, annotations, "sha256:" + hashlib.sha256(tar).hexdigest())
    assert layer.prefix == LEGACY  # podman 4.3 writes the old keys, and no tar-split
    names = {e["name"] for e in layer.toc["entries"]}
    assert {"etc/hello.txt", "usr/share/big.txt", "etc/link", "etc/hard"} <= names
    assert len(layer.fetched["usr/share/big.txt"]) > 1  # chunked by podman's rolling checksum


def test_the_reader_catches_a_wrong_checksum_digest_or_range():
    blob, annotations, _ = _podman_layer()
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    bad = dict(annotations)
    bad[LEGACY + "manifest-checksum"] = "sha256:" + "0" * 64
    with pytest.raises(AssertionError, match="manifest-checksum"):
        check_layer(blob, bad, diff_id)
    with pytest.raises(AssertionError, match="diff_id"):
        check_layer(blob, annotations, "sha256:" + "1" * 64)
    off, length, plain, kind = annotations[LEGACY + "manifest-position"].split(":")
    moved = dict(annotations)
    moved[LEGACY + "manifest-position"] = f"{int(off) + 1}:{length}:{plain}:{kind}"
    with pytest.raises(AssertionError):
        check_layer(blob, moved, diff_id)
    # A TOC whose file digest lies: rewrite the TOC frame with one digest changed.
    toc = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(blob[int(off) : int(off) + int(length)]))
    entry = next(e for e in toc["entries"] if e["name"] == "etc/hello.txt")
    entry["digest"] = "sha256:" + "2" * 64
    data = zstandard.ZstdCompressor().compress(json.dumps(toc).encode())
    forged = blob[: int(off) - 8] + b"\x50\x2a\x4d\x18" + len(data).to_bytes(4, "little") + data
    lied = {
        LEGACY + "manifest-checksum": "sha256:" + hashlib.sha256(data).hexdigest(),
        LEGACY + "manifest-position": f"{off}:{len(data)}:{len(json.dumps(toc))}:1",
    }
    with pytest.raises(AssertionError, match=r"etc/hello\.txt: digest"):
        check_layer(forged, lied, diff_id)
