"""Ctrl-C in the middle of a push, as a user gives it: SIGINT to a running ``python -m
ocipush`` uploading through the fault proxy to the real registry. The open upload is
cancelled at the registry (``DELETE`` of its location), the exit code is 130 with one line
``ocipush: interrupted``, no traceback, and no tag."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.imagegen import LayerSpec, make_layout
from tests.test_push_registry import registry_manifest
from tests.userconfig import user_config  # noqa: F401  (a fixture: the child gets a home of its own)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(20_000_000)], ref="v1")


def start_push(image, host: str, repo: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "ocipush", f"oci:{image.layout}", f"{host}/{repo}:v1", "--chunk-size", "1MB"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def interrupt(process: subprocess.Popen, stalled, timeout: float) -> tuple[int | None, str, str, float]:
    """SIGINT while the `stalled` rule holds a PATCH whose body has arrived; the exit code
    (None: still running after `timeout`, then killed), stdout, stderr, and the seconds from
    SIGINT to exit."""
    try:
        wait_until(lambda: stalled.fired or process.poll() is not None, 15, "the stalled PATCH")
        assert process.poll() is None, f"ocipush ended before the stall: {process.communicate()}"
        time.sleep(0.5)  # the rule fires on the request head; 1 MB of body takes milliseconds more
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


def test_ctrl_c_cancels_the_open_upload(faulty_proxy, registry, image, repo, user_config):  # noqa: F811
    # The third PATCH is (almost always) a chunk of the 20 MB layer, the config taking one: the
    # upload is open and holds a chunk when the registry goes quiet for 2 s and the user presses
    # Ctrl-C. Every upload still open is cancelled, the held one among them.
    stalled = faulty_proxy.stall(2.0, method="PATCH", nth=3)
    mark = faulty_proxy.mark()
    code, out, err, _ = interrupt(start_push(image, faulty_proxy.host, repo), stalled, timeout=12)
    assert "Traceback" not in out + err, err
    assert (code, err.splitlines()[-1:]) == (130, ["ocipush: interrupted"]), err
    assert err.count("ocipush: ") == 1 and out == "", (out, err)

    requests = faulty_proxy.requests(mark)
    [held] = [r for r in requests if r.fault]
    deletes = {(r.path, r.upstream_status) for r in requests if r.method == "DELETE"}
    assert held.path in {path for path, _ in deletes} and {status for _, status in deletes} == {204}, requests
    committed = [r for r in requests if r.method == "PUT" and (r.path == held.path or "/manifests/" in r.path)]
    assert not committed, committed
    assert registry_manifest(registry.host, repo, "v1").status_code == 404


def test_ctrl_c_does_not_wait_for_a_stalled_request(faulty_proxy, registry, image, repo, user_config):  # noqa: F811
    """The registry holds a PATCH without answering for longer than anyone waits: Ctrl-C must
    still end the push within seconds."""
    stalled = faulty_proxy.stall(60.0, method="PATCH", nth=3)
    code, out, err, seconds = interrupt(start_push(image, faulty_proxy.host, repo), stalled, timeout=5)
    assert code == 130, f"still running {seconds:.1f}s after SIGINT" if code is None else err
    assert err.splitlines()[-1:] == ["ocipush: interrupted"] and "Traceback" not in err, err
    assert registry_manifest(registry.host, repo, "v1").status_code == 404
