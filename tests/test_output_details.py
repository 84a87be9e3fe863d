"""Small things real engines showed (issue 12, part 6): file modes, --json's pushed media
type, and --format v2s2 manifests byte-identical to skopeo's."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from ocipush.cli import main
from ocipush.push import PushOptions, push
from tests.imagegen import make_layout, rewrite_manifest
from tests.services import skopeo_copy, skopeo_inspect

FIXTURES = Path(__file__).parent.parent / "fixtures" / "oci"
ARCHIVES = Path(__file__).parent.parent / "fixtures" / "archives"
SINGLE = f"oci:{FIXTURES / 'single'}:v1"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def root_manifest(layout: Path, ref: str) -> bytes:
    index = json.loads((layout / "index.json").read_text())
    [entry] = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == ref]
    return (layout / "blobs" / "sha256" / entry["digest"][7:]).read_bytes()


def skopeo_v2s2(tmp_path: Path, source: str, *extra: str) -> bytes:
    """The manifest (or list) `skopeo copy --format v2s2` makes of `source`."""
    out = tmp_path / "skopeo-dir"
    copied = skopeo_copy(source, f"dir:{out}", "--format", "v2s2", *extra)
    assert copied.returncode == 0, copied.stderr
    return (out / "manifest.json").read_bytes()


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_layout_and_archive_files_honour_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        push(SINGLE, f"oci:{tmp_path / 'layout'}:v1")
        push(SINGLE, f"oci-archive:{tmp_path / 'a.tar'}:v1")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "layout").rglob("*") if p.is_file()]
    assert len(files) == 2 + 4  # oci-layout, index.json; manifest, config, two layers
    assert {p.stat().st_mode & 0o777 for p in files} == {mode}
    assert (tmp_path / "a.tar").stat().st_mode & 0o777 == mode
    with tarfile.open(tmp_path / "a.tar") as tar:  # what podman and skopeo would unpack
        assert {m.mode for m in tar.getmembers() if m.isreg()} == {mode}


def test_json_gives_each_blobs_pushed_media_type(tmp_path, capsys):
    """docker save's uncompressed layers are pushed gzip-compressed, named as OCI layers;
    --format v2s2 renames the config and the layers as Docker types."""
    source = f"docker-archive:{ARCHIVES / 'docker-legacy.tar'}:legacy:v1"
    assert main([source, f"oci:{tmp_path / 'oci'}:v1", "--json"]) == 0
    blobs = json.loads(capsys.readouterr().out)["blobs"]
    assert {(b["media_type"], b["pushed_media_type"]) for b in blobs} == {
        ("application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.config.v1+json"),
        ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"),
    }
    assert main([source, f"oci:{tmp_path / 's2'}:v1", "--json", "--format", "v2s2"]) == 0
    blobs = json.loads(capsys.readouterr().out)["blobs"]
    assert {b["pushed_media_type"] for b in blobs} == {
        "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip"}


def test_v2s2_manifest_is_byte_identical_to_skopeos(tmp_path):
    ours = push(SINGLE, f"oci:{tmp_path / 'out'}:v1", PushOptions(manifest_format="v2s2"))
    theirs = skopeo_v2s2(tmp_path, SINGLE)
    assert root_manifest(tmp_path / "out", "v1") == theirs
    assert ours.digest is not None and ours.digest.hex == __import__("hashlib").sha256(theirs).hexdigest()


def test_v2s2_drops_what_schema_2_does_not_define(tmp_path):
    info = make_layout(tmp_path / "src", [300, 200], ref="v1")
    manifest = json.loads(info.manifest.path.read_bytes())
    manifest["annotations"] = {"org.opencontainers.image.title": "annotated"}
    manifest["layers"][0]["annotations"] = {"org.opencontainers.image.title": "layer"}
    manifest["config"]["annotations"] = {"x": "y"}
    rewrite_manifest(info, json.dumps(manifest, indent=1).encode())  # spacing skopeo would not keep either
    source = f"oci:{info.layout}:v1"
    push(source, f"oci:{tmp_path / 'out'}:v1", PushOptions(manifest_format="v2s2"))
    ours = root_manifest(tmp_path / "out", "v1")
    assert b"annotations" not in ours
    assert ours == skopeo_v2s2(tmp_path, source)


def test_v2s2_manifest_list_is_byte_identical_to_skopeos(tmp_path):
    source = f"oci:{FIXTURES / 'multiarch'}:multi"
    push(source, f"oci:{tmp_path / 'out'}:v1", PushOptions(manifest_format="v2s2"))
    ours = root_manifest(tmp_path / "out", "v1")
    assert json.loads(ours)["mediaType"] == DOCKER_LIST
    assert ours == skopeo_v2s2(tmp_path, source, "--all")


def test_v2s2_to_a_registry_names_skopeos_digest(proxy, repo, tmp_path):
    result = push(SINGLE, f"{proxy.host}/{repo}:v1", PushOptions(manifest_format="v2s2"))
    copied = skopeo_copy(SINGLE, f"docker://{proxy.host}/{repo}:skopeo", "--format", "v2s2")
    assert copied.returncode == 0, copied.stderr
    assert skopeo_inspect(f"{proxy.host}/{repo}:skopeo")["Digest"] == str(result.digest)
