"""dir: sources (the containers dir: transport), against the committed fixtures made by
skopeo and podman (fixtures/dir/, see fixtures/README.md) and broken copies of them."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ocipush import mediatypes
from ocipush.content import FileContent
from ocipush.errors import SourceError, UsageError
from ocipush.models import Manifest
from ocipush.reference import parse_source
from ocipush.sources import load_image, open_source

FIXTURES = Path(__file__).parent.parent / "fixtures"
DIRS = FIXTURES / "dir"
WORKTREE = Path(__file__).resolve().parents[1]


def oci_entry(layout: str) -> str:
    """The digest of the only entry of a fixtures/oci layout's index.json."""
    return json.loads((FIXTURES / "oci" / layout / "index.json").read_text())["manifests"][0]["digest"]


def read_blob(source, desc) -> bytes:
    return FileContent(lambda: source.open_blob(desc), desc.digest, desc.size, source.describe_blob(desc)).read_all()


def check_image(source):
    """Load, verify every blob against its digest and every layer against its config's
    diff_ids (gunzipped when its bytes are gzip). Returns the image."""
    image = load_image(source)
    blobs = {d.digest: read_blob(source, d) for d in image.blobs()}
    for node in image.walk():
        if isinstance(node.parsed, Manifest):
            diff_ids = json.loads(blobs[node.parsed.config.digest])["rootfs"]["diff_ids"]
            for layer, diff_id in zip(node.parsed.layers, diff_ids, strict=True):
                data = blobs[layer.digest]
                data = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
                assert "sha256:" + hashlib.sha256(data).hexdigest() == diff_id
    return image


def copy_of(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(DIRS / name, target)
    return target


def layer_file(directory: Path) -> Path:
    manifest = json.loads((directory / "manifest.json").read_bytes())
    return directory / manifest["layers"][0]["digest"].removeprefix("sha256:")


# -- the fixtures --------------------------------------------------------------------------


def test_skopeo_single_is_the_layout_manifest_byte_for_byte():
    with open_source(f"dir:{DIRS / 'skopeo-single'}") as source:
        image = check_image(source)
        assert source.notes == []
    data = (DIRS / "skopeo-single" / "manifest.json").read_bytes()
    assert str(image.descriptor.digest) == "sha256:" + hashlib.sha256(data).hexdigest() == oci_entry("single")
    assert image.descriptor.media_type == mediatypes.OCI_MANIFEST  # from its shape: umoci wrote no mediaType
    assert image.data == data


def test_skopeo_multi_is_the_index_and_its_instance_manifests():
    with open_source(f"dir:{DIRS / 'skopeo-multi'}") as source:
        image = check_image(source)
        described = [source.describe_blob(c.descriptor) for c in image.children]
    assert str(image.descriptor.digest) == oci_entry("multiarch")
    assert [str(c.descriptor.platform) for c in image.children] == ["linux/amd64", "linux/arm64"]
    assert all(d.endswith(".manifest.json)") for d in described)  # read from <hex>.manifest.json


def test_podman_docker_dir_layers_labelled_gzip_are_pushed_as_what_they_are():
    """podman save --format docker-dir writes plain tars typed ...tar.gzip: corrected, said."""
    raw = json.loads((DIRS / "podman-docker" / "manifest.json").read_bytes())
    assert {layer["mediaType"] for layer in raw["layers"]} == {mediatypes.DOCKER_LAYER}  # the fixture's lie
    with open_source(f"dir:{DIRS / 'podman-docker'}") as source:
        image = check_image(source)
        notes = source.notes
        described = source.describe_blob(image.descriptor)
    manifest_json = DIRS / "podman-docker" / "manifest.json"
    assert described == (f"manifest {image.descriptor.digest} (corrected from manifest "
                         f"sha256:{hashlib.sha256(manifest_json.read_bytes()).hexdigest()} ({manifest_json}))")
    assert {layer.media_type for layer in image.parsed.layers} == {mediatypes.DOCKER_LAYER_TAR}
    assert [str(layer.digest) for layer in image.parsed.layers] == [x["digest"] for x in raw["layers"]]
    assert image.descriptor.media_type == mediatypes.DOCKER_MANIFEST
    assert len(notes) == 1 and "2 layer(s) labelled compressed are plain tar" in notes[0]


def test_a_mislabelled_layer_below_an_index_corrects_the_index_too(tmp_path):
    """An index whose instance manifest lies about a layer: both are rewritten in memory."""
    d = copy_of(tmp_path, "skopeo-multi")
    index = json.loads((d / "manifest.json").read_bytes())
    child_hex = index["manifests"][0]["digest"].removeprefix("sha256:")
    child = json.loads((d / f"{child_hex}.manifest.json").read_bytes())
    layer = child["layers"][0]
    plain = gzip.decompress((d / layer["digest"].removeprefix("sha256:")).read_bytes())
    plain_hex = hashlib.sha256(plain).hexdigest()
    (d / plain_hex).write_bytes(plain)
    layer.update(digest=f"sha256:{plain_hex}", size=len(plain))  # still typed tar+gzip
    child_bytes = json.dumps(child).encode()
    new_hex = hashlib.sha256(child_bytes).hexdigest()
    (d / f"{new_hex}.manifest.json").write_bytes(child_bytes)
    index["manifests"][0].update(digest=f"sha256:{new_hex}", size=len(child_bytes))
    (d / "manifest.json").write_bytes(json.dumps(index).encode())
    with open_source(f"dir:{d}") as source:
        image = check_image(source)
    amd64 = image.children[0].parsed
    assert amd64.layers[0].media_type == mediatypes.OCI_LAYER
    assert image.parsed.manifests[0].digest == image.children[0].descriptor.digest != f"sha256:{new_hex}"


def test_signatures_are_not_pushed_and_a_note_says_so(tmp_path):
    d = copy_of(tmp_path, "skopeo-single")
    (d / "signature-1").write_bytes(b"\x00signed")
    (d / f"{'ab' * 32}.signature-1").write_bytes(b"\x00signed")
    with open_source(f"dir:{d}") as source:
        check_image(source)
        assert source.notes == [
            f"{d}: 2 signature file(s) ({'ab' * 32}.signature-1, signature-1) not pushed: ocipush pushes no signatures"
        ]


def test_version_1_0_layer_files_named_hex_tar(tmp_path):
    d = copy_of(tmp_path, "skopeo-single")
    (d / "version").write_text("Directory Transport Version: 1.0\n")
    layer = layer_file(d)
    layer.rename(layer.with_name(layer.name + ".tar"))
    with open_source(f"dir:{d}") as source:
        check_image(source)


def test_no_version_file_is_read_as_1_0(tmp_path):
    d = copy_of(tmp_path, "skopeo-single")
    (d / "version").unlink()
    with open_source(f"dir:{d}") as source:
        check_image(source)


def test_a_path_with_colons_is_the_whole_rest(tmp_path):
    d = copy_of(tmp_path, "skopeo-single").rename(tmp_path / "img:v1")
    spec = parse_source(f"dir:{d}")
    assert (spec.transport, spec.path, spec.ref) == ("dir", str(d), None)
    with open_source(spec) as source:
        check_image(source)


@pytest.mark.parametrize("text, message", [
    ("dir:", "missing the directory path"),
    ("dir:-", "a directory cannot come on standard input"),
])
def test_dir_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_source(text)


# -- broken directories: one line naming the file, exit 3 --------------------------------


def _error(spec: str) -> SourceError:
    with pytest.raises(SourceError) as caught, open_source(spec) as source:
        load_image(source)
    assert caught.value.exit_code == 3 and "\n" not in str(caught.value)
    return caught.value


def test_missing_blob_names_the_file(tmp_path):
    d = copy_of(tmp_path, "skopeo-single")
    layer = layer_file(d)
    layer.unlink()
    assert str(_error(f"dir:{d}")).endswith(f"({layer}): missing from the directory")


def test_missing_instance_manifest_names_the_file(tmp_path):
    d = copy_of(tmp_path, "skopeo-multi")
    victim = next(d.glob("*.manifest.json"))
    victim.unlink()
    assert f"({d / victim.name.removesuffix('.manifest.json')}): missing from the directory" in str(_error(f"dir:{d}"))


def test_blob_of_the_wrong_size(tmp_path):
    d = copy_of(tmp_path, "skopeo-single")
    layer = layer_file(d)
    layer.write_bytes(layer.read_bytes() + b"x")
    assert str(_error(f"dir:{d}")).startswith(f"blob sha256:{layer.name} ({layer}): ")


def test_a_changed_instance_manifest_is_refused(tmp_path):
    d = copy_of(tmp_path, "skopeo-multi")
    victim = next(d.glob("*.manifest.json"))
    data = victim.read_bytes()
    assert b'"schemaVersion":2' in data
    victim.write_bytes(data.replace(b'"schemaVersion":2', b'"schemaVersion":3'))  # same size
    assert str(victim) in str(_error(f"dir:{d}"))


@pytest.mark.parametrize("text", [
    b"Directory Transport Version: 2.0\n",
    b"",
    b"Directory Transport Version: 1.1\nextra\n",
    b"\x00" * 300,
])
def test_bad_version_file(tmp_path, text):
    d = copy_of(tmp_path, "skopeo-single")
    (d / "version").write_bytes(text)
    message = str(_error(f"dir:{d}"))
    assert message.startswith(f"{d / 'version'}: ")


def test_not_a_dir_image(tmp_path):
    assert "is not a dir: image" in str(_error(f"dir:{tmp_path}"))
    assert "no such directory" in str(_error(f"dir:{tmp_path / 'absent'}"))


@pytest.mark.parametrize("doc, message", [
    (b"[]", "not a JSON object"),
    (b"{", "invalid JSON"),
    (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), "schema 1 manifest"),
    (json.dumps({"schemaVersion": 2, "mediaType": "text/plain"}).encode(), "unsupported manifest media type"),
])
def test_bad_manifest_json(tmp_path, doc, message):
    d = copy_of(tmp_path, "skopeo-single")
    (d / "manifest.json").write_bytes(doc)
    error = str(_error(f"dir:{d}"))
    assert error.startswith(f"{d / 'manifest.json'}: ") and message in error


def test_a_link_out_of_the_directory_is_refused(tmp_path):
    d = copy_of(tmp_path, "skopeo-single")
    layer = layer_file(d)
    outside = tmp_path / "outside"
    layer.rename(outside)
    layer.symlink_to(outside)
    assert "link points outside the layout" in str(_error(f"dir:{d}"))


# -- pushed to the real registry behind nginx, pulled back by skopeo ------------------------


@pytest.mark.integration
@pytest.mark.parametrize("name, same_digest", [
    ("skopeo-single", True),
    ("skopeo-multi", True),
    ("podman-docker", False),  # its plain layers are gzipped on the way
])
def test_push_and_pull_back(proxy, repo, tmp_path, name, same_digest):
    from ocipush.push import push
    from tests.services import skopeo_pull

    with open_source(f"dir:{DIRS / name}") as source:
        image = load_image(source)
        result = push(source, f"{proxy.host}/{repo}:v1")
    assert (result.digest == image.descriptor.digest) is same_digest
    pulled = open_source(f"oci:{skopeo_pull(f'{proxy.host}/{repo}:v1', tmp_path / 'pulled')}:pulled")
    pulled_image = check_image(pulled)  # every blob verified, every layer against its diff_id
    assert all(layer.media_type == mediatypes.OCI_LAYER_GZIP for layer in pulled_image.parsed.layers)


@pytest.mark.integration
def test_cli_push_says_the_signature_note_and_exits_3_on_a_missing_blob(proxy, repo, tmp_path):
    d = copy_of(tmp_path, "skopeo-single")
    (d / "signature-1").write_bytes(b"sig")
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    argv = [sys.executable, "-m", "ocipush", f"dir:{d}", f"{proxy.host}/{repo}:v1"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 signature file(s) (signature-1) not pushed" in done.stderr
    layer_file(d).unlink()
    argv[-1] = f"{proxy.host}/{repo}:v2"
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [f"ocipush: blob sha256:{layer_file(d).name} ({layer_file(d)}): "
                                               "missing from the directory"]
