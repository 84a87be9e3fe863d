"""Recompression while uploading, against the real registry through the body-limited
nginx; skopeo pulls every result back, and every zstd layer must decompress to its diff_id."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import zstandard

from ocipush.cache import BlobCache
from ocipush.cli import main
from ocipush.compression import Compression
from ocipush.push import PushOptions, push
from tests.helpers import registry_manifest
from tests.imagegen import LayerSpec, make_index_layout, make_layout

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parent.parent / "fixtures" / "oci"


def zstd_options(tmp_path, **kw) -> PushOptions:
    return PushOptions(compression=Compression("zstd"), cache=BlobCache(tmp_path / "cache"), jobs=2, **kw)


def pulled_layers_match_diff_ids(host: str, repo: str, tag: str, tmp_path: Path, media_type: str) -> list[str]:
    """skopeo copies the image back (verifying every digest); every layer is of
    ``media_type`` and decompresses to the config's diff_id."""
    from tests.services import skopeo_pull

    dest = skopeo_pull(f"{host}/{repo}:{tag}", tmp_path / f"pulled-{tag}")
    index = json.loads((dest / "index.json").read_text())

    def blob(d: str) -> bytes:
        return (dest / "blobs" / "sha256" / d.split(":")[1]).read_bytes()

    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    digests = []
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert layer["mediaType"] == media_type
        tar = zstandard.ZstdDecompressor().decompressobj().decompress(blob(layer["digest"]))
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
        digests.append(layer["digest"])
    return digests


def test_gzip_to_zstd_through_the_limit(proxy, repo, tmp_path):
    info = make_layout(tmp_path / "img", [LayerSpec(20_000_000, "text", files=3), LayerSpec(9_000_000)], ref="v1")
    mark = proxy.mark()
    result = push(f"oci:{info.layout}", f"{proxy.host}/{repo}:v1", zstd_options(tmp_path))
    assert result.digest != info.digest  # new layers, new manifest
    assert all(r.body_length <= 8_000_000 for r in proxy.requests(mark) if r.method == "PATCH")
    response = registry_manifest(proxy.host, repo, "v1")
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == str(result.digest)
    pulled_layers_match_diff_ids(proxy.host, repo, "v1", tmp_path, "application/vnd.oci.image.layer.v1.tar+zstd")


def test_recompression_is_deterministic_and_cached(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [LayerSpec(3_000_000, "text")], ref="v1")
    first = push(f"oci:{info.layout}", f"{proxy.host}/{repo}:a", zstd_options(tmp_path))
    # Without the cache the same bytes come out again: the registry deduplicates them.
    again = push(f"oci:{info.layout}", f"{proxy.host}/{repo}-other:a", PushOptions(compression=Compression("zstd")))
    assert again.digest == first.digest
    # With the cache an unchanged re-push compresses nothing and sends no blob.
    mark = proxy.mark()
    third = push(f"oci:{info.layout}", f"{proxy.host}/{repo}:b", zstd_options(tmp_path))
    assert third.digest == first.digest
    assert {b.action for b in third.blobs} == {"skipped"}
    assert not [r for r in proxy.requests(mark) if r.method in ("POST", "PATCH")]


def test_cache_mounts_from_another_repository(proxy, repo, tmp_path):
    info = make_layout(tmp_path / "img", [LayerSpec(2_000_000, "text")], ref="v1")
    push(f"oci:{info.layout}", f"{proxy.host}/{repo}-a:v1", zstd_options(tmp_path))
    mark = proxy.mark()
    result = push(f"oci:{info.layout}", f"{proxy.host}/{repo}-b:v1", zstd_options(tmp_path))
    layer = next(b for b in result.blobs if str(b.source.digest) == info.layers[0].digest)
    assert layer.action == "mounted"
    assert not [r for r in proxy.requests(mark) if r.method == "PATCH" and r.status == 202 and r.body_length > 100_000]
    pulled_layers_match_diff_ids(proxy.host, f"{repo}-b", "v1", tmp_path, "application/vnd.oci.image.layer.v1.tar+zstd")


def test_stale_cache_entry_falls_back_to_compressing(proxy, repo, tmp_path):
    info = make_layout(tmp_path / "img", [LayerSpec(500_000, "text")], ref="v1")
    cache = BlobCache(tmp_path / "cache")
    from ocipush.cache import CacheKey
    from ocipush.digest import Digest

    bogus = Digest.parse("sha256:" + "1" * 64)
    key = CacheKey(Digest.parse(info.layers[0].digest), "zstd", 3, Digest.parse(info.layers[0].diff_id))
    cache.store(key, bogus, 123, f"{proxy.host}/{repo}-gone")
    result = push(f"oci:{info.layout}", f"{proxy.host}/{repo}:v1", zstd_options(tmp_path))
    layer = next(b for b in result.blobs if str(b.source.digest) == info.layers[0].digest)
    assert layer.action == "uploaded" and layer.pushed.digest != bogus
    assert cache.lookup(key).digest == layer.pushed.digest
    pulled_layers_match_diff_ids(proxy.host, repo, "v1", tmp_path, "application/vnd.oci.image.layer.v1.tar+zstd")


def test_multi_platform_index_recompressed(proxy, repo, tmp_path):
    from tests.services import skopeo_copy

    info = make_index_layout(tmp_path / "img", [LayerSpec(1_000_000, "text"), 2000])
    result = push(f"oci:{info.layout}", f"{proxy.host}/{repo}:multi", zstd_options(tmp_path))
    index = json.loads(registry_manifest(proxy.host, repo, "multi").content)
    served = registry_manifest(proxy.host, repo, "multi").content
    assert "sha256:" + hashlib.sha256(served).hexdigest() == str(result.digest)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    assert all(m["digest"] not in {i.digest for i in info.images} for m in index["manifests"])
    copied = skopeo_copy(f"docker://{proxy.host}/{repo}:multi", f"oci:{tmp_path / 'all'}:x", "--all")
    assert copied.returncode == 0, copied.stderr


def test_uncompressed_layers_are_gzipped_by_default(proxy, repo, tmp_path):
    info = make_layout(tmp_path / "img", [LayerSpec(600_000, "text", compression="none"), LayerSpec(1000)], ref="v1")
    result = push(f"oci:{info.layout}", f"{proxy.host}/{repo}:v1", PushOptions())
    actions = {b.source.media_type: b.pushed.media_type for b in result.blobs if b.source.digest != b.pushed.digest}
    assert actions == {"application/vnd.oci.image.layer.v1.tar": "application/vnd.oci.image.layer.v1.tar+gzip"}
    from tests.services import skopeo_pull

    skopeo_pull(f"{proxy.host}/{repo}:v1", tmp_path / "p")


def test_zstd_fixture_to_gzip(proxy, repo, tmp_path):
    opts = PushOptions(compression=Compression("gzip", 9))
    result = push(f"oci:{FIXTURES / 'zstd'}:v1", f"{proxy.host}/{repo}:v1", opts)
    assert {b.pushed.media_type for b in result.blobs if b.source.digest != b.pushed.digest} == {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    }
    from tests.services import skopeo_pull

    skopeo_pull(f"{proxy.host}/{repo}:v1", tmp_path / "p")


def test_diff_id_mismatch_is_refused_and_tags_nothing(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [LayerSpec(300_000, "text")], ref="v1")
    config = json.loads(info.config.path.read_bytes())
    config["rootfs"]["diff_ids"] = ["sha256:" + "2" * 64]
    # Rewrite config and manifest consistently so only the diff_id is wrong.
    from tests.imagegen import rewrite_manifest

    data = json.dumps(config).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (info.layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    manifest = json.loads(info.manifest.path.read_bytes())
    manifest["config"].update(digest=digest, size=len(data))
    rewrite_manifest(info, json.dumps(manifest).encode())
    code = main([f"oci:{info.layout}", f"{proxy.host}/{repo}:v1", "--compression-format", "zstd", "--no-cache"])
    assert code == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"blob {info.layers[0].digest}" in err and "but the config's diff_id is sha256:2222" in err
    assert registry_manifest(proxy.host, repo, "v1").status_code == 404


def test_bad_level_is_a_usage_error(tmp_path, capsys):
    info = make_layout(tmp_path / "img", [100])
    argv = [f"oci:{info.layout}", "localhost:1/x:y", "--compression-format", "zstd", "--compression-level", "30"]
    assert main(argv) == 2
    assert "zstd takes 1 to 22" in capsys.readouterr().err
