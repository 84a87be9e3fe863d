"""Checks tests/imagegen.py and the committed fixtures against a real tool.

skopeo verifies every blob digest it copies, so a clean `skopeo copy` of a
layout is strong evidence that the layout is valid.
"""

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard

from tests.imagegen import (
    INDEX,
    LAYER_MEDIA_TYPES,
    REF_ANNOTATION,
    LayerSpec,
    flip_byte,
    make_index_layout,
    make_layout,
    remove_blob,
    truncate_blob,
)
from tests.services import skopeo_copy, skopeo_inspect

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "oci"


def copy(layout: Path, ref: str, dest: Path, *flags):
    return skopeo_copy(f"oci:{layout}:{ref}", f"oci:{dest}:{ref}", *flags)


def ref_descriptor(layout: Path, ref: str) -> dict:
    """The index.json entry tagged `ref`."""
    entries = json.loads((layout / "index.json").read_bytes())["manifests"]
    [entry] = [e for e in entries if e.get("annotations", {}).get(REF_ANNOTATION) == ref]
    return entry


def blob_json(layout: Path, digest: str) -> dict:
    return json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes())


def round_trip(layout: Path, ref: str, dest: Path, *flags) -> None:
    """Copy layout:ref to dest and check the copy kept the same top manifest."""
    # Without the flag skopeo gzips uncompressed layers, changing the manifest.
    result = copy(layout, ref, dest, "--dest-oci-accept-uncompressed-layers", *flags)
    assert result.returncode == 0, result.stderr
    assert ref_descriptor(dest, ref)["digest"] == ref_descriptor(layout, ref)["digest"]


def decompress(path: Path, compression: str) -> bytes:
    data = path.read_bytes()
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


# --- the generator ---------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_image_is_valid(tmp_path, compression):
    specs = [LayerSpec(300_000), LayerSpec(300_000, "text", files=3), 10]
    info = make_layout(tmp_path / "src", specs, ref="v1", compression=compression)

    manifest = skopeo_inspect(f"oci:{info.layout}:v1", raw=True)
    assert manifest == json.loads(info.manifest.path.read_bytes())
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_MEDIA_TYPES[compression]] * 3
    assert manifest["config"]["digest"] == info.config.digest
    image = skopeo_inspect(f"oci:{info.layout}:v1")
    assert (image["Os"], image["Architecture"]) == ("linux", "amd64")
    assert image["Layers"] == [layer.digest for layer in info.layers]

    config = json.loads(info.config.path.read_bytes())
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id for layer in info.layers]}
    assert len(config["history"]) == 3

    round_trip(info.layout, "v1", tmp_path / "copy")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layer_content_matches_spec_and_diff_id(tmp_path, compression):
    # skopeo's oci->oci copy checks digests but never decompresses, so the
    # diff_ids and tar contents are checked here.
    info = make_layout(tmp_path, [LayerSpec(100_001, "text", files=3)], compression=compression)
    [layer] = info.layers
    tar_bytes = decompress(layer.path, compression)
    assert "sha256:" + hashlib.sha256(tar_bytes).hexdigest() == layer.diff_id
    assert len(tar_bytes) == layer.tar_size
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = [(m.name, m.size, m.mtime, m.uid) for m in tar.getmembers()]
    assert members == [
        ("layer0", 0, 1700000000, 0),
        ("layer0/file0.txt", 33333, 1700000000, 0),
        ("layer0/file1.txt", 33333, 1700000000, 0),
        ("layer0/file2.txt", 33335, 1700000000, 0),
    ]


def test_text_compresses_and_random_does_not(tmp_path):
    info = make_layout(tmp_path, [LayerSpec(1 << 20, "text"), LayerSpec(1 << 20, "random")])
    text, rand = info.layers
    assert text.size < text.tar_size / 3
    assert rand.size >= rand.tar_size


def test_mixed_compression_in_one_image(tmp_path):
    specs = [LayerSpec(1000, compression="zstd"), LayerSpec(1000), LayerSpec(1000, compression="none")]
    info = make_layout(tmp_path / "src", specs, compression="gzip")
    assert [layer.media_type for layer in info.layers] == [
        LAYER_MEDIA_TYPES["zstd"], LAYER_MEDIA_TYPES["gzip"], LAYER_MEDIA_TYPES["none"]]
    round_trip(info.layout, "latest", tmp_path / "copy")


def test_index_layout(tmp_path):
    platforms = [("linux", "amd64"), ("linux", "arm64", "v8")]
    info = make_index_layout(tmp_path / "src", [2000, LayerSpec(2000, "text")], platforms=platforms)

    index = skopeo_inspect(f"oci:{info.layout}:multi", raw=True)
    assert index["mediaType"] == INDEX
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    for entry, image in zip(index["manifests"], info.images, strict=True):
        assert entry["digest"] == image.digest
        config = json.loads(image.config.path.read_bytes())
        assert {k: config[k] for k in entry["platform"]} == entry["platform"]
    # Same specs, different content per platform.
    amd64, arm64 = info.images
    assert {layer.digest for layer in amd64.layers}.isdisjoint(layer.digest for layer in arm64.layers)

    round_trip(info.layout, "multi", tmp_path / "copy", "--all")


def test_same_seed_same_bytes(tmp_path):
    specs = [LayerSpec(50_000, "text"), 50_000]
    first = make_layout(tmp_path / "a", specs, seed=7)
    again = make_layout(tmp_path / "b", specs, seed=7)
    other = make_layout(tmp_path / "c", specs, seed=8)
    assert first.digest == again.digest
    assert [b.digest for b in first.blobs] == [b.digest for b in again.blobs]
    assert other.digest != first.digest
    index = make_index_layout(tmp_path / "d", specs, seed=7)
    assert index.digest == make_index_layout(tmp_path / "e", specs, seed=7).digest


def test_several_refs_in_one_layout(tmp_path):
    layout = tmp_path / "src"
    a = make_layout(layout, [1000], ref="a", seed=1)
    make_layout(layout, [1000], ref="b", seed=2)
    b = make_layout(layout, [1000], ref="b", seed=3)  # retag replaces the entry
    entries = json.loads((layout / "index.json").read_bytes())["manifests"]
    assert [(e["annotations"][REF_ANNOTATION], e["digest"]) for e in entries] == [
        ("a", a.digest), ("b", b.digest)]
    round_trip(layout, "a", tmp_path / "copy")
    round_trip(layout, "b", tmp_path / "copy")


@pytest.mark.parametrize("corrupt", [flip_byte, truncate_blob, remove_blob])
def test_corruption_helpers_break_the_image(tmp_path, corrupt):
    info = make_layout(tmp_path / "src", [10_000])
    size = info.layers[0].size
    corrupt(info.layers[0])

    path = info.layers[0].path
    expected_size = {flip_byte: size, truncate_blob: size // 2, remove_blob: None}[corrupt]
    assert (path.stat().st_size if path.exists() else None) == expected_size
    assert copy(info.layout, "latest", tmp_path / "copy").returncode != 0


# --- the committed fixtures -------------------------------------------------


@pytest.mark.parametrize("name, ref, flags", [
    ("single", "v1", []),
    ("tworefs", "a", []),
    ("tworefs", "b", []),
    ("multiarch", "multi", ["--all"]),
    ("zstd", "v1", []),
])
def test_fixture_round_trips(tmp_path, name, ref, flags):
    round_trip(FIXTURES / name, ref, tmp_path / "copy", *flags)


def test_fixture_shapes():
    single = FIXTURES / "single"
    manifest = blob_json(single, ref_descriptor(single, "v1")["digest"])
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_MEDIA_TYPES["gzip"]] * 2

    zstd = FIXTURES / "zstd"
    manifest = blob_json(zstd, ref_descriptor(zstd, "v1")["digest"])
    assert [layer["mediaType"] for layer in manifest["layers"]] == [LAYER_MEDIA_TYPES["zstd"]] * 2

    tworefs = FIXTURES / "tworefs"
    a, b = (blob_json(tworefs, ref_descriptor(tworefs, r)["digest"]) for r in "ab")
    assert a["layers"][0] == b["layers"][0] and a["layers"][1] != b["layers"][1]

    multi = FIXTURES / "multiarch"
    index = blob_json(multi, ref_descriptor(multi, "multi")["digest"])
    for entry in index["manifests"]:
        config = blob_json(multi, blob_json(multi, entry["digest"])["config"]["digest"])
        assert (config["os"], config["architecture"]) == (
            entry["platform"]["os"], entry["platform"]["architecture"])
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]


def test_nested_fixture(tmp_path):
    nested = FIXTURES / "nested"
    top = ref_descriptor(nested, "nested")
    outer = blob_json(nested, top["digest"])
    [inner] = outer["manifests"]
    assert top["mediaType"] == outer["mediaType"] == inner["mediaType"] == INDEX
    assert len(blob_json(nested, inner["digest"])["manifests"]) == 2

    # skopeo cannot copy an index of indexes ("Unexpectedly received a
    # manifest list instead of a manifest for a single image"), so tag the
    # inner index in a copy of the layout and round-trip that.
    layout = tmp_path / "nested"
    shutil.copytree(nested, layout)
    index_json = json.loads((layout / "index.json").read_bytes())
    index_json["manifests"].append({**inner, "annotations": {REF_ANNOTATION: "inner"}})
    (layout / "index.json").write_text(json.dumps(index_json))
    round_trip(layout, "inner", tmp_path / "copy", "--all")
