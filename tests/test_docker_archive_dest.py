"""docker-archive:PATH[:REPO:TAG] as a destination, loaded back by podman load and read by
skopeo; docker load too, where a docker daemon answers (the one test that may skip)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.cli import main
from ocipush.compression import Compression
from ocipush.destinations import prepare_docker_archive
from ocipush.digest import Digest
from ocipush.errors import UsageError
from ocipush.mediatypes import OCI_MANIFEST
from ocipush.models import Descriptor, Manifest
from ocipush.push import push
from ocipush.reference import LayoutReference, parse_destination
from tests.imagegen import flip_byte, make_layout
from tests.services import find_tool, skopeo_copy, skopeo_inspect

FIXTURES = Path(__file__).parent.parent / "fixtures" / "oci"
ARCHIVES = Path(__file__).parent.parent / "fixtures" / "archives"
SINGLE = f"oci:{FIXTURES / 'single'}:v1"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}  # type: ignore[union-attr]


def config_of(source_layout: Path, ref: str) -> dict:
    index = json.loads((source_layout / "index.json").read_text())
    [entry] = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == ref]
    manifest = json.loads((source_layout / "blobs" / "sha256" / entry["digest"][7:]).read_bytes())
    return json.loads((source_layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_bytes())


class Podman:
    """podman with a store of the test's own (vfs: no overlay mounts needed), never the system's."""

    def __init__(self, root: Path, runroot: Path):
        self.argv = [find_tool("podman"), "--root", str(root), "--runroot", str(runroot), "--storage-driver", "vfs"]

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=300)

    def load(self, archive: Path) -> str:
        loaded = self("load", "-i", str(archive))
        assert loaded.returncode == 0, loaded.stderr
        return loaded.stdout

    def inspect(self, name: str) -> dict:
        shown = self("image", "inspect", name)
        assert shown.returncode == 0, shown.stderr
        return json.loads(shown.stdout)[0]


@pytest.fixture
def podman(tmp_path):
    runroot = Path(tempfile.mkdtemp(prefix="ocipush-rr-"))  # podman takes a runroot of 50 characters at most
    try:
        yield Podman(tmp_path / "podman", runroot)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def test_podman_loads_it_with_the_tag(tmp_path, podman):
    archive = tmp_path / "app.tar"
    assert main([SINGLE, f"docker-archive:{archive}:localhost/app:v1", "-q"]) == 0
    config = config_of(FIXTURES / "single", "v1")
    config_digest = "sha256:" + hashlib.sha256(_config_bytes(archive)).hexdigest()
    assert "Loaded image: localhost/app:v1" in podman.load(archive)
    image = podman.inspect("localhost/app:v1")
    assert image["RepoTags"] == ["localhost/app:v1"]
    assert "sha256:" + image["Id"] == config_digest  # the image ID is the config's digest: config unchanged
    assert image["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert listed.stdout.split() == ["localhost/app:v1"]


def _config_bytes(archive: Path) -> bytes:
    files = members(archive)
    return files[json.loads(files["manifest.json"])[0]["Config"]]


def test_the_documents_are_as_docker_writes_them(tmp_path):
    archive = tmp_path / "app.tar"
    result = push(SINGLE, f"docker-archive:{archive}:app:v1")
    files = members(archive)
    [entry] = json.loads(files["manifest.json"])
    assert list(entry) == ["Config", "RepoTags", "Layers"]  # moby's manifestItem order
    assert entry["RepoTags"] == ["app:v1"]  # familiar, as docker save writes it
    assert json.loads(files["repositories"]) == {"app": {"v1": entry["Layers"][-1].rsplit("/", 1)[1]}}
    config = json.loads(files[entry["Config"]])
    assert config == config_of(FIXTURES / "single", "v1")
    for name, diff_id in zip(entry["Layers"], config["rootfs"]["diff_ids"], strict=True):
        data = files[name]
        assert name == "blobs/sha256/" + hashlib.sha256(data).hexdigest()
        assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == diff_id
    assert sorted(files) == sorted(["manifest.json", "repositories", entry["Config"], *entry["Layers"]])
    assert isinstance(result.reference, LayoutReference) and result.reference.transport == "docker-archive"
    assert str(result.reference).startswith(f"docker-archive:{archive}:app:v1@sha256:")


def test_skopeo_reads_it_back(tmp_path):
    archive = tmp_path / "app.tar"
    push(SINGLE, f"docker-archive:{archive}:registry.example.com/team/app:1.0")
    config = config_of(FIXTURES / "single", "v1")
    inspected = skopeo_inspect(f"docker-archive:{archive}")
    assert inspected["Layers"] == config["rootfs"]["diff_ids"]
    assert inspected["Architecture"] == "amd64"
    copied = skopeo_copy(f"docker-archive:{archive}", f"oci:{tmp_path / 'copy'}:x")  # verifies every digest
    assert copied.returncode == 0, copied.stderr
    assert json.loads(members(archive)["manifest.json"])[0]["RepoTags"] == ["registry.example.com/team/app:1.0"]


def test_zstd_layers_become_gzip_for_old_dockers(tmp_path, capsys, podman):
    archive = tmp_path / "z.tar"
    assert main([f"oci:{FIXTURES / 'zstd'}:v1", f"docker-archive:{archive}:z:v1"]) == 0
    assert "docker-archive: zstd layers are recompressed to gzip, since docker before 23.0 cannot load zstd" \
        in capsys.readouterr().err
    files = members(archive)
    entry = json.loads(files["manifest.json"])[0]
    assert all(files[name][:2] == b"\x1f\x8b" for name in entry["Layers"])
    image = podman.inspect(podman.load(archive).split("Loaded image: ")[1].split()[0])
    assert image["RootFS"]["Layers"] == config_of(FIXTURES / "zstd", "v1")["rootfs"]["diff_ids"]


def test_zstd_kept_when_asked_with_a_warning(tmp_path, capsys):
    archive = tmp_path / "z.tar"
    assert main([f"oci:{FIXTURES / 'zstd'}:v1", f"docker-archive:{archive}:z:v1",
                 "--compression-format", "zstd"]) == 0
    assert "docker before 23.0 cannot load them" in capsys.readouterr().err
    files = members(archive)
    assert all(files[name][:4] == ZSTD_MAGIC for name in json.loads(files["manifest.json"])[0]["Layers"])
    assert skopeo_inspect(f"docker-archive:{archive}")["Layers"] == config_of(FIXTURES / "zstd", "v1")["rootfs"][
        "diff_ids"]


def test_docker_save_archive_round_trip(tmp_path, podman):
    """Uncompressed docker save layers are gzip-compressed on the way, diff_ids checked."""
    archive = tmp_path / "legacy.tar"
    push(f"docker-archive:{ARCHIVES / 'docker-legacy.tar'}:legacy:v1", f"docker-archive:{archive}:legacy:v2")
    assert "legacy:v2" in podman.load(archive)
    assert skopeo_inspect(f"docker-archive:{archive}")["Layers"] == \
        skopeo_inspect(f"docker-archive:{ARCHIVES / 'docker-legacy.tar'}:legacy:v1")["Layers"]


def test_untagged_archive_has_no_repo_tags(tmp_path, podman):
    archive = tmp_path / "untagged.tar"
    push(SINGLE, f"docker-archive:{archive}")
    files = members(archive)
    assert json.loads(files["manifest.json"])[0]["RepoTags"] is None  # as docker writes it
    assert "repositories" not in files
    assert "Loaded image" in podman.load(archive)


def test_an_index_is_refused_and_platform_chooses(tmp_path, capsys):
    archive = tmp_path / "multi.tar"
    assert main([f"oci:{FIXTURES / 'multiarch'}:multi", f"docker-archive:{archive}:m:v1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "ocipush: docker-archive: holds one image, and the source is an index of 2 manifests "
        "(linux/amd64, linux/arm64); choose one with --platform OS/ARCH")
    assert list(tmp_path.iterdir()) == []
    assert main([f"oci:{FIXTURES / 'multiarch'}:multi", f"docker-archive:{archive}:m:v1",
                 "--platform", "linux/arm64", "-q"]) == 0
    assert skopeo_inspect(f"docker-archive:{archive}")["Architecture"] == "arm64"


def test_a_bad_source_leaves_no_archive_and_no_temporary_file(tmp_path):
    bad = make_layout(tmp_path / "bad", [2000])
    flip_byte(bad.layers[0])
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.tar").write_bytes(b"the old archive")
    assert main([f"oci:{bad.layout}", f"docker-archive:{out / 'old.tar'}:x:y"]) == 3
    assert [p.name for p in out.iterdir()] == ["old.tar"]  # no .tmp-, no working directory
    assert (out / "old.tar").read_bytes() == b"the old archive"


def test_an_archive_is_replaced_whole(tmp_path):
    archive = tmp_path / "a.tar"
    push(SINGLE, f"docker-archive:{archive}:a:v1")
    push(f"oci:{FIXTURES / 'zstd'}:v1", f"docker-archive:{archive}:b:v2")
    assert json.loads(members(archive)["manifest.json"])[0]["RepoTags"] == ["b:v2"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_archive_honours_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        push(SINGLE, f"docker-archive:{tmp_path / 'a.tar'}:a:v1")
    finally:
        os.umask(old)
    assert (tmp_path / "a.tar").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("text, tag", [
    ("docker-archive:a.tar", None),
    ("docker-archive:a.tar:busybox", "busybox:latest"),
    ("docker-archive:a.tar:docker.io/library/busybox:1", "busybox:1"),
    ("docker-archive:a.tar:docker.io/team/app:1", "team/app:1"),
    ("docker-archive:a.tar:localhost:5000/x/y:v1", "localhost:5000/x/y:v1"),
])
def test_destination_names(text, tag):
    assert parse_destination(text) == LayoutReference("docker-archive", "a.tar", tag)


@pytest.mark.parametrize("text, message", [
    ("docker-archive:a.tar:app@sha256:" + "a" * 64, "a docker archive names REPO:TAG, not a digest"),
    ("docker-archive:a.tar:App:v1", "invalid repository name"),
    ("docker-archive::app:v1", "missing the path"),
])
def test_bad_destination_names(text, message):
    with pytest.raises(UsageError, match=message):
        parse_destination(text)


@given(st.text(max_size=60))
def test_any_destination_name_is_parsed_or_a_usage_error(text):
    try:
        ref = parse_destination(f"docker-archive:a.tar:{text}")
    except UsageError as e:
        assert str(e).isprintable(), str(e)
        return
    assert ref.tag is None or (ref.tag.isprintable() and ":" in ref.tag and ref.tag.rpartition(":")[0])


def test_an_artifact_is_refused():
    manifest = Manifest(OCI_MANIFEST, Descriptor("application/vnd.example.thing", Digest.of(b"{}"), 2), [])
    with pytest.raises(UsageError, match=r"^docker-archive: the source is not a container image \(config "
                       "'application/vnd.example.thing'\\); docker load takes images only$"):
        prepare_docker_archive(manifest, Compression())


def test_dry_run_writes_nothing(tmp_path, capsys):
    assert main([SINGLE, f"docker-archive:{tmp_path / 'a.tar'}:a:v1", "--dry-run"]) == 0
    assert list(tmp_path.iterdir()) == []


def _docker_reachable() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _docker_reachable(), reason="needs a docker daemon (`docker info` fails here); "
                    "podman load and skopeo check the same archive in the other tests")
def test_docker_loads_it(tmp_path):
    archive = tmp_path / "app.tar"
    name = f"ocipush-test/app:{os.getpid()}"
    push(f"oci:{FIXTURES / 'zstd'}:v1", f"docker-archive:{archive}:{name}")
    try:
        loaded = subprocess.run(["docker", "load", "-i", str(archive)], capture_output=True, text=True, timeout=300)
        assert loaded.returncode == 0, loaded.stderr
        assert f"Loaded image: {name}" in loaded.stdout
        shown = subprocess.run(["docker", "image", "inspect", name], capture_output=True, text=True, timeout=60)
        assert json.loads(shown.stdout)[0]["RootFS"]["Layers"] == config_of(FIXTURES / "zstd", "v1")["rootfs"][
            "diff_ids"]
    finally:
        subprocess.run(["docker", "rmi", name], capture_output=True, timeout=60)
