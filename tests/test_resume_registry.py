"""Resuming across runs against the real CNCF registry behind the real nginx (issue 14):
``python -m ocipush`` killed with SIGKILL mid-blob, then the same command again; nginx's
access log gives each PATCH's body size, skopeo pulls the image back and verifies it.

The kill lands while the fault proxy (between ocipush and nginx) holds the 4th chunk, which
never reaches the registry: the registry then holds 3 chunks, as after a kill between two
chunks.  A kill in the middle of a PATCH that reached the CNCF registry leaves an upload its
signed ``_state`` no longer matches (it answers 404 and drops it): that run starts the blob
afresh, with a note, and still pushes a verified image (``test_a_kill_mid_patch_...``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import signal_when, wait_until
from tests.imagegen import LayerSpec, make_layout
from tests.services import ProxiedRequest, skopeo_pull

pytestmark = pytest.mark.integration

CHUNK = 2_000_000
LAYER_CHUNK = 64 * 1024  # a PATCH larger than this is a chunk of the layer, never the config
KEPT = "; 1 partial upload kept: run the same command again to resume"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(16_000_000)], ref="v1")


def argv(image, host: str, repo: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ocipush", f"oci:{image.layout}", f"{host}/{repo}:v1", "--chunk-size", str(CHUNK),
            "--jobs", "1", "--retry-delay", "10ms", *extra]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_when_held(process: subprocess.Popen, rule, signum: int) -> tuple[int, str, str]:
    """``signum`` once the fault proxy holds the stalled chunk (an event, not a clock)."""
    code, out, err = signal_when(process, rule.fault.holding.is_set, "the held chunk", signum)
    assert code is not None
    return code, out, err


def patch_bytes(nginx, since: int) -> int:
    return sum(r.body_length or 0 for r in nginx.requests(since) if r.method == "PATCH")


def layer_size(image) -> int:
    [layer] = image.layers
    return layer.size


def entries(records: Path) -> list[Path]:
    return sorted(records.glob("*.json")) if records.exists() else []


def rerun(args: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize("compression", [None, "zstd"], ids=["as-is", "zstd"])
def test_a_push_killed_mid_blob_resumes_with_only_the_missing_part(image, nginx, front, repo, cache_home, tmp_path,
                                                                   compression):
    extra = ("--compression-format", "zstd") if compression else ()
    args = argv(image, front.host, repo, *extra)
    held = front.stall(120, method="PATCH", nth=4, larger_than=LAYER_CHUNK)
    code, _, err = stop_when_held(start(args), held, signal.SIGKILL)
    assert code == -signal.SIGKILL, err
    assert len(entries(cache_home)) >= 1  # the layer's upload, recorded at 3 chunks

    front.clear()
    mark = nginx.mark()
    done = rerun(args)
    assert f"resuming the upload an earlier run left, at {3 * CHUNK} bytes" in done.stderr, done.stderr
    sent = patch_bytes(nginx, mark)
    if compression:
        from tests.test_compression_registry import pulled_layers_match_diff_ids

        [digest] = pulled_layers_match_diff_ids(front.host, repo, "v1", tmp_path,
                                                "application/vnd.oci.image.layer.v1.tar+zstd")
        blob = tmp_path / "pulled-v1" / "blobs" / "sha256" / digest.split(":")[1]
        total = blob.stat().st_size
    else:
        skopeo_pull(f"{front.host}/{repo}:v1", tmp_path / "pulled")
        total = layer_size(image)
    missing = total - 3 * CHUNK
    assert missing <= sent <= missing + CHUNK + image.config.size, (sent, missing)
    assert entries(cache_home) == []


def test_a_kill_mid_patch_leaves_a_clean_restart_or_a_resume(image, nginx, repo, cache_home, tmp_path):
    """SIGKILL while a PATCH streams into the CNCF registry: its upload then holds part of
    a chunk its signed state does not name; the next run finds it unusable (a note) and
    uploads the blob afresh, or resumes it if the kill fell between two chunks."""
    args = argv(image, nginx.host, repo)
    process = start(args)

    def layer_chunks() -> int:
        text = nginx.access_log.read_text() if nginx.access_log.exists() else ""
        return sum(1 for line in text.splitlines()
                   if (r := ProxiedRequest.from_log(line)).method == "PATCH" and (r.body_length or 0) > LAYER_CHUNK)

    try:
        wait_until(lambda: layer_chunks() >= 2 or process.poll() is not None, 60, "two chunks through nginx")
        assert process.poll() is None, f"ocipush ended before the kill: {process.communicate()}"
        process.kill()
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    mark = nginx.mark()
    done = rerun(args)
    skopeo_pull(f"{nginx.host}/{repo}:v1", tmp_path / "pulled")
    sent = patch_bytes(nginx, mark)
    if "resuming the upload" in done.stderr:
        assert sent <= layer_size(image) - 2 * CHUNK + CHUNK + image.config.size
    else:
        assert "cannot be resumed" in done.stderr, done.stderr
    assert entries(cache_home) == []


def test_exhausted_retries_exit_4_and_the_next_run_resumes(image, nginx, front, repo, cache_home, tmp_path):
    args = argv(image, front.host, repo, "--retry", "1")
    # From the 4th layer chunk on, the front answers 503 (never reaching the registry).
    front.respond(503, {"Retry-After": "0"}, method="PATCH", nth=4 + 1, times=None)
    failed = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert failed.returncode == 4, failed.stderr
    lines = failed.stderr.splitlines()
    assert lines[-1].startswith("ocipush: PATCH ") and lines[-1].endswith(KEPT), failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    assert len(entries(cache_home)) == 1

    front.clear()
    mark = nginx.mark()
    done = rerun(args)
    assert "resuming the upload an earlier run left, at" in done.stderr, done.stderr
    skopeo_pull(f"{front.host}/{repo}:v1", tmp_path / "pulled")
    assert patch_bytes(nginx, mark) <= layer_size(image) - 2 * CHUNK
    assert entries(cache_home) == []


@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep-partial"])
def test_sigint_cancels_unless_keep_partial(image, nginx, front, repo, cache_home, tmp_path, keep):
    args = argv(image, front.host, repo, *(["--keep-partial"] if keep else []))
    held = front.stall(120, method="PATCH", nth=4, larger_than=LAYER_CHUNK)
    code, out, err = stop_when_held(start(args), held, signal.SIGINT)
    assert out == ""
    assert code == 130 and "Traceback" not in err, err
    front.clear()
    if not keep:
        assert err.splitlines()[-1] == "ocipush: interrupted", err
        assert entries(cache_home) == []  # cancelled (DELETE) and forgotten
        assert [r for r in nginx.requests() if r.method == "DELETE"], "the upload was not cancelled"
        return
    assert err.splitlines()[-1:] == ["ocipush: interrupted" + KEPT], err
    assert len(entries(cache_home)) == 1
    assert not [r for r in nginx.requests() if r.method == "DELETE"]
    mark = nginx.mark()
    done = rerun(args)
    assert f"resuming the upload an earlier run left, at {3 * CHUNK} bytes" in done.stderr, done.stderr
    assert patch_bytes(nginx, mark) <= layer_size(image) - 3 * CHUNK + image.config.size
    skopeo_pull(f"{front.host}/{repo}:v1", tmp_path / "pulled")
    assert entries(cache_home) == []
    assert os.listdir(cache_home) == []


@pytest.mark.parametrize("tamper", ["another blob's upload", "offset beyond the registry's", "garbage"])
def test_a_tampered_record_never_makes_a_broken_image(image, nginx, front, repo, cache_home, tmp_path, tamper):
    """The CNCF registry's own checks (its signed upload state, the digest on the final
    PUT) and the record's seal: a fresh upload, or a resume where the registry stands."""
    import json

    import httpx

    from ocipush.content import UploadPoint
    from ocipush.digest import Digest
    from ocipush.resume import BlobIdentity, UploadRecords

    args = argv(image, front.host, repo, "--retry", "0")
    front.respond(503, method="PATCH", nth=4, times=None)
    assert subprocess.run(args, capture_output=True, text=True, timeout=180).returncode == 4
    front.clear()
    [path] = entries(cache_home)
    doc = json.loads(path.read_bytes())
    records = UploadRecords(cache_home)
    identity = BlobIdentity(Digest.parse(doc["source"]))
    point = UploadPoint(doc["url"], doc["offset"], doc["chunk_size"], doc["minimum"], doc["maximum"])
    if tamper == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif tamper == "offset beyond the registry's":
        records.write(doc["location"], identity, UploadPoint(point.url, point.offset + 3 * CHUNK, CHUNK))
    else:  # the upload of other bytes, as many as the record says
        other = httpx.post(f"{front.url}/v2/{repo}/blobs/uploads/")
        url = other.headers["Location"]
        for start in range(0, point.offset, CHUNK):
            url = httpx.patch(url, content=os.urandom(CHUNK), headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + CHUNK - 1}"}).headers["Location"]
        records.write(doc["location"], identity, UploadPoint(url, point.offset, CHUNK))
    done = rerun(args)
    expected = {"garbage": "damaged, or not sealed", "another blob's upload": "could not be finished",
                "offset beyond the registry's": f"resuming the upload an earlier run left, at {point.offset} bytes"}
    assert expected[tamper] in done.stderr, done.stderr
    skopeo_pull(f"{front.host}/{repo}:v1", tmp_path / "pulled")
    assert entries(cache_home) == []
