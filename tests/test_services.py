"""The test services behave like the real world ocipush is built for."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.services import skopeo_copy, skopeo_inspect, skopeo_pull

pytestmark = pytest.mark.integration

MB = 1024 * 1024


@pytest.fixture(scope="module")
def http():
    # trust_env=False: never send loopback traffic to an http_proxy from the environment.
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def start_upload(http: httpx.Client, base_url: str, repo: str) -> str:
    response = http.post(f"{base_url}/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    return response.headers["Location"]


def write_blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_oci_layout(layout: Path, ref: str, layer_size: int) -> str:
    """An image with one gzip layer of random (incompressible) data; returns the layer digest."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w") as tar:
        info = tarfile.TarInfo("random.bin")
        info.size = layer_size
        tar.addfile(info, io.BytesIO(os.urandom(layer_size)))
    tar_bytes = tar_buffer.getvalue()
    layer = write_blob(layout, gzip.compress(tar_bytes, compresslevel=1, mtime=0))
    config = write_blob(layout, json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"]},
    }).encode())
    manifest = write_blob(layout, json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }).encode())
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **manifest,
            "annotations": {"org.opencontainers.image.ref.name": ref},
        }],
    }))
    return layer["digest"]


def test_registry_answers(registry, http):
    response = http.get(f"{registry.url}/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_proxy_forwards_with_chunk_headers(proxy, http, repo):
    mark = proxy.mark()
    response = http.get(f"{proxy.url}/v2/")
    assert response.status_code == 200
    assert response.headers["OCI-Chunk-Max-Length"] == "8000000"
    assert response.headers["OCI-Chunk-Min-Length"] == "1048576"
    # The registry saw the proxy's Host, so its Location leads back through the proxy.
    assert start_upload(http, proxy.url, repo).startswith(f"{proxy.url}/v2/{repo}/blobs/uploads/")

    requests = proxy.requests(since=mark)
    assert [(r.method, r.path, r.status, r.upstream_status) for r in requests] == [
        ("GET", "/v2/", 200, 200),
        ("POST", f"/v2/{repo}/blobs/uploads/", 202, 202),
    ]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_limit_gets_413_from_nginx(proxy, http, repo, chunked):
    location = start_upload(http, proxy.url, repo)
    body = os.urandom(9 * MB)
    mark = proxy.mark()
    # An iterator has no length, so httpx sends it with Transfer-Encoding: chunked.
    response = http.patch(
        location,
        content=iter([body]) if chunked else body,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 413
    assert response.headers["OCI-Chunk-Max-Length"] == "8000000"  # `always` covers errors too

    [patch] = proxy.requests(since=mark)
    assert (patch.method, patch.status, patch.upstream_status) == ("PATCH", 413, None)
    assert patch.body_length == (None if chunked else 9 * MB)


def test_make_proxy_with_other_limit_and_no_headers(make_proxy, http, repo):
    small = make_proxy(client_max_body_size="1m", headers=None)
    response = http.get(f"{small.url}/v2/")
    assert response.status_code == 200
    assert not any(name.lower().startswith("oci-chunk") for name in response.headers)

    location = start_upload(http, small.url, repo)
    fits = http.patch(location, content=os.urandom(MB // 2))
    assert fits.status_code == 202, fits.text
    too_big = http.patch(fits.headers["Location"], content=os.urandom(2 * MB))
    assert too_big.status_code == 413


def test_skopeo_whole_layer_patch_is_rejected_by_proxy(registry, proxy, repo, tmp_path):
    """The mission's motivating failure: skopeo PATCHes a layer in one request."""
    layout = tmp_path / "image"
    layer_digest = write_oci_layout(layout, "v1", layer_size=12 * MB)

    through_proxy = skopeo_copy(f"oci:{layout}:v1", f"docker://{proxy.host}/{repo}:v1")
    assert through_proxy.returncode != 0
    assert "413" in through_proxy.stderr, through_proxy.stderr

    direct = skopeo_copy(f"oci:{layout}:v1", f"docker://{registry.host}/{repo}:v1")
    assert direct.returncode == 0, direct.stderr

    pulled = skopeo_pull(f"{registry.host}/{repo}:v1", tmp_path / "pulled")
    [entry] = json.loads((pulled / "index.json").read_text())["manifests"]
    manifest_path = pulled / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")
    [layer] = json.loads(manifest_path.read_text())["layers"]
    assert layer["digest"] == layer_digest
    assert skopeo_inspect(f"{registry.host}/{repo}:v1")["Layers"] == [layer_digest]
