"""Ctrl-C in the middle of a push, as a user gives it: SIGINT to a running ``python -m
ocipush`` uploading through the fault proxy to the real registry. The open upload is
cancelled at the registry (``DELETE`` of its location), the exit code is 130 with one line
``ocipush: interrupted``, no traceback, and no tag."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import registry_manifest, signal_when, wait_until
from tests.imagegen import LayerSpec, make_layout

pytestmark = pytest.mark.integration


# A PATCH with a body larger than this is a chunk of the image's layer, never its config.
LAYER_CHUNK = 64 * 1024


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(20_000_000)], ref="v1")


def start_push(image, host: str, repo: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ocipush", f"oci:{image.layout}", f"{host}/{repo}:v1", "--chunk-size", "1MB"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt(process: subprocess.Popen, stalled, timeout: float) -> tuple[int | None, str, str, float]:
    """SIGINT while the `stalled` rule holds a PATCH whose body has arrived; the exit code
    (None: still running after `timeout`, then killed), stdout, stderr, and the seconds from
    SIGINT to exit."""
    try:
        # The rule fires on the request head; `holding` once the whole 1 MB body has arrived.
        wait_until(lambda: stalled.fault.holding.is_set() or process.poll() is not None, 15, "the stalled PATCH")
        assert process.poll() is None, f"ocipush ended before the stall: {process.communicate()}"
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            out, err = process.communicate(timeout=timeout)
            return process.returncode, out, err, time.monotonic() - sent
        except subprocess.TimeoutExpired:
            return None, "", "", time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_ctrl_c_cancels_the_open_upload(faulty_proxy, registry, image, repo, user_config):
    # The second PATCH larger than the config is the 20 MB layer's second chunk: the upload is
    # open and holds a chunk when the registry goes quiet for 1 s and the user presses Ctrl-C.
    # Every upload still open is cancelled, the held one among them: its PATCH ends within the
    # interrupt's grace (client.INTERRUPT_GRACE, 3 s; a PATCH cut midway would leave the CNCF
    # registry an upload state its DELETE no longer matches), then its DELETE goes out.
    stalled = faulty_proxy.stall(1.0, method="PATCH", nth=2, larger_than=LAYER_CHUNK)
    mark = faulty_proxy.mark()
    code, out, err, _ = interrupt(start_push(image, faulty_proxy.host, repo), stalled, timeout=12)
    assert "Traceback" not in out + err, err
    assert (code, err.splitlines()[-1:]) == (130, ["ocipush: interrupted"]), err
    assert err.count("ocipush: ") == 1 and out == "", (out, err)

    requests = faulty_proxy.requests(mark)
    [held] = [r for r in requests if r.fault]
    deletes = {r.path: r.upstream_status for r in requests if r.method == "DELETE"}
    # The held upload is cancelled for real. Another upload may have been committed during
    # the interrupt's grace (its PUT was in flight): its DELETE then finds nothing (404).
    assert deletes.get(held.path) == 204, requests
    assert set(deletes.values()) <= {204, 404}, requests
    committed = [r for r in requests if r.method == "PUT" and (r.path == held.path or "/manifests/" in r.path)]
    assert not committed, committed
    assert registry_manifest(registry.host, repo, "v1").status_code == 404


def test_ctrl_c_does_not_wait_for_a_stalled_request(faulty_proxy, registry, image, repo, user_config):
    """The registry holds a PATCH without answering for longer than anyone waits: Ctrl-C must
    still end the push within seconds."""
    stalled = faulty_proxy.stall(60.0, method="PATCH", nth=2, larger_than=LAYER_CHUNK)
    code, _, err, seconds = interrupt(start_push(image, faulty_proxy.host, repo), stalled, timeout=5)
    assert code == 130, f"still running {seconds:.1f}s after SIGINT" if code is None else err
    assert err.splitlines()[-1:] == ["ocipush: interrupted"] and "Traceback" not in err, err
    assert registry_manifest(registry.host, repo, "v1").status_code == 404


# -- against the CNCF registry itself: nothing left in its storage ---------------------------
#
# A layer recompressed to zstd -19 streams at a few MB/s, so a PATCH is on its way for
# seconds: the signal comes while the registry is receiving it (its upload's data file grows).
# Cancelling for real means the PATCH's connection is closed, the registry done with what it
# got, and only then the DELETE: a DELETE that overtakes the PATCH leaves the upload in the
# registry's `_uploads` directory, where the CNCF registry writes it back when the PATCH ends.

SLOW = ("--compression-format", "zstd", "--compression-level", "19", "--chunk-size", "2MB", "--no-cache")


@pytest.fixture(scope="module")
def gzip_image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("gz"), [LayerSpec(24_000_000)], ref="v1")


def uploads_dir(registry, repo: str):
    return registry.storage_dir / "docker/registry/v2/repositories" / repo / "_uploads"


def upload_files(registry, repo: str) -> list:
    """Files under the repository's ``_uploads``; os.walk, unlike Path.rglob, does not trip
    over a directory the registry removes while we look."""
    return sorted(Path(d, name) for d, _, names in os.walk(uploads_dir(registry, repo)) for name in names)


def open_uploads(registry, repo: str) -> list:
    """The uploads the registry still holds: their ``startedat`` or ``data``.  Not the
    ``hashstates/`` file the CNCF registry 2.8 writes back after every DELETE it answers 204
    (closing the upload once more after cancelling it): that one it no longer knows as an
    upload, and its purge removes it."""
    return [p for p in upload_files(registry, repo) if p.name in ("startedat", "data")]


def receiving(registry, repo: str, at_least: int = 512 * 1024) -> bool:
    """The registry is in the middle of a PATCH: an upload's data file holds some bytes."""
    for path in upload_files(registry, repo):
        try:
            if path.name == "data" and path.stat().st_size >= at_least:
                return True
        except FileNotFoundError:
            pass
    return False


def push_slowly(image, host: str, repo: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ocipush", f"oci:{image.layout}", f"{host}/{repo}:v1", *SLOW]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_mid_patch(process: subprocess.Popen, registry, repo: str, signum: int) -> tuple[int | None, str, str]:
    return signal_when(process, lambda: receiving(registry, repo), "a PATCH in progress", signum, exit_timeout=15)


@pytest.mark.parametrize("signum, code, line", [
    (signal.SIGINT, 130, "ocipush: interrupted"),
    (signal.SIGTERM, 143, "ocipush: terminated"),
], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_patch_leaves_no_upload_in_the_registry(signum, code, line, registry, gzip_image, repo,
                                                             user_config):
    got, out, err = signal_mid_patch(push_slowly(gzip_image, registry.host, repo), registry, repo, signum)
    assert "Traceback" not in out + err, err
    assert (got, err.splitlines()[-1:], out) == (code, [line], "") and err.count("ocipush: ") == 1, err
    # The registry may still be writing what it got when we look: give it until its files settle.
    try:
        wait_until(lambda: not open_uploads(registry, repo), 5, "the registry to drop the upload")
    except AssertionError:
        raise AssertionError(f"left in the registry's storage: {open_uploads(registry, repo)}") from None
    assert registry_manifest(registry.host, repo, "v1").status_code == 404


def test_a_second_signal_exits_at_once(faulty_proxy, registry, image, repo, user_config):
    """While the first SIGTERM's cleanup waits on a registry that holds a PATCH without a word,
    a second one ends the process at once, with the one line all the same."""
    stalled = faulty_proxy.stall(60.0, method="PATCH", nth=2, larger_than=LAYER_CHUNK)
    process = start_push(image, faulty_proxy.host, repo)
    try:
        wait_until(lambda: stalled.fault.holding.is_set() or process.poll() is not None, 15, "the stalled PATCH")
        assert process.poll() is None, f"ocipush ended before the stall: {process.communicate()}"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the cleanup now waits up to 2 s for the stalled connection to close
        assert process.poll() is None, f"cleanup ended too soon to test a second signal: {process.communicate()}"
        process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        out, err = process.communicate(timeout=10)
        seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, err.splitlines()[-1:], out) == (143, ["ocipush: terminated"], ""), err
    assert err.count("ocipush: ") == 1, err
    assert seconds < 1.0, f"{seconds:.2f}s after the second signal"


def test_a_signal_leaves_no_temporary_file_in_a_local_destination(gzip_image, tmp_path, user_config):
    """The same slow recompression into an OCI layout: SIGINT while a blob is being written
    removes its temporary file; nothing but what was complete stays."""
    layout = tmp_path / "out"
    argv = [sys.executable, "-m", "ocipush", f"oci:{gzip_image.layout}", f"oci:{layout}:v1", *SLOW]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def writing() -> bool:
        return layout.exists() and any(p.stat().st_size > 256 * 1024 for p in (layout / "blobs").glob(".tmp-*"))

    try:
        wait_until(lambda: writing() or process.poll() is not None, 60, "a blob being written")
        assert process.poll() is None, f"ocipush ended before the signal: {process.communicate()}"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert (process.returncode, err.splitlines()[-1:], out) == (130, ["ocipush: interrupted"], ""), err
    assert not [p for p in layout.rglob("*") if p.name.startswith(".tmp-")]
    assert not (layout / "index.json").exists() or "v1" not in (layout / "index.json").read_text()


# Runs ``python -m ocipush`` with the import of httpx held for a while, announced on a pipe:
# the window where a signal used to find no handler (before cli installed its own).
_SLOW_IMPORT = """
import builtins, os, runpy, sys, time
real = builtins.__import__
def slow(name, *args, **kwargs):
    if name == "httpx" and "httpx" not in sys.modules:
        os.write(int(os.environ["ANNOUNCE_FD"]), b"importing\\n")
        time.sleep(5)
    return real(name, *args, **kwargs)
builtins.__import__ = slow
sys.argv = ["ocipush", "oci:/nonexistent", "oci:/nonexistent-too"]
runpy.run_module("ocipush", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "terminated"),
                                                (signal.SIGINT, 130, "interrupted")])
def test_a_signal_while_starting_up_exits_with_one_line(signum, code, word, tmp_path):
    """A signal during the imports, before cli's handlers exist, is still the documented
    exit code and one line (attack report, finding 11: it was a silent death by SIGTERM,
    a traceback for SIGINT)."""
    read, write = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "ANNOUNCE_FD": str(write)}
    child = subprocess.Popen([sys.executable, "-c", _SLOW_IMPORT], pass_fds=(write,), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as announced:
            assert announced.readline() == b"importing\n"
        child.send_signal(signum)
        out, err = child.communicate(timeout=20)
    finally:
        child.kill()
    assert (child.returncode, out, err) == (code, "", f"ocipush: {word}\n")
