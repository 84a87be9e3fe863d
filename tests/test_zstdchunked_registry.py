"""zstd:chunked end to end: pushed through the body-limited nginx, read back by the
independent reader from the registry, pulled by skopeo (which verifies every digest) and
by podman with partial pulls enabled; the cache, the as-is and recompress-away rules,
``--format v2s2`` and ``--json``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import httpx
import pytest
import zstandard

from ocipush.cache import BlobCache
from ocipush.cli import main
from ocipush.compression import Compression
from ocipush.digest import Digest
from ocipush.push import PushOptions, push
from tests.helpers import registry_manifest
from tests.imagegen import LayerSpec, make_layout
from tests.services import find_tool, skopeo_pull
from tests.zstdchunked_reader import CURRENT, LEGACY, check_layer

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).parent.parent / "fixtures" / "oci" / "zstd-chunked"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def chunked(tmp_path: Path, fmt: str = "zstd:chunked", **kw) -> PushOptions:
    return PushOptions(compression=Compression(fmt), cache=BlobCache(tmp_path / "cache"), jobs=2, **kw)


def registry_layers(host: str, repo: str, ref: str) -> tuple[dict, list[str]]:
    manifest = registry_manifest(host, repo, ref).json()
    config = httpx.get(f"http://{host}/v2/{repo}/blobs/{manifest['config']['digest']}").json()
    return manifest, config["rootfs"]["diff_ids"]


def blob(host: str, repo: str, digest: str) -> bytes:
    response = httpx.get(f"http://{host}/v2/{repo}/blobs/{digest}", follow_redirects=True)
    response.raise_for_status()
    return response.content


def test_push_through_the_limit_then_read_pull_and_skip(proxy, repo, tmp_path):
    info = make_layout(tmp_path / "img", [LayerSpec(12_000_000, "text", files=4), LayerSpec(3_000_000, files=30)],
                       ref="v1")
    mark = proxy.mark()
    result = push(f"oci:{info.layout}", f"{proxy.host}/{repo}:v1", chunked(tmp_path))
    assert all(r.body_length <= 8_000_000 for r in proxy.requests(mark) if r.method == "PATCH")
    manifest, diff_ids = registry_layers(proxy.host, repo, "v1")
    for layer, diff_id in zip(manifest["layers"], diff_ids, strict=True):
        assert layer["mediaType"] == ZSTD
        assert sorted(layer["annotations"]) == sorted(CURRENT + k for k in
                                                      ("manifest-checksum", "manifest-position", "tarsplit-position"))
        read = check_layer(blob(proxy.host, repo, layer["digest"]), layer["annotations"], diff_id)
        assert read.tarsplit is not None and len(read.fetched) >= 4
    skopeo_pull(f"{proxy.host}/{repo}:v1", tmp_path / "pulled")  # verifies every digest

    again = push(f"oci:{info.layout}", f"{proxy.host}/{repo}:v2", chunked(tmp_path))
    assert [b.action for b in again.blobs if b.source.media_type.endswith("tar+gzip")] == ["skipped", "skipped"]
    assert again.digest == result.digest  # the cache kept the annotations of the skipped layers


def test_json_and_progress_say_the_format(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [LayerSpec(200_000, "text", files=2)], ref="v1")
    code = main(["--json", "--no-cache", "--compression-format", "zstd:chunked",
                 f"oci:{info.layout}:v1", f"{proxy.host}/{repo}:v1"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [b["compression"] for b in out["blobs"] if b["media_type"].endswith("tar+gzip")] == ["zstd:chunked"]


def test_v2s2_refuses_zstd_chunked(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [LayerSpec(1000)], ref="v1")
    code = main(["--compression-format", "zstd:chunked", "--format", "v2s2",
                 f"oci:{info.layout}:v1", f"{proxy.host}/{repo}:v1"])
    assert code == 2
    assert "--format v2s2 cannot carry zstd:chunked layers" in capsys.readouterr().err


def test_a_chunked_layer_is_kept_as_is_and_loses_its_annotations_when_recompressed(proxy, repo, tmp_path):
    info = make_layout(tmp_path / "img", [LayerSpec(300_000, "text", files=3)], ref="v1")
    local = tmp_path / "chunked"  # an oci: destination gets zstd:chunked layers too
    push(f"oci:{info.layout}:v1", f"oci:{local}:v1", chunked(tmp_path))
    index = json.loads((local / "index.json").read_text())
    on_disk = json.loads((local / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layer = on_disk["layers"][0]
    config = json.loads((local / "blobs" / "sha256" / on_disk["config"]["digest"][7:]).read_text())
    check_layer((local / "blobs" / "sha256" / layer["digest"][7:]).read_bytes(), layer["annotations"],
                config["rootfs"]["diff_ids"][0])

    kept = push(f"oci:{local}:v1", f"{proxy.host}/{repo}:kept", chunked(tmp_path))
    assert all(b.pushed == b.source for b in kept.blobs)  # nothing recompressed
    assert registry_layers(proxy.host, repo, "kept")[0]["layers"] == [layer]
    push(f"oci:{local}:v1", f"{proxy.host}/{repo}:zstd", chunked(tmp_path, "zstd"))  # zstd already: kept
    assert registry_layers(proxy.host, repo, "zstd")[0]["layers"] == [layer]
    push(f"oci:{local}:v1", f"{proxy.host}/{repo}:gzip", chunked(tmp_path, "gzip"))
    gz = registry_layers(proxy.host, repo, "gzip")[0]["layers"][0]
    assert gz["mediaType"].endswith("tar+gzip") and "annotations" not in gz


def test_podmans_own_chunked_layer_is_kept_but_not_recompressed(proxy, repo, tmp_path, capsys):
    """podman 4.3's zstd:chunked layers do not decompress to their diff_id (it drops the
    tar's trailing zero blocks, see test_zstdchunked_reader): kept as they are, with
    their old-style annotations; recompressing one is refused like any corrupt layer."""
    source = f"oci:{FIXTURE}:v1"
    push(source, f"{proxy.host}/{repo}:kept", chunked(tmp_path))
    assert LEGACY + "manifest-checksum" in registry_layers(proxy.host, repo, "kept")[0]["layers"][0]["annotations"]
    code = main(["--no-cache", "--compression-format", "gzip", source, f"{proxy.host}/{repo}:gzip"])
    assert code == 3
    assert "but the config's diff_id is" in capsys.readouterr().err


def _podman(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(root / "storage.conf"))
    policy = root / "policy.json"
    argv = [find_tool("podman"), "--root", str(root / "r"), "--runroot", str(root / "rr"),
            "--storage-driver", "overlay", *args]
    if "pull" in args:
        argv += ["--tls-verify=false", "--signature-policy", str(policy)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def podman_root():
    """A private podman store, under a short path (podman refuses a runroot of more than 50
    characters), emptied afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ocp-podman-", dir="/tmp"))
    yield root
    _podman(root, "image", "unmount", "--all")
    _podman(root, "system", "reset", "--force")
    shutil.rmtree(root, ignore_errors=True)


def test_podman_pulls_it_with_partial_pulls_enabled(proxy, repo, tmp_path, podman_root):
    """podman 4.3 (containers/storage 1.43) reads only the old ``io.containers.*`` keys
    and no tar-split: it pulls ocipush's layer whole, as plain zstd, and must get the same
    files. Newer podman fetches the TOC and only the missing files by range."""
    find_tool("podman")
    root = podman_root
    shared = [LayerSpec(2_000_000, "text", files=20)]
    first = make_layout(tmp_path / "a", shared, ref="v1", seed=1)
    push(f"oci:{first.layout}", f"{proxy.host}/{repo}:a", chunked(tmp_path))
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\nrunroot = "{root}/rr"\ngraphroot = "{root}/r"\n[storage.options]\n'
        'pull_options = {enable_partial_images = "true", use_hard_links = "false", ostree_repos = ""}\n'
    )
    (root / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    mark = proxy.mark()
    pulled = _podman(root, "--log-level=debug", "pull", f"{proxy.host}/{repo}:a")
    assert pulled.returncode == 0, pulled.stderr[-3000:]
    assert "Failed to retrieve partial blob: blob type not supported for partial retrieval" in pulled.stderr
    manifest, diff_ids = registry_layers(proxy.host, repo, "a")
    gets = [r for r in proxy.requests(mark) if r.method == "GET" and "/blobs/" in r.path]
    layer_gets = [r for r in gets if manifest["layers"][0]["digest"] in r.path]
    assert layer_gets and all(r.status == 200 for r in layer_gets)  # the whole blob: no ranges in 4.3
    inspect = _podman(root, "image", "inspect", f"{proxy.host}/{repo}:a")
    assert json.loads(inspect.stdout)[0]["RootFS"]["Layers"] == diff_ids
    mounted = _podman(root, "image", "mount", f"{proxy.host}/{repo}:a")
    assert mounted.returncode == 0, mounted.stderr
    assert_same_files(Path(mounted.stdout.strip()), blob(proxy.host, repo, manifest["layers"][0]["digest"]))


def assert_same_files(rootfs: Path, layer: bytes) -> None:
    """Every regular file of the layer is in ``rootfs`` with the same bytes."""
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(layer), read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        files = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isreg()]  # type: ignore[union-attr]
    assert files
    for name, data in files:
        assert (rootfs / name).read_bytes() == data, name


def oci_layout_of(path: Path, tar: bytes) -> str:
    """An OCI layout of one image whose one layer is ``tar``, uncompressed."""
    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "blobs" / "sha256" / digest).write_bytes(data)
        return "sha256:" + digest

    layer = put(tar)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}})
    config_digest = put(config.encode())
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": len(tar)}],
    }).encode()
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))
    return f"oci:{path}:v1"


def files_tar(contents: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        # Every directory has its entry, as in real images: podman 4.3 copies a file it
        # already holds into a directory that only an entry creates ("copy content to
        # data/f01: no such file or directory" about one pull in seven without it).
        for parent in sorted({str(Path(name).parent) for name in contents} - {"."}):
            info = tarfile.TarInfo(parent)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tf.addfile(info)
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def with_legacy_keys(layout: Path) -> None:
    """Copy the layer annotations to podman 4.3's older key names, in place."""
    index = json.loads((layout / "index.json").read_text())
    old = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    manifest = json.loads(old.read_text())
    for layer in manifest["layers"]:
        a = layer["annotations"]
        for key in ("manifest-checksum", "manifest-position"):
            a[LEGACY + key] = a[CURRENT + key]
    data = json.dumps(manifest).encode()
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    index["manifests"][0].update(digest="sha256:" + digest, size=len(data))
    (layout / "index.json").write_text(json.dumps(index))


def test_podman_pulls_only_the_changed_files(registry, proxy, repo, tmp_path, podman_root):
    """podman 4.3's containers/storage reads ocipush's TOC and frames: given the older key
    names as well (test-side: ocipush writes the current ones only), it pulls the layer
    partially, and for a second image sharing all files but one it fetches by range about
    that one file's worth of bytes, not the layer."""
    find_tool("podman")
    root = podman_root
    files = {f"data/f{n:02}": os.urandom(200_000) for n in range(20)}
    second = dict(files, **{"data/f07": os.urandom(200_000)})
    pushed = {}
    for name, contents in (("a", files), ("b", second)):
        local = tmp_path / f"{name}-chunked"
        push(oci_layout_of(tmp_path / name, files_tar(contents)), f"oci:{local}:v1", chunked(tmp_path))
        with_legacy_keys(local)
        push(f"oci:{local}:v1", f"{proxy.host}/{repo}:{name}", chunked(tmp_path))
        manifest, _ = registry_layers(proxy.host, repo, name)
        pushed[name] = manifest["layers"][0]
    (root / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\nrunroot = "{root}/rr"\ngraphroot = "{root}/r"\n[storage.options]\n'
        'pull_options = {enable_partial_images = "true", use_hard_links = "false", ostree_repos = ""}\n'
    )
    (root / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    for name in ("a", "b"):
        mark = registry.log_path.stat().st_size
        pulled = _podman(root, "--log-level=debug", "pull", f"{proxy.host}/{repo}:{name}")
        assert pulled.returncode == 0, pulled.stderr[-3000:]
        assert f"Retrieved partial blob {pushed[name]['digest']}" in pulled.stderr
        with open(registry.log_path, "rb") as log:
            log.seek(mark)
            lines = [line.decode() for line in log if pushed[name]["digest"].encode() in line]
        statuses = re.findall(r'method=GET .*?http.response.status=(\d+) http.response.written=(\d+)', "\n".join(lines))
        assert statuses and all(status == "206" for status, _ in statuses)
        fetched = sum(int(n) for _, n in statuses)
        if name == "b":  # one file of twenty, plus the TOC and multipart framing
            assert fetched < pushed[name]["size"] // 5, (fetched, pushed[name]["size"])
        mounted = _podman(root, "image", "mount", f"{proxy.host}/{repo}:{name}")
        assert mounted.returncode == 0, mounted.stderr
        assert_same_files(Path(mounted.stdout.strip()), blob(proxy.host, repo, pushed[name]["digest"]))


def test_a_docker_archive_becomes_zstd_chunked_in_a_local_layout(tmp_path):
    """Uncompressed docker-save layers (skopeo's archive fixture) → an oci: layout."""
    archive = Path(__file__).parent.parent / "fixtures" / "archives" / "skopeo-docker.tar"
    local = tmp_path / "out"
    result = push(f"docker-archive:{archive}", f"oci:{local}:v1", chunked(tmp_path))
    index = json.loads((local / "index.json").read_text())
    manifest = json.loads((local / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((local / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert layer["mediaType"] == ZSTD
        check_layer((local / "blobs" / "sha256" / layer["digest"][7:]).read_bytes(), layer["annotations"], diff_id)
    assert result.digest == Digest.parse(index["manifests"][0]["digest"])


def test_a_layer_the_format_cannot_describe_is_pushed_as_plain_zstd_with_a_note(proxy, repo, tmp_path, capsys):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for data in (b"first", b"second"):  # the same path twice: tar-split refuses that
            info = tarfile.TarInfo("etc/motd")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    source = oci_layout_of(tmp_path / "dup", out.getvalue())
    code = main(["--json", "--no-cache", "--compression-format", "zstd:chunked", source, f"{proxy.host}/{repo}:v1"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert any("written as plain zstd, not zstd:chunked: the tar holds 'etc/motd' twice" in n
               for n in summary["notes"])
    layer = registry_layers(proxy.host, repo, "v1")[0]["layers"][0]
    assert layer["mediaType"] == ZSTD and "annotations" not in layer
    assert [b["compression"] for b in summary["blobs"] if b["media_type"].endswith(".tar")] == ["zstd"]
    skopeo_pull(f"{proxy.host}/{repo}:v1", tmp_path / "pulled")
