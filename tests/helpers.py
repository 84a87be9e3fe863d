"""Small helpers several test modules share.

Test modules import from here (or from the generators and service modules), never
from one another: a test module is a list of tests, and importing one runs its
module-level code and couples two files that change for different reasons.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import httpx

from ocipush import mediatypes
from ocipush.registry.auth import Credentials

# Every manifest and index type ocipush pushes: what a pull asks for.
ACCEPT = ", ".join(sorted(mediatypes.MANIFEST_TYPES | mediatypes.INDEX_TYPES))

# The scripted registry and token service of the auth-flow tests (httpx MockTransport).
REGISTRY = "https://registry.example.com"
REALM = "https://auth.example.com/token"
ALICE = Credentials("alice", "pw-alice", source="--creds")


def registry_manifest(host: str, repo: str, ref: str) -> httpx.Response:
    """GET a manifest from a plain-HTTP registry, accepting every type ocipush pushes."""
    return httpx.get(f"http://{host}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def signal_when(process: subprocess.Popen, ready: Callable[[], object], what: str, signum: int,
                timeout: float = 60, exit_timeout: float = 30) -> tuple[int | None, str, str]:
    """``signum`` to ``process`` once ``ready()`` holds (an event, not a clock); its exit code,
    stdout and stderr. The process must still be running then; it is killed if it outlives this."""
    try:
        wait_until(lambda: ready() or process.poll() is not None, timeout, what)
        assert process.poll() is None, f"ocipush ended before the signal: {process.communicate()}"
        process.send_signal(signum)
        out, err = process.communicate(timeout=exit_timeout)
        return process.returncode, out, err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
