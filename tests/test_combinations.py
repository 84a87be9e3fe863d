"""Today's features together, end to end: a docker:// source with --platform into a
docker-archive: destination, with zstd:chunked through the body-limited nginx, with resume;
dir: and stdin sources with --format v2s2, --platform, zstd and --json; --dry-run with each
new source and destination.  Real CNCF registries (behind nginx where a body limit matters),
skopeo and podman read every result back; each feature has its own tests elsewhere, these
are the seams between them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ocipush.cli import main
from tests.faultproxy import FaultProxy
from tests.helpers import registry_manifest
from tests.imagegen import LayerSpec, make_index_layout, make_layout
from tests.services import skopeo_copy, skopeo_inspect, skopeo_pull
from tests.zstdchunked_reader import CURRENT, check_layer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MULTIARCH = f"oci:{FIXTURES / 'oci' / 'multiarch'}:multi"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
CHUNKED_KEYS = sorted(CURRENT + k for k in ("manifest-checksum", "manifest-position", "tarsplit-position"))
CHUNK = 2_000_000
LAYER_CHUNK = 64 * 1024  # a PATCH larger than this is a chunk of a layer, never a config
V2S2 = "application/vnd.docker.distribution.manifest.v2+json"


def seed(src: str, ref: str) -> None:
    """Put ``src`` (a skopeo reference) on a registry as ``ref`` (HOST/REPO:TAG), digests kept."""
    result = skopeo_copy(src, f"docker://{ref}", "--all", "--preserve-digests")
    assert result.returncode == 0, result.stderr


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def blob(host: str, repo: str, digest: str) -> bytes:
    response = httpx.get(f"http://{host}/v2/{repo}/blobs/{digest}", follow_redirects=True)
    response.raise_for_status()
    return response.content


def chunked_layers_check(host: str, repo: str, ref: str) -> list[dict]:
    """Every layer of HOST/REPO:REF is zstd:chunked and the independent reader agrees with its
    annotations (TOC, tar-split, footer, every file's range) and its diff_id."""
    manifest = registry_manifest(host, repo, ref).json()
    config = json.loads(blob(host, repo, manifest["config"]["digest"]))
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert layer["mediaType"] == ZSTD
        assert sorted(layer.get("annotations", {})) == CHUNKED_KEYS, layer
        check_layer(blob(host, repo, layer["digest"]), layer["annotations"], diff_id)
    return manifest["layers"]


def run(args: list[str], **kw) -> subprocess.CompletedProcess[str]:
    """``python -m ocipush ARGS`` in a child (exit codes and stderr as a user sees them)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ocipush", *args], capture_output=True, text=True, env=env,
                          timeout=300, **kw)


@pytest.fixture
def podman(tmp_path):
    import shutil
    import tempfile

    from tests.services import find_tool

    runroot = Path(tempfile.mkdtemp(prefix="ocipush-rr-"))  # podman takes a runroot of 50 characters at most
    argv = [find_tool("podman"), "--root", str(tmp_path / "podman"), "--runroot", str(runroot),
            "--storage-driver", "vfs"]
    try:
        yield lambda *args: subprocess.run([*argv, *args], capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


# 1. docker:// + --platform → docker-archive:, podman loads it -------------------------------------


def test_docker_source_one_platform_into_a_docker_archive_podman_loads(make_registry, repo, tmp_path, podman,
                                                                       user_config):
    source = make_registry()
    seed(MULTIARCH, f"{source.host}/{repo}:multi")
    archive = tmp_path / "arm.tar"
    assert main([f"docker://{source.host}/{repo}:multi", f"docker-archive:{archive}:localhost/app:arm",
                 "--platform", "linux/arm64", "--src-tls-verify=false", "-q"]) == 0
    loaded = podman("load", "-i", str(archive))
    assert loaded.returncode == 0 and "Loaded image: localhost/app:arm" in loaded.stdout, loaded.stderr
    shown = podman("image", "inspect", "localhost/app:arm")
    assert shown.returncode == 0, shown.stderr
    [image] = json.loads(shown.stdout)
    assert (image["Os"], image["Architecture"]) == ("linux", "arm64")


# 2. docker:// → zstd:chunked through the 8 MB nginx -----------------------------------------------


def test_docker_source_to_zstd_chunked_through_the_body_limit(make_registry, proxy, repo, tmp_path, user_config):
    image = make_layout(tmp_path / "img", [LayerSpec(9 << 20, files=3), LayerSpec(100_000, "text", files=5)],
                        ref="v1")
    source = make_registry()
    seed(f"oci:{image.layout}:v1", f"{source.host}/{repo}:v1")
    mark = proxy.mark()
    assert main([f"docker://{source.host}/{repo}:v1", f"{proxy.host}/{repo}:chunked",
                 "--compression-format", "zstd:chunked", "--no-cache", "-q"]) == 0
    patches = [r for r in proxy.requests(mark) if r.method == "PATCH"]
    assert len(patches) >= 2 and all(r.status == 202 and (r.body_length or 0) <= 8 << 20 for r in patches)
    chunked_layers_check(proxy.host, repo, "chunked")
    skopeo_pull(f"{proxy.host}/{repo}:chunked", tmp_path / "pulled")  # verifies every digest


# 3. dir: → --format v2s2 to the registry; dir: → oci-archive: ------------------------------------


@pytest.mark.parametrize("name", ["skopeo-single", "podman-docker"])
def test_dir_source_as_v2s2_to_the_registry(proxy, repo, tmp_path, name):
    dst = f"{proxy.host}/{repo}:v2s2"
    assert main([f"dir:{FIXTURES / 'dir' / name}", dst, "--format", "v2s2", "-q"]) == 0
    manifest = skopeo_inspect(f"docker://{dst}", raw=True)
    assert manifest["mediaType"] == V2S2
    assert all(layer["mediaType"].startswith("application/vnd.docker.image.rootfs.") for layer in manifest["layers"])
    skopeo_pull(dst, tmp_path / "pulled")


def test_dir_source_into_an_oci_archive_skopeo_inspects(tmp_path):
    archive = tmp_path / "out.tar"
    assert main([f"dir:{FIXTURES / 'dir' / 'skopeo-multi'}", f"oci-archive:{archive}:v1", "--platform",
                 "linux/arm64", "-q"]) == 0
    assert skopeo_inspect(f"oci-archive:{archive}:v1")["Architecture"] == "arm64"
    pulled = skopeo_copy(f"oci-archive:{archive}:v1", f"oci:{tmp_path / 'copy'}:v1")  # verifies every digest
    assert pulled.returncode == 0, pulled.stderr


# 4. stdin → --platform / zstd → registry, --json ----------------------------------------------------


@pytest.mark.parametrize("archive, spec", [("skopeo-oci.tar", "oci-archive:-"),
                                           ("skopeo-docker.tar", "docker-archive:-")])
def test_stdin_archive_with_platform_and_zstd_json(proxy, repo, tmp_path, archive, spec):
    config = skopeo_inspect(f"{spec[:-1]}{FIXTURES / 'archives' / archive}")
    platform = f"{config['Os']}/{config['Architecture']}"
    with open(FIXTURES / "archives" / archive, "rb") as stdin:
        done = run([spec, f"{proxy.host}/{repo}:v1", "--platform", platform, "--compression-format", "zstd",
                    "--json", "--no-cache"], stdin=stdin)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    layers = [b for b in out["blobs"] if "layer" in b["media_type"] or "rootfs" in b["media_type"]]
    assert layers
    for entry in layers:
        assert entry["pushed_media_type"] == ZSTD, entry
        assert entry["compression"] == "zstd", entry
        assert entry["resumed_at"] is None, entry
    manifest = skopeo_inspect(f"docker://{proxy.host}/{repo}:v1", raw=True)
    assert [layer["mediaType"] for layer in manifest["layers"]] == [ZSTD] * len(manifest["layers"])
    skopeo_pull(f"{proxy.host}/{repo}:v1", tmp_path / "pulled")

    with open(FIXTURES / "archives" / archive, "rb") as stdin:
        wrong = run([spec, f"{proxy.host}/{repo}:other", "--platform", "windows/s390x"], stdin=stdin)
    errors = [line for line in wrong.stderr.splitlines() if line.startswith("ocipush:")]
    assert wrong.returncode == 2 and errors == wrong.stderr.splitlines()[-1:], wrong.stderr
    assert "--platform windows/s390x" in errors[0]
    assert registry_manifest(proxy.host, repo, "other").status_code == 404


# 5 and 6. resume after exhausted retries: docker:// source; zstd:chunked -----------------------------


def records(path: Path) -> list[Path]:
    return sorted(path.glob("*.json")) if path.exists() else []


def fail_then_resume(args: list[str], front: FaultProxy, nginx, records_dir: Path,
                     between=lambda: None) -> tuple[str, int]:
    """Run with the 4th+ layer chunk answered 503 by the front (retries exhausted: exit 4 and
    a kept upload), then again without faults: (the second run's stderr, its PATCH bytes)."""
    front.respond(503, {"Retry-After": "0"}, method="PATCH", nth=5, times=None)
    failed = run([*args, "--retry", "1"])
    assert failed.returncode == 4, failed.stderr
    assert failed.stderr.splitlines()[-1].endswith("run the same command again to resume"), failed.stderr
    assert "Traceback" not in failed.stderr
    assert len(records(records_dir)) == 1
    front.clear()
    between()
    mark = nginx.mark()
    done = run([*args, "--retry", "1"])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    said = done.stdout if "--json" in args else done.stderr  # --json: the notes are in the document
    assert "resuming the upload an earlier run left, at" in said, done
    assert records(records_dir) == []
    if "--json" in args:
        resumed = [b for b in json.loads(done.stdout)["blobs"] if b["resumed_at"] is not None]
        assert [b["resumed_at"] for b in resumed] == [3 * CHUNK], done.stdout
    sent = sum(r.body_length or 0 for r in nginx.requests(mark) if r.method == "PATCH")
    return done.stderr, sent


def test_docker_source_resumes_the_upload_and_reads_the_source_again_whole(make_registry, nginx, front, repo, tmp_path,
                                                                      cache_home):
    image = make_layout(tmp_path / "img", [LayerSpec(12_000_000)], ref="v1")
    source_registry = make_registry()
    seed(f"oci:{image.layout}:v1", f"{source_registry.host}/{repo}:v1")
    [layer] = image.layers
    with FaultProxy(source_registry.host) as source:
        args = [f"docker://{source.host}/{repo}:v1", f"{front.host}/{repo}:v1", "--chunk-size", str(CHUNK),
                "--jobs", "1", "--retry-delay", "10ms", "--src-tls-verify=false", "--json"]
        marks: list[int] = []
        _, sent = fail_then_resume(args, front, nginx, cache_home, lambda: marks.append(len(source.requests())))
        missing = layer.size - 3 * CHUNK
        second = [e for e in source.requests()[marks[0]:] if e.method == "GET" and str(layer.digest) in e.path]
    # The destination gets only the missing part; the source is read again whole (one GET, no
    # Range): the bytes before the offset are hashed, so the blob is verified before its commit.
    assert missing <= sent <= missing + CHUNK + image.config.size, (sent, missing)
    assert [(e.range, e.status) for e in second] == [(None, 200)], [(e.range, e.status, e.body_bytes) for e in second]
    skopeo_pull(f"{nginx.host}/{repo}:v1", tmp_path / "pulled")


def test_zstd_chunked_resumes_with_the_right_digest_and_annotations(nginx, front, repo, tmp_path, cache_home):
    image = make_layout(tmp_path / "img", [LayerSpec(12_000_000, files=4)], ref="v1")
    args = [f"oci:{image.layout}:v1", f"{front.host}/{repo}:v1", "--chunk-size", str(CHUNK), "--jobs", "1",
            "--retry-delay", "10ms", "--compression-format", "zstd:chunked", "--json"]
    _, sent = fail_then_resume(args, front, nginx, cache_home)
    [layer] = chunked_layers_check(nginx.host, repo, "v1")
    assert sent <= layer["size"] - 3 * CHUNK + CHUNK + 10_000, (sent, layer["size"])
    skopeo_pull(f"{nginx.host}/{repo}:v1", tmp_path / "pulled")
    # The same push again: from the cache the resumed run filled (the layer skipped, its
    # annotations from the cache entry), and afresh without the cache: the same layer.
    for tag, extra in (("cached", []), ("fresh", ["--no-cache"])):
        again = run([f"oci:{image.layout}:v1", f"{nginx.host}/{repo}:{tag}", "--compression-format", "zstd:chunked",
                     "--json", *extra])
        assert again.returncode == 0, again.stderr
        [entry] = [b for b in json.loads(again.stdout)["blobs"] if b["media_type"].endswith("tar+gzip")]
        assert entry["action"] == ("skipped" if tag == "cached" else "uploaded"), entry
        assert registry_manifest(nginx.host, repo, tag).json()["layers"] == [layer]


# 7. --dry-run with each new source and destination ------------------------------------------------


def test_dry_run_with_a_docker_source_pushes_nothing(make_registry, registry, repo, capsys, user_config):
    source = make_registry()
    seed(MULTIARCH, f"{source.host}/{repo}:multi")
    assert main([f"docker://{source.host}/{repo}:multi", f"{registry.host}/{repo}:v1", "--platform", "linux/arm64",
                 "--dry-run", "--src-tls-verify=false"]) == 0
    assert registry_manifest(registry.host, repo, "v1").status_code == 404


def test_dry_run_with_a_dir_source_pushes_nothing(registry, repo):
    assert main([f"dir:{FIXTURES / 'dir' / 'skopeo-multi'}", f"{registry.host}/{repo}:v1", "--dry-run",
                 "--format", "v2s2"]) == 0
    assert registry_manifest(registry.host, repo, "v1").status_code == 404


def test_dry_run_from_stdin_pushes_nothing(registry, repo):
    with open(FIXTURES / "archives" / "skopeo-docker.tar", "rb") as stdin:
        done = run(["docker-archive:-", f"{registry.host}/{repo}:v1", "--dry-run", "--compression-format",
                    "zstd:chunked"], stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert registry_manifest(registry.host, repo, "v1").status_code == 404


@pytest.mark.parametrize("source", ["dir", "docker"])
def test_dry_run_into_a_docker_archive_writes_nothing(make_registry, repo, tmp_path, source, user_config):
    if source == "docker":
        src_registry = make_registry()
        seed(MULTIARCH, f"{src_registry.host}/{repo}:multi")
        spec = f"docker://{src_registry.host}/{repo}:multi"
    else:
        spec = f"dir:{FIXTURES / 'dir' / 'skopeo-multi'}"
    out = tmp_path / "out"
    out.mkdir()
    assert main([spec, f"docker-archive:{out / 'a.tar'}:app:v1", "--platform", "linux/amd64", "--dry-run"]) == 0
    assert list(out.iterdir()) == []


# 8. --platform with a zstd:chunked index; --format v2s2 refuses zstd:chunked ----------------------


@pytest.fixture
def chunked_index(tmp_path) -> Path:
    """An OCI layout holding an index of two platforms whose layers are zstd:chunked."""
    plain = make_index_layout(tmp_path / "plain", [LayerSpec(200_000, "text", files=3)])
    layout = tmp_path / "chunked"
    assert main([f"oci:{plain.layout}:multi", f"oci:{layout}:multi", "--compression-format", "zstd:chunked",
                 "--no-cache", "-q"]) == 0
    return layout


def test_platform_from_a_zstd_chunked_index_keeps_the_layers_as_they_are(proxy, repo, chunked_index, tmp_path):
    dst = f"{proxy.host}/{repo}:arm"
    assert main([f"oci:{chunked_index}:multi", dst, "--platform", "linux/arm64", "-q"]) == 0
    manifest = registry_manifest(proxy.host, repo, "arm").json()
    config = json.loads(blob(proxy.host, repo, manifest["config"]["digest"]))
    assert config["architecture"] == "arm64"
    chunked_layers_check(proxy.host, repo, "arm")
    skopeo_pull(dst, tmp_path / "pulled")


@pytest.mark.parametrize("dry_run", [False, True], ids=["push", "dry-run"])
def test_v2s2_refuses_a_zstd_chunked_source_before_any_upload(proxy, repo, chunked_index, capsys, dry_run):
    mark = proxy.mark()
    code = main([f"oci:{chunked_index}:multi", f"{proxy.host}/{repo}:v1", "--platform", "linux/arm64",
                 "--format", "v2s2", *(["--dry-run"] if dry_run else [])])
    error = one_line_error(capsys)
    assert code == 2, error
    assert error.startswith("ocipush: manifest sha256:") and "zstd" in error and "--format v2s2" in error, error
    assert [r.method for r in proxy.requests(mark) if r.method in ("POST", "PATCH", "PUT")] == []
    assert registry_manifest(proxy.host, repo, "v1").status_code == 404


def test_v2s2_of_a_zstd_chunked_source_recompressed_to_gzip(proxy, repo, chunked_index, tmp_path):
    dst = f"{proxy.host}/{repo}:v1"
    assert main([f"oci:{chunked_index}:multi", dst, "--platform", "linux/arm64", "--format", "v2s2",
                 "--compression-format", "gzip", "--no-cache", "-q"]) == 0
    manifest = skopeo_inspect(f"docker://{dst}", raw=True)
    assert manifest["mediaType"] == V2S2
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.docker.image.rootfs.diff.tar.gzip"]
    assert "annotations" not in manifest["layers"][0]
    skopeo_pull(dst, tmp_path / "pulled")


def test_docker_source_of_a_zstd_chunked_index_one_platform_kept_with_its_annotations(make_registry, proxy, repo,
                                                                                     chunked_index, tmp_path,
                                                                                     user_config):
    source = make_registry()
    seed(f"oci:{chunked_index}:multi", f"{source.host}/{repo}:multi")
    dst = f"{proxy.host}/{repo}:arm"
    assert main([f"docker://{source.host}/{repo}:multi", dst, "--platform", "linux/arm64", "-q"]) == 0
    [layer] = chunked_layers_check(proxy.host, repo, "arm")
    [original] = [m for m in skopeo_inspect(f"oci:{chunked_index}:multi", raw=True)["manifests"]
                  if m["platform"]["architecture"] == "arm64"]
    assert registry_manifest(proxy.host, repo, "arm").headers["Docker-Content-Digest"] == original["digest"]
    assert layer["mediaType"] == ZSTD
    skopeo_pull(dst, tmp_path / "pulled")


def test_docker_source_of_zstd_chunked_into_a_docker_archive_becomes_gzip(make_registry, repo, chunked_index,
                                                                          tmp_path, podman, user_config):
    source = make_registry()
    seed(f"oci:{chunked_index}:multi", f"{source.host}/{repo}:multi")
    archive = tmp_path / "app.tar"
    assert main([f"docker://{source.host}/{repo}:multi", f"docker-archive:{archive}:localhost/app:v1",
                 "--platform", "linux/arm64", "--no-cache", "-q"]) == 0
    loaded = podman("load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    shown = podman("image", "inspect", "localhost/app:v1")
    [image] = json.loads(shown.stdout)
    assert image["Architecture"] == "arm64"
    copied = skopeo_copy(f"docker-archive:{archive}", f"oci:{tmp_path / 'copy'}:v1")  # verifies every digest
    assert copied.returncode == 0, copied.stderr


# More seams: stdin + resume, docker:// + v2s2 index, docker:// + zstd on several cores, --json into an archive


def test_stdin_source_resumes_after_exhausted_retries(nginx, front, repo, tmp_path, cache_home):
    """The spool of standard input is a new file each run: the kept upload is found by the
    blob's identity all the same."""
    image = make_layout(tmp_path / "img", [LayerSpec(12_000_000)], ref="v1")
    archive = tmp_path / "app.tar"
    assert main([f"oci:{image.layout}:v1", f"docker-archive:{archive}:app:v1", "-q"]) == 0
    args = ["docker-archive:-", f"{front.host}/{repo}:v1", "--chunk-size", str(CHUNK), "--jobs", "1",
            "--retry-delay", "10ms"]

    def run_stdin(argv: list[str]) -> subprocess.CompletedProcess[str]:
        with open(archive, "rb") as stdin:
            return run(argv, stdin=stdin)

    front.respond(503, {"Retry-After": "0"}, method="PATCH", nth=5, times=None)
    failed = run_stdin([*args, "--retry", "1"])
    assert failed.returncode == 4 and "Traceback" not in failed.stderr, failed.stderr
    assert failed.stderr.splitlines()[-1].endswith("run the same command again to resume"), failed.stderr
    front.clear()
    done = run_stdin([*args, "--retry", "1"])
    assert done.returncode == 0, done.stderr
    assert f"resuming the upload an earlier run left, at {3 * CHUNK} bytes" in done.stderr, done.stderr
    assert records(cache_home) == []
    skopeo_pull(f"{nginx.host}/{repo}:v1", tmp_path / "pulled")


def test_docker_source_index_as_a_v2s2_manifest_list(make_registry, proxy, repo, tmp_path, user_config):
    source = make_registry()
    seed(MULTIARCH, f"{source.host}/{repo}:multi")
    dst = f"{proxy.host}/{repo}:list"
    assert main([f"docker://{source.host}/{repo}:multi", dst, "--format", "v2s2", "-q"]) == 0
    listed = skopeo_inspect(f"docker://{dst}", raw=True)
    assert listed["mediaType"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    for child in listed["manifests"]:
        assert child["mediaType"] == V2S2
        skopeo_pull(f"{proxy.host}/{repo}@{child['digest']}", tmp_path / child["digest"][7:19])


def test_docker_source_recompressed_to_zstd_on_several_jobs(make_registry, proxy, repo, tmp_path, user_config):
    image = make_layout(tmp_path / "img", [LayerSpec(3_000_000, "text", files=2)] * 3, ref="v1", seed="jobs")
    source = make_registry()
    seed(f"oci:{image.layout}:v1", f"{source.host}/{repo}:v1")
    dst = f"{proxy.host}/{repo}:zstd"
    code = main([f"docker://{source.host}/{repo}:v1", dst, "--compression-format", "zstd", "--jobs", "3",
                 "--no-cache", "-q"])
    assert code == 0
    assert [layer["mediaType"] for layer in skopeo_inspect(f"docker://{dst}", raw=True)["layers"]] == [ZSTD] * 3
    skopeo_pull(dst, tmp_path / "pulled")  # verifies every digest


def test_json_of_a_zstd_source_into_a_docker_archive_says_gzip(tmp_path, capsys):
    archive = tmp_path / "app.tar"
    assert main([f"oci:{FIXTURES / 'oci' / 'zstd'}:v1", f"docker-archive:{archive}:app:v1", "--json",
                 "--no-cache"]) == 0
    out = json.loads(capsys.readouterr().out)
    layers = [b for b in out["blobs"] if b["media_type"] == ZSTD]
    assert layers
    for entry in layers:
        assert entry["pushed_media_type"] in ("application/vnd.docker.image.rootfs.diff.tar.gzip",
                                              "application/vnd.oci.image.layer.v1.tar+gzip"), entry
        assert entry["compression"] == "gzip", entry


@pytest.mark.parametrize("cut, extra", [(3 * CHUNK, ()), (3 * CHUNK + 1_000_000, ()),
                                        (3 * CHUNK, ("--compression-format", "zstd")),
                                        (3 * CHUNK, ("--compression-format", "zstd:chunked"))],
                         ids=["between-chunks", "mid-chunk", "zstd", "zstd-chunked"])
def test_a_source_that_breaks_mid_blob_keeps_the_destination_upload(make_registry, nginx, repo, tmp_path,
                                                                     cache_home, cut, extra):
    """The source registry fails in the middle of the layer, past the retries: exit 3 (the
    source's side, docs/sources.md), one line naming the source's request, and the
    destination's upload is kept (nothing is wrong with the image); the next run resumes it.
    Mid-chunk, the PATCH was cut with part of its body in the CNCF registry, whose signed
    state then refuses the upload (tests/faultproxy.py): the next run says so and starts
    the blob afresh."""
    image = make_layout(tmp_path / "img", [LayerSpec(12_000_000)], ref="v1")
    source_registry = make_registry()
    seed(f"oci:{image.layout}:v1", f"{source_registry.host}/{repo}:v1")
    [layer] = image.layers
    with FaultProxy(source_registry.host) as source:
        args = [f"docker://{source.host}/{repo}:v1", f"{nginx.host}/{repo}:v1", "--chunk-size", str(CHUNK),
                "--jobs", "1", "--retry-delay", "10ms", "--retry", "1", "--src-tls-verify=false", *extra]
        blob_path = f"/blobs/{layer.digest}"
        source.cut_answer(cut, method="GET", path=blob_path)
        source.respond(503, {"Retry-After": "0"}, method="GET", path=blob_path, nth=2, times=None)
        failed = run(args)
        assert failed.returncode == 3, failed.stderr
        last = failed.stderr.splitlines()[-1]
        assert last.startswith(f"ocipush: source registry {source.host}: GET ") and "503" in last, failed.stderr
        assert "Traceback" not in failed.stderr
        assert len(records(cache_home)) == 1
        assert last.endswith("run the same command again to resume"), failed.stderr
        source.clear()
        done = run(args)
    assert done.returncode == 0, done.stderr
    if extra:  # the compressor's output lags its input: resumed where that output stood
        assert "resuming the upload an earlier run left, at" in done.stderr, done.stderr
    elif cut == 3 * CHUNK:
        assert f"resuming the upload an earlier run left, at {3 * CHUNK} bytes" in done.stderr, done.stderr
    else:
        assert "cannot be resumed" in done.stderr, done.stderr
    assert records(cache_home) == []
    skopeo_pull(f"{nginx.host}/{repo}:v1", tmp_path / "pulled")


def test_a_source_blob_that_does_not_match_its_digest_cancels_the_upload(make_registry, nginx, repo, tmp_path,
                                                                          cache_home):
    """A source that serves other bytes is not a failure to wait out: the upload is cancelled
    (exit 3, nothing kept)."""
    image = make_layout(tmp_path / "img", [LayerSpec(5_000_000)], ref="v1")
    source_registry = make_registry()
    seed(f"oci:{image.layout}:v1", f"{source_registry.host}/{repo}:v1")
    [layer] = image.layers
    with FaultProxy(source_registry.host) as source:
        source.respond(404, {"Content-Type": "application/json"},
                       '{"errors":[{"code":"BLOB_UNKNOWN","message":"gone"}]}', method="GET",
                       path=f"/blobs/{layer.digest}", times=None)
        failed = run([f"docker://{source.host}/{repo}:v1", f"{nginx.host}/{repo}:v1", "--chunk-size", str(CHUNK),
                      "--retry-delay", "10ms", "--retry", "1", "--src-tls-verify=false"])
    assert failed.returncode == 3, failed.stderr
    assert failed.stderr.splitlines()[-1].startswith(f"ocipush: source registry {source.host}"), failed.stderr
    assert "kept" not in failed.stderr and records(cache_home) == []


def test_same_registry_one_platform_is_mounted(registry, repo, tmp_path, capsys, user_config):
    seed(MULTIARCH, f"{registry.host}/{repo}-src:multi")
    dst = f"{registry.host}/{repo}:arm"
    assert main([f"docker://{registry.host}/{repo}-src:multi", dst, "--platform", "linux/arm64", "--json",
                 "--src-tls-verify=false"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {b["action"] for b in out["blobs"]} == {"mounted"}, out["blobs"]
    skopeo_pull(dst, tmp_path / "pulled")


def test_stdin_into_a_docker_archive(tmp_path, podman):
    archive = tmp_path / "out.tar"
    with open(FIXTURES / "archives" / "skopeo-oci.tar", "rb") as stdin:
        done = run(["oci-archive:-", f"docker-archive:{archive}:localhost/app:v1", "--platform", "linux/arm64",
                    "--digestfile", str(tmp_path / "digest")], stdin=stdin)
    assert done.returncode == 0, done.stderr
    loaded = podman("load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    [image] = json.loads(podman("image", "inspect", "localhost/app:v1").stdout)
    assert image["Architecture"] == "arm64"
    assert (tmp_path / "digest").read_text().startswith("sha256:")


def test_dry_run_json_with_a_docker_source_and_zstd_chunked(make_registry, registry, repo, user_config):
    source = make_registry()
    seed(MULTIARCH, f"{source.host}/{repo}:multi")
    done = run([f"docker://{source.host}/{repo}:multi", f"{registry.host}/{repo}:v1", "--platform", "linux/arm64",
                "--dry-run", "--json", "--compression-format", "zstd:chunked", "--src-tls-verify=false"])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    actions = sorted(b["action"] for b in out["blobs"])
    assert actions[0].startswith("would compress to zstd:chunked"), actions
    assert registry_manifest(registry.host, repo, "v1").status_code == 404


@pytest.mark.parametrize("keep", [True], ids=["keep-partial"])  # the default (cancel): test_resume_registry
def test_sigint_with_a_docker_source(make_registry, nginx, front, repo, tmp_path, cache_home, keep):
    import signal

    image = make_layout(tmp_path / "img", [LayerSpec(12_000_000)], ref="v1")
    source_registry = make_registry()
    seed(f"oci:{image.layout}:v1", f"{source_registry.host}/{repo}:v1")
    args = [sys.executable, "-m", "ocipush", f"docker://{source_registry.host}/{repo}:v1", f"{front.host}/{repo}:v1",
            "--chunk-size", str(CHUNK), "--jobs", "1", "--src-tls-verify=false", *(["--keep-partial"] if keep else [])]
    held = front.stall(120, method="PATCH", nth=4, larger_than=LAYER_CHUNK)
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert held.fault.holding.wait(60), "the 4th chunk never came"  # an event, not a clock
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130 and "Traceback" not in err, err
    assert len(records(cache_home)) == (1 if keep else 0), err
    front.clear()
    if keep:
        done = run(args[3:])
        assert done.returncode == 0 and f"at {3 * CHUNK} bytes" in done.stderr, done.stderr
        skopeo_pull(f"{front.host}/{repo}:v1", tmp_path / "pulled")


def test_docker_source_by_index_digest_one_platform_to_a_tagged_archive(make_registry, repo, tmp_path, podman,
                                                                        user_config):
    source = make_registry()
    seed(MULTIARCH, f"{source.host}/{repo}:multi")
    index = registry_manifest(source.host, repo, "multi").headers["Docker-Content-Digest"]
    archive = tmp_path / "amd.tar"
    assert main([f"docker://{source.host}/{repo}@{index}", f"docker-archive:{archive}:localhost/app:amd",
                 "--platform", "linux/amd64", "--src-tls-verify=false", "-q"]) == 0
    assert podman("load", "-i", str(archive)).returncode == 0
    [image] = json.loads(podman("image", "inspect", "localhost/app:amd").stdout)
    assert image["Architecture"] == "amd64"


def test_dir_source_one_platform_into_a_docker_archive(tmp_path, podman):
    archive = tmp_path / "arm.tar"
    assert main([f"dir:{FIXTURES / 'dir' / 'skopeo-multi'}", f"docker-archive:{archive}:localhost/app:arm",
                 "--platform", "linux/arm64", "-q"]) == 0
    loaded = podman("load", "-i", str(archive))
    assert loaded.returncode == 0, loaded.stderr
    [image] = json.loads(podman("image", "inspect", "localhost/app:arm").stdout)
    assert image["Architecture"] == "arm64"


def test_zstd_chunked_into_a_docker_archive_says_what_docker_cannot_load(tmp_path, capsys, podman):
    archive = tmp_path / "app.tar"
    assert main([MULTIARCH, f"docker-archive:{archive}:localhost/app:v1", "--platform", "linux/arm64",
                 "--compression-format", "zstd:chunked", "--no-cache"]) == 0
    err = capsys.readouterr().err
    assert "docker before 23.0 cannot load them" in err and "without their zstd:chunked annotations" in err, err
    assert podman("load", "-i", str(archive)).returncode == 0
    [image] = json.loads(podman("image", "inspect", "localhost/app:v1").stdout)
    assert image["Architecture"] == "arm64"


@pytest.mark.parametrize("archive, spec", [("docker25.tar", "oci-archive:-"),
                                           ("skopeo-docker.tar", "docker-archive:-")])
def test_stdin_archive_to_zstd_chunked(proxy, repo, tmp_path, archive, spec):
    with open(FIXTURES / "archives" / archive, "rb") as stdin:
        done = run([spec, f"{proxy.host}/{repo}:v1", "--compression-format", "zstd:chunked", "--json", "--no-cache"],
                   stdin=stdin)
    assert done.returncode == 0, done.stderr
    layers = chunked_layers_check(proxy.host, repo, "v1")
    said = [b["compression"] for b in json.loads(done.stdout)["blobs"] if b["pushed_media_type"] == ZSTD]
    assert said == ["zstd:chunked"] * len(layers) and layers
    skopeo_pull(f"{proxy.host}/{repo}:v1", tmp_path / "pulled")
