"""Small helpers several test modules share.

Test modules import from here (or from the generators and service modules), never
from one another: a test module is a list of tests, and importing one runs its
module-level code and couples two files that change for different reasons.
"""

from __future__ import annotations

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
