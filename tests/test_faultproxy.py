"""The fault-injecting proxy relays faithfully, each fault does what it says, and the CNCF
registry reacts as recorded in tests/faultproxy.py's docstring (resume logic relies on it)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from http.client import HTTPConnection

import httpx
import pytest

from tests.faultproxy import (
    RANDOM_KINDS,
    CutBody,
    DropResponse,
    FaultProxy,
    Respond,
    Stall,
    html_error_page,
    oci_error_body,
)

pytestmark = pytest.mark.integration

MB = 1024 * 1024
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def http():
    # trust_env=False: never send loopback traffic to an http_proxy from the environment.
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def start_upload(http: httpx.Client, base_url: str, repo: str) -> str:
    response = http.post(f"{base_url}/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    return response.headers["Location"]


def patch(http: httpx.Client, location: str, data: bytes, offset: int) -> httpx.Response:
    content_range = f"{offset}-{offset + len(data) - 1}"
    return http.patch(location, content=data, headers={**OCTETS, "Content-Range": content_range})


def patched(http: httpx.Client, location: str, data: bytes, offset: int) -> str:
    """PATCH a chunk that must be accepted; the next Location."""
    response = patch(http, location, data, offset)
    assert response.status_code == 202, response.text
    assert response.headers["Range"] == f"0-{offset + len(data) - 1}"
    return response.headers["Location"]


def error_code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]


def stored_upload_size(registry, repo: str, location: str) -> int:
    """Bytes the registry holds for an upload, read from its storage: no HTTP request can tell
    once the client's Location is stale."""
    uuid = httpx.URL(location).path.rsplit("/", 1)[1]
    path = registry.storage_dir / "docker/registry/v2/repositories" / repo / "_uploads" / uuid / "data"
    return path.stat().st_size


# --- faithful relaying ---------------------------------------------------------


def test_relays_a_chunked_upload_and_a_manifest(faulty_proxy, registry, http, repo):
    blob = os.urandom(6 * MB)
    config = b"{}"
    since = faulty_proxy.mark()

    location = start_upload(http, faulty_proxy.url, repo)
    assert location.startswith(f"{faulty_proxy.url}/"), "Host must reach the registry as the client sent it"
    for offset in range(0, len(blob), 2 * MB):
        location = patched(http, location, blob[offset : offset + 2 * MB], offset)
    response = http.put(f"{location}&digest={sha256(blob)}")
    assert response.status_code == 201, response.text
    config_location = start_upload(http, faulty_proxy.url, repo)
    response = http.put(f"{config_location}&digest={sha256(config)}", content=config)
    assert response.status_code == 201, response.text
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha256(blob), "size": len(blob)}],
    }).encode()
    manifest_url = f"{faulty_proxy.url}/v2/{repo}/manifests/v1"
    response = http.put(manifest_url, content=manifest, headers={"Content-Type": MANIFEST})
    assert response.status_code == 201, response.text
    response = http.get(manifest_url, headers={"Accept": MANIFEST})
    assert (response.status_code, response.content) == (200, manifest)
    assert response.headers["Docker-Content-Digest"] == sha256(manifest)

    assert http.get(f"{registry.url}/v2/{repo}/blobs/{sha256(blob)}").content == blob
    log = faulty_proxy.requests(since)
    assert [(e.method, e.status, e.body_bytes) for e in log] == [
        ("POST", 202, 0),
        ("PATCH", 202, 2 * MB),
        ("PATCH", 202, 2 * MB),
        ("PATCH", 202, 2 * MB),
        ("PUT", 201, 0),
        ("POST", 202, 0),
        ("PUT", 201, 2),
        ("PUT", 201, len(manifest)),
        ("GET", 200, 0),
    ]
    assert [e.content_range for e in log[1:4]] == ["0-2097151", "2097152-4194303", "4194304-6291455"]
    assert log[4].query.endswith(f"&digest={sha256(blob)}") and "_state=" in log[4].query
    assert all(e.fault is None and e.upstream_status == e.status for e in log)


def test_relays_chunked_request_bodies(faulty_proxy, registry, http, repo):
    blocks = [os.urandom(300_000) for _ in range(5)]
    location = start_upload(http, faulty_proxy.url, repo)
    since = faulty_proxy.mark()

    # An iterator has no length: httpx sends it with Transfer-Encoding: chunked.
    response = http.patch(location, content=iter(blocks), headers=OCTETS)

    assert (response.status_code, response.headers["Range"]) == (202, "0-1499999")
    [exchange] = faulty_proxy.requests(since)
    assert exchange.body_bytes > 1_500_000  # the chunk framing counts too
    assert stored_upload_size(registry, repo, location) == 1_500_000


def test_keeps_client_connections_alive(faulty_proxy):
    connection = HTTPConnection(faulty_proxy.host, timeout=10)
    try:
        connection.request("GET", "/v2/")
        assert connection.getresponse().read() == b"{}"
        first_socket = connection.sock
        connection.request("HEAD", "/v2/")  # a Content-Length and no body: must not wait for one
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"")
        assert connection.sock is first_socket
        connection.request("GET", "/v2/", headers={"Connection": "close"})
        response = connection.getresponse()
        assert response.getheader("Connection") == "close" and response.will_close
    finally:
        connection.close()
    assert [e.status for e in faulty_proxy.requests()] == [200, 200, 200]


# --- faults and what the registry makes of them ---------------------------------


def test_drop_response_delivers_a_patch_the_client_never_hears_of(faulty_proxy, registry, http, repo):
    location = patched(http, start_upload(http, faulty_proxy.url, repo), os.urandom(2 * MB), 0)
    faulty_proxy.drop_response(method="PATCH")
    since = faulty_proxy.mark()

    with pytest.raises(httpx.RemoteProtocolError):
        patch(http, location, os.urandom(2 * MB), 2 * MB)

    [exchange] = faulty_proxy.requests(since)
    assert exchange.fault == DropResponse()
    assert (exchange.status, exchange.upstream_status, exchange.body_bytes) == (None, 202, 2 * MB)
    assert stored_upload_size(registry, repo, location) == 4 * MB
    # The client's Location still says 2 MB: stale. Asking for the offset does not work...
    response = http.get(location)
    assert (response.status_code, error_code(response)) == (404, "BLOB_UPLOAD_INVALID")
    assert "Range" not in response.headers and "Location" not in response.headers
    # ...nor does resending the chunk.
    response = patch(http, location, os.urandom(2 * MB), 2 * MB)
    assert (response.status_code, error_code(response)) == (404, "BLOB_UPLOAD_INVALID")


def test_cut_body_leaves_the_upload_with_the_bytes_before_the_cut(faulty_proxy, registry, http, repo):
    location = patched(http, start_upload(http, faulty_proxy.url, repo), os.urandom(2 * MB), 0)
    faulty_proxy.cut_body(MB // 2, method="PATCH")
    since = faulty_proxy.mark()

    with pytest.raises(httpx.TransportError):  # a reset or an EOF, depending on timing
        patch(http, location, os.urandom(2 * MB), 2 * MB)

    [exchange] = faulty_proxy.requests(since)
    assert exchange.fault == CutBody(MB // 2)
    assert (exchange.status, exchange.upstream_status, exchange.body_bytes) == (None, 499, MB // 2)
    assert stored_upload_size(registry, repo, location) == 2 * MB + MB // 2
    response = http.get(location)
    assert (response.status_code, error_code(response)) == (404, "BLOB_UPLOAD_INVALID")
    # Refused before the registry reads the body: the client still gets the answer, not a reset.
    response = patch(http, location, os.urandom(8 * MB), 2 * MB)
    assert (response.status_code, error_code(response)) == (404, "BLOB_UPLOAD_INVALID")


def test_cut_body_before_the_first_byte_leaves_the_upload_usable(faulty_proxy, registry, http, repo):
    location = patched(http, start_upload(http, faulty_proxy.url, repo), os.urandom(MB), 0)
    faulty_proxy.cut_body(0, method="PATCH")

    with pytest.raises(httpx.TransportError):
        patch(http, location, os.urandom(MB), MB)

    response = http.get(location)
    assert (response.status_code, response.headers["Range"]) == (204, f"0-{MB - 1}")
    patched(http, location, os.urandom(MB), MB)


@pytest.mark.parametrize(
    "status, headers, body, content_type",
    [
        (503, {"Retry-After": "1"}, html_error_page(503), "text/html"),
        (429, {"Retry-After": "1"}, oci_error_body("TOOMANYREQUESTS", "slow down"), "application/json"),
        (502, None, html_error_page(502), "text/html"),
    ],
)
def test_respond_answers_for_the_registry(faulty_proxy, http, repo, status, headers, body, content_type):
    location = patched(http, start_upload(http, faulty_proxy.url, repo), os.urandom(MB), 0)
    faulty_proxy.respond(status, headers, body, content_type, method="PATCH")
    since = faulty_proxy.mark()

    response = patch(http, location, os.urandom(2 * MB), MB)

    assert (response.status_code, response.content) == (status, body)
    assert response.headers["Content-Type"] == content_type
    assert response.headers.get("Retry-After") == (headers or {}).get("Retry-After")
    [exchange] = faulty_proxy.requests(since)
    assert (exchange.status, exchange.upstream_status, exchange.body_bytes) == (status, None, 2 * MB)
    # The registry never saw that PATCH: the upload is where it was, and goes on.
    response = http.get(location)
    assert (response.status_code, response.headers["Range"]) == (204, f"0-{MB - 1}")
    assert response.headers["Docker-Upload-UUID"] in response.headers["Location"]
    patched(http, response.headers["Location"], os.urandom(MB), MB)


def test_stall_times_the_client_out(faulty_proxy, http):
    faulty_proxy.stall(1.0, method="GET")
    started = time.monotonic()

    with pytest.raises(httpx.ReadTimeout):
        http.get(f"{faulty_proxy.url}/v2/", timeout=0.3)

    assert time.monotonic() - started < 0.9
    [exchange] = faulty_proxy.requests()  # waits for the stall to end
    assert (exchange.fault, exchange.status, exchange.upstream_status) == (Stall(1.0), None, None)
    assert http.get(f"{faulty_proxy.url}/v2/").status_code == 200


def test_limit_body_answers_html_413_to_every_larger_body(faulty_proxy, registry, http, repo):
    rule = faulty_proxy.limit_body(MB)
    location = start_upload(http, faulty_proxy.url, repo)
    location = patched(http, location, os.urandom(MB), 0)  # not over the limit

    for size in (4 * MB, MB + 1):
        response = patch(http, location, os.urandom(size), MB)
        assert response.status_code == 413
        assert response.headers["Content-Type"] == "text/html"
        assert b"<title>413 " in response.content
        assert not [name for name in response.headers if name.lower().startswith("oci-")]

    patched(http, location, os.urandom(MB), MB)
    assert rule.fired == 2
    assert stored_upload_size(registry, repo, location) == 2 * MB


def test_dropped_put_still_commits_the_blob(faulty_proxy, http, repo):
    blob = os.urandom(MB)
    location = patched(http, start_upload(http, faulty_proxy.url, repo), blob, 0)
    faulty_proxy.drop_response(method="PUT", path=r"[?&]digest=")

    with pytest.raises(httpx.RemoteProtocolError):
        http.put(f"{location}&digest={sha256(blob)}")

    assert faulty_proxy.requests()[-1].upstream_status == 201
    response = http.put(f"{location}&digest={sha256(blob)}")
    assert (response.status_code, error_code(response)) == (404, "BLOB_UPLOAD_UNKNOWN")
    assert http.head(f"{faulty_proxy.url}/v2/{repo}/blobs/{sha256(blob)}").status_code == 200


# --- what the registry does without any fault -------------------------------------


def test_registry_appends_a_patch_whatever_its_content_range(registry, http, repo):
    location = patched(http, start_upload(http, registry.url, repo), b"a" * 500, 0)

    gap = http.patch(location, content=b"b" * 400, headers={"Content-Range": "600-999"})
    assert (gap.status_code, gap.headers["Range"]) == (202, "0-899")
    overlap = http.patch(gap.headers["Location"], content=b"c" * 400, headers={"Content-Range": "300-699"})
    assert (overlap.status_code, overlap.headers["Range"]) == (202, "0-1299")


def test_registry_refuses_a_stale_location_but_keeps_the_upload(registry, http, repo):
    stale = patched(http, start_upload(http, registry.url, repo), b"a" * 500, 0)
    newest = patched(http, stale, b"b" * 500, 500)

    digest = sha256(b"a" * 500 + b"b" * 500)
    for response in (http.get(stale), http.put(f"{stale}&digest={digest}")):
        assert (response.status_code, error_code(response)) == (404, "BLOB_UPLOAD_INVALID")
    response = http.get(newest)
    assert (response.status_code, response.headers["Range"]) == (204, "0-999")
    assert http.put(f"{newest}&digest={digest}").status_code == 201


# --- rules ------------------------------------------------------------------------


def test_a_rule_fires_from_its_nth_match_as_many_times_as_asked(faulty_proxy, http):
    rule = faulty_proxy.respond(503, method="GET", path=r"^/v2/$", nth=2, times=2)
    unmatched = faulty_proxy.respond(500, method="HEAD")

    statuses = [http.get(f"{faulty_proxy.url}/v2/").status_code for _ in range(5)]

    assert statuses == [200, 503, 503, 200, 200]
    assert (rule.seen, rule.fired, unmatched.seen) == (5, 2, 0)


def test_the_first_rule_installed_fires_and_the_others_stay_due(faulty_proxy, http):
    every = faulty_proxy.respond(502, path=r"[?&]digest=", times=None)
    once = faulty_proxy.respond(500, method="GET")
    targets = ["/v2/?digest=x", "/v2/?a=1&digest=y", "/v2/", "/v2/", "/v2/?digest=z"]

    statuses = [http.get(f"{faulty_proxy.url}{target}").status_code for target in targets]

    assert statuses == [502, 502, 500, 200, 502]
    assert (every.fired, once.fired) == (3, 1)
    faulty_proxy.clear()
    assert http.get(f"{faulty_proxy.url}/v2/?digest=x").status_code == 200


def _random_run(registry, seed: int) -> tuple[list, int]:
    """Faults a seeded random rule gives 40 GETs in a row, and how many it fired."""
    with FaultProxy(registry.host) as proxy, httpx.Client(trust_env=False, timeout=5) as client:
        kinds = (*RANDOM_KINDS, "stall")
        rule = proxy.random_faults(seed, rate=0.3, kinds=kinds, max_faults=6, stall_seconds=0.01)
        for _ in range(40):
            with contextlib.suppress(httpx.TransportError):
                client.get(f"{proxy.url}/v2/")
        return [e.fault for e in proxy.requests()], rule.fired


def test_random_faults_are_deterministic_per_seed_and_capped(registry):
    faults, fired = _random_run(registry, seed=7)

    assert _random_run(registry, seed=7) == (faults, fired)
    assert _random_run(registry, seed=8)[0] != faults
    assert fired == 6 == len([f for f in faults if f is not None])
    assert all(isinstance(f, (CutBody, DropResponse, Respond, Stall)) for f in faults if f)


# --- lifetime -----------------------------------------------------------------------


def test_close_ends_every_connection_and_thread(registry):
    proxy = FaultProxy(registry.host)
    idle = HTTPConnection(proxy.host, timeout=5)
    idle.request("GET", "/v2/")
    idle.getresponse().read()  # a kept-alive connection, open and idle
    rule = proxy.stall(60)
    stalled = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    stalled.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert rule.wait_fired(5)

    started = time.monotonic()
    proxy.close()

    assert time.monotonic() - started < 2
    assert not [t for t in threading.enumerate() if t.name.startswith(f"faultproxy-{proxy.port}")]
    assert stalled.recv(1) == b"" and idle.sock.recv(1) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    stalled.close()
    idle.close()
