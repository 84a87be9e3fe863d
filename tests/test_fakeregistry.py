"""Tests of the fake registry itself: it is the oracle for client tests, so it has to be right."""

from __future__ import annotations

import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakeregistry import Drop, FakeRegistry, Reply, html, nth, sha256_digest

OCTET = {"Content-Type": "application/octet-stream"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture
def fake():
    with FakeRegistry() as registry:
        yield registry


def client_for(fake: FakeRegistry, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=fake.url, **kwargs)


def with_digest(location: str, digest: str) -> str:
    # Spec: `<location>?digest=`, but a location that already has a query needs `&`.
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def start(client: httpx.Client, repo: str = "test/repo") -> httpx.Response:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    return response


def patch(client: httpx.Client, location: str, offset: int, chunk: bytes) -> httpx.Response:
    headers = {**OCTET, "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
    return client.patch(location, content=chunk, headers=headers)


def push_chunked(
    client: httpx.Client, data: bytes, chunk_size: int, repo: str = "test/repo"
) -> httpx.Response:
    """Upload `data` in equal chunks, following every Location; return the closing PUT's response."""
    location = start(client, repo).headers["Location"]
    for offset in range(0, len(data), chunk_size):
        response = patch(client, location, offset, data[offset : offset + chunk_size])
        assert response.status_code == 202, response.text
        assert response.headers["Range"] == f"0-{offset + len(data[offset : offset + chunk_size]) - 1}"
        location = response.headers["Location"]
    return client.put(with_digest(location, sha256_digest(data)))


def error_code(response: httpx.Response) -> str:
    return response.json()["errors"][0]["code"]


def test_base_endpoint(fake):
    with client_for(fake) as client:
        response = client.get("/v2/")
    assert (response.status_code, response.json()) == (200, {})
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("style", ["relative", "absolute", "state", "rotating"])
def test_chunked_upload_happy_path(style):
    data = bytes(range(256)) * 10
    with FakeRegistry(location_style=style) as fake, client_for(fake) as client:
        started = start(client)
        assert "Range" not in started.headers  # the spec defines none on the POST reply
        assert started.headers["Docker-Upload-UUID"]
        assert started.headers["Location"].startswith(
            fake.url if style in ("absolute", "rotating") else "/v2/"
        )
        finished = push_chunked(client, data, 1000)
        assert finished.status_code == 201, finished.text
        digest = sha256_digest(data)
        assert finished.headers["Location"] == f"/v2/test/repo/blobs/{digest}"
        assert finished.headers["Docker-Content-Digest"] == digest
        head = client.head(f"/v2/test/repo/blobs/{digest}")
        assert (head.status_code, head.headers["Content-Length"], head.content) == (200, str(len(data)), b"")
        assert client.get(f"/v2/test/repo/blobs/{digest}").content == data
    assert [(r.method, r.status) for r in fake.log] == [("POST", 202)] * 2 + [("PATCH", 202)] * 3 + [
        ("PUT", 201),
        ("HEAD", 200),
        ("GET", 200),
    ]


def test_state_token_changes_and_stale_locations_are_refused():
    with FakeRegistry(location_style="state") as fake, client_for(fake) as client:
        first = start(client).headers["Location"]
        second = patch(client, first, 0, b"abcd").headers["Location"]
        assert "?_state=" in first and first != second
        stale = patch(client, first, 4, b"efgh")
        assert (stale.status_code, error_code(stale)) == (400, "BLOB_UPLOAD_INVALID")
        missing = patch(client, second.split("?")[0], 4, b"efgh")
        assert missing.status_code == 400
        # A client that appends "?digest=" to a location that has a query corrupts the token.
        wrong_join = client.put(f"{second}?digest={sha256_digest(b'abcd')}")
        assert (wrong_join.status_code, error_code(wrong_join)) == (400, "BLOB_UPLOAD_INVALID")
        assert client.put(with_digest(second, sha256_digest(b"abcd"))).status_code == 201


def test_rotating_location_retires_the_old_path():
    with FakeRegistry(location_style="rotating") as fake, client_for(fake) as client:
        first = start(client).headers["Location"]
        second = patch(client, first, 0, b"abcd").headers["Location"]
        assert first != second
        stale = patch(client, first, 4, b"efgh")
        assert (stale.status_code, error_code(stale)) == (404, "BLOB_UPLOAD_UNKNOWN")


def test_out_of_order_chunk_gets_416_with_range_and_location(fake):
    with client_for(fake) as client:
        location = start(client).headers["Location"]
        location = patch(client, location, 0, b"a" * 10).headers["Location"]
        response = patch(client, location, 20, b"b" * 10)
        assert response.status_code == 416
        assert response.headers["Range"] == "0-9"
        assert response.headers["Location"]
        status = client.get(response.headers["Location"])
        assert (status.status_code, status.headers["Range"]) == (204, "0-9")


def test_416_at_offset_zero_reports_0_0(fake):
    with client_for(fake) as client:
        response = patch(client, start(client).headers["Location"], 5, b"x" * 5)
    assert (response.status_code, response.headers["Range"]) == (416, "0-0")


def test_equal_chunks_refuse_a_larger_chunk_and_any_chunk_after_a_smaller_one(fake):
    with client_for(fake) as client:
        location = start(client).headers["Location"]
        location = patch(client, location, 0, b"a" * 10).headers["Location"]
        larger = patch(client, location, 10, b"b" * 11)
        assert larger.status_code == 416
        smaller = patch(client, larger.headers["Location"], 10, b"b" * 5)
        assert smaller.status_code == 202
        after_last = patch(client, smaller.headers["Location"], 15, b"c" * 5)
        assert (after_last.status_code, after_last.headers["Range"]) == (416, "0-14")
        done = client.put(with_digest(after_last.headers["Location"], sha256_digest(b"a" * 10 + b"b" * 5)))
        assert done.status_code == 201


def test_unequal_chunks_allowed_when_not_enforced():
    with FakeRegistry(equal_chunks=False) as fake, client_for(fake) as client:
        location = start(client).headers["Location"]
        location = patch(client, location, 0, b"a" * 5).headers["Location"]
        response = patch(client, location, 5, b"b" * 10)
        assert response.status_code == 202
        assert response.headers["Range"] == "0-14"


def test_chunk_length_limits_are_advertised_and_enforced():
    with FakeRegistry(min_chunk=4, max_chunk=8, equal_chunks=False) as fake, client_for(fake) as client:
        started = start(client)
        assert started.headers["OCI-Chunk-Min-Length"] == "4"
        assert started.headers["OCI-Chunk-Max-Length"] == "8"
        location = started.headers["Location"]
        assert patch(client, location, 0, b"a" * 9).status_code == 416
        short = patch(client, location, 0, b"a" * 3)  # fine, if it turns out to be the last chunk
        assert short.status_code == 202
        assert patch(client, short.headers["Location"], 3, b"b" * 4).status_code == 416


@pytest.mark.parametrize("content_range", ["bytes 0-3", "0-3/4", "bytes=0-3", "0-", "0-3,4-5"])
def test_malformed_content_range_is_400(fake, content_range):
    with client_for(fake) as client:
        location = start(client).headers["Location"]
        response = client.patch(location, content=b"abcd", headers={**OCTET, "Content-Range": content_range})
    assert (response.status_code, error_code(response)) == (400, "BLOB_UPLOAD_INVALID")


def test_patch_needs_octet_stream_and_consistent_lengths(fake):
    with client_for(fake) as client:
        location = start(client).headers["Location"]
        no_type = client.patch(location, content=b"abcd", headers={"Content-Range": "0-3"})
        assert no_type.status_code == 400
        wrong_range = client.patch(location, content=b"abcd", headers={**OCTET, "Content-Range": "0-4"})
        assert (wrong_range.status_code, error_code(wrong_range)) == (400, "SIZE_INVALID")
        # Transfer-Encoding: chunked, so no Content-Length: the body is read, then refused.
        streamed = client.patch(
            location, content=iter([b"ab", b"cd"]), headers={**OCTET, "Content-Range": "0-3"}
        )
        assert (streamed.status_code, error_code(streamed)) == (400, "SIZE_INVALID")
        assert fake.log[-1].body_length == 4
        assert fake.log[-1].headers["transfer-encoding"] == "chunked"
        assert patch(client, location, 0, b"abcd").status_code == 202  # the session is unharmed


def test_final_chunk_in_put(fake):
    with client_for(fake) as client:
        location = patch(client, start(client).headers["Location"], 0, b"a" * 8).headers["Location"]
        headers = {**OCTET, "Content-Range": "8-11"}
        done = client.put(
            with_digest(location, sha256_digest(b"a" * 8 + b"tail")), content=b"tail", headers=headers
        )
        assert done.status_code == 201, done.text
        assert fake.blobs["test/repo"][done.headers["Docker-Content-Digest"]] == b"a" * 8 + b"tail"


def test_monolithic_post_then_put(fake):
    with client_for(fake) as client:
        location = start(client).headers["Location"]
        done = client.put(with_digest(location, sha256_digest(b"whole")), content=b"whole", headers=OCTET)
    assert done.status_code == 201


def test_serverless_final_put_with_body_is_500():
    with FakeRegistry(serverless_final_put=True) as fake, client_for(fake) as client:
        location = patch(client, start(client).headers["Location"], 0, b"a" * 8).headers["Location"]
        digest = sha256_digest(b"a" * 8 + b"tail")
        response = client.put(with_digest(location, digest), content=b"tail", headers=OCTET)
        assert response.status_code == 500
        # Without PATCHes the body is the whole blob, which serverless-registry stores.
        location = start(client).headers["Location"]
        done = client.put(with_digest(location, sha256_digest(b"whole")), content=b"whole", headers=OCTET)
        assert done.status_code == 201


def test_digest_mismatch_is_400_and_ends_the_session(fake):
    with client_for(fake) as client:
        location = patch(client, start(client).headers["Location"], 0, b"abcd").headers["Location"]
        response = client.put(with_digest(location, sha256_digest(b"other")))
        assert (response.status_code, error_code(response)) == (400, "DIGEST_INVALID")
        assert client.get(location).status_code == 404
        assert fake.blobs == {}


def test_missing_or_malformed_digest_is_400(fake):
    with client_for(fake) as client:
        location = start(client).headers["Location"]
        assert client.put(location).status_code == 400
        assert client.put(with_digest(location, "sha256:abc")).status_code == 400


def test_upload_status_and_cancel(fake):
    with client_for(fake) as client:
        location = patch(client, start(client).headers["Location"], 0, b"abc").headers["Location"]
        status = client.get(location)
        assert (status.status_code, status.headers["Range"], status.content) == (204, "0-2", b"")
        assert client.delete(status.headers["Location"]).status_code == 204
        gone = client.get(status.headers["Location"])
        assert (gone.status_code, error_code(gone)) == (404, "BLOB_UPLOAD_UNKNOWN")


def test_unknown_blob_is_404_with_oci_error(fake):
    digest = sha256_digest(b"nothing")
    with client_for(fake) as client:
        response = client.get(f"/v2/test/repo/blobs/{digest}")
        assert client.head(f"/v2/test/repo/blobs/{digest}").status_code == 404
    assert response.status_code == 404
    assert response.json()["errors"][0] == {
        "code": "BLOB_UNKNOWN",
        "message": "blob unknown to registry",
        "detail": {"digest": digest},
    }


def test_invalid_repository_name_is_400(fake):
    with client_for(fake) as client:
        response = client.post("/v2/Upper/Case/blobs/uploads/")
    assert (response.status_code, error_code(response)) == (400, "NAME_INVALID")


def test_mount_from_another_repository(fake):
    digest = fake.add_blob("source/repo", b"shared layer")
    with client_for(fake) as client:
        mounted = client.post(
            "/v2/target/repo/blobs/uploads/", params={"mount": digest, "from": "source/repo"}
        )
        assert mounted.status_code == 201
        assert mounted.headers["Location"] == f"/v2/target/repo/blobs/{digest}"
        assert client.get(f"/v2/target/repo/blobs/{digest}").content == b"shared layer"
        unknown = sha256_digest(b"elsewhere")
        fallback = client.post(
            "/v2/target/repo/blobs/uploads/", params={"mount": unknown, "from": "source/repo"}
        )
        assert fallback.status_code == 202
        assert fallback.headers["Location"]


def descriptor(media_type: str, data: bytes) -> dict:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}


def image_manifest(fake: FakeRegistry, *, push: bool) -> bytes:
    """An OCI image manifest for test/repo; `push` uploads its config and layer first."""
    config, layer = b"{}", b"layer bytes"
    if push:
        fake.add_blob("test/repo", config)
        fake.add_blob("test/repo", layer)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
    }
    return json.dumps(manifest).encode()


def test_manifest_with_missing_blob_is_rejected(fake):
    body = image_manifest(fake, push=False)
    with client_for(fake) as client:
        response = client.put(
            "/v2/test/repo/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST}
        )
    assert (response.status_code, error_code(response)) == (400, "MANIFEST_BLOB_UNKNOWN")
    assert len(response.json()["errors"][0]["detail"]["missing"]) == 2


def test_manifest_push_and_pull(fake):
    body = image_manifest(fake, push=True)
    digest = sha256_digest(body)
    with client_for(fake) as client:
        pushed = client.put(
            "/v2/test/repo/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST}
        )
        assert pushed.status_code == 201
        assert pushed.headers["Docker-Content-Digest"] == digest
        assert pushed.headers["Location"] == f"/v2/test/repo/manifests/{digest}"
        for ref in ("v1", digest):
            pulled = client.get(f"/v2/test/repo/manifests/{ref}")
            assert (pulled.content, pulled.headers["Content-Type"]) == (body, OCI_MANIFEST)
        head = client.head("/v2/test/repo/manifests/v1")
        assert (head.status_code, head.headers["Content-Length"]) == (200, str(len(body)))
        assert client.get("/v2/test/repo/manifests/v2").status_code == 404


def test_manifest_content_type_and_digest_reference_must_match(fake):
    body = image_manifest(fake, push=True)
    with client_for(fake) as client:
        docker_type = {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}
        wrong_type = client.put("/v2/test/repo/manifests/v1", content=body, headers=docker_type)
        assert (wrong_type.status_code, error_code(wrong_type)) == (400, "MANIFEST_INVALID")
        wrong_digest = client.put(
            f"/v2/test/repo/manifests/{sha256_digest(b'x')}",
            content=body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert (wrong_digest.status_code, error_code(wrong_digest)) == (400, "DIGEST_INVALID")
        by_digest = client.put(
            f"/v2/test/repo/manifests/{sha256_digest(body)}",
            content=body,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert by_digest.status_code == 201
        assert fake.tags == {}


def test_index_with_missing_child_is_rejected(fake):
    child = image_manifest(fake, push=True)
    manifests = [descriptor(OCI_MANIFEST, child)]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
    with client_for(fake) as client:
        missing = client.put(
            "/v2/test/repo/manifests/latest", content=index, headers={"Content-Type": OCI_INDEX}
        )
        assert (missing.status_code, error_code(missing)) == (400, "MANIFEST_BLOB_UNKNOWN")
        client.put(
            f"/v2/test/repo/manifests/{sha256_digest(child)}",
            content=child,
            headers={"Content-Type": OCI_MANIFEST},
        )
        done = client.put(
            "/v2/test/repo/manifests/latest", content=index, headers={"Content-Type": OCI_INDEX}
        )
        assert done.status_code == 201


def test_injected_reply_answers_once_instead_of_the_registry(fake):
    fake.inject(nth("PATCH", 2), Reply(500))
    fake.inject(nth("PATCH", 3), html(503, {"Retry-After": "1"}))
    with client_for(fake) as client:
        location = patch(client, start(client).headers["Location"], 0, b"a" * 4).headers["Location"]
        assert patch(client, location, 4, b"b" * 4).status_code == 500
        busy = patch(client, location, 4, b"b" * 4)
        assert (busy.status_code, busy.headers["Retry-After"]) == (503, "1")
        assert busy.headers["Content-Type"] == "text/html"
        assert patch(client, location, 4, b"b" * 4).status_code == 202  # faults are spent


def test_dropped_connection_before_and_after_handling(fake):
    fake.inject(nth("PATCH", 1), Drop())
    fake.inject(nth("PATCH", 2), Drop(after_handling=True))
    with client_for(fake) as client:
        location = start(client).headers["Location"]
        with pytest.raises(httpx.RemoteProtocolError):
            patch(client, location, 0, b"a" * 4)
        with pytest.raises(httpx.RemoteProtocolError):
            patch(client, location, 0, b"a" * 4)  # lost response: the chunk did arrive
        retried = patch(client, location, 0, b"a" * 4)
        assert (retried.status_code, retried.headers["Range"]) == (416, "0-3")
    assert [record.status for record in fake.log] == [202, None, None, 416]


def test_body_limit_answers_413_html():
    with FakeRegistry(body_limit=8) as fake, client_for(fake) as client:
        location = start(client).headers["Location"]
        response = patch(client, location, 0, b"a" * 9)
        assert response.status_code == 413
        assert response.headers["Content-Type"] == "text/html"
        assert patch(client, location, 0, b"a" * 8).status_code == 202


def test_basic_auth():
    with FakeRegistry(require_basic=("user", "pass")) as fake:
        with client_for(fake) as anonymous:
            denied = anonymous.get("/v2/")
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"] == 'Basic realm="fake"'
        assert error_code(denied) == "UNAUTHORIZED"
        with client_for(fake, auth=("user", "wrong")) as wrong:
            assert wrong.get("/v2/").status_code == 401
        with client_for(fake, auth=("user", "pass")) as authorized:
            assert authorized.get("/v2/").status_code == 200


def test_replies_are_framed_for_keep_alive(fake):
    """Pipelined requests on one connection: a HEAD reply with a body, or a request body left unread,
    would shift every later reply."""
    digest = fake.add_blob("test/repo", b"blob")
    pipelined = (
        f"HEAD /v2/test/repo/blobs/{digest} HTTP/1.1\r\nHost: fake\r\n\r\n"
        "POST /v2/test/repo/blobs/uploads/ HTTP/1.1\r\nHost: fake\r\nTransfer-Encoding: chunked\r\n\r\n"
        "2;ext=1\r\nab\r\n0\r\nTrailer: x\r\n\r\n"
        f"GET /v2/test/repo/blobs/{digest} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(fake.server_address) as sock:
        sock.sendall(pipelined.encode())
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    replies = []
    for method in ("HEAD", "POST", "GET"):
        head, raw = raw.split(b"\r\n\r\n", 1)
        length = 0 if method == "HEAD" else int(re.search(rb"Content-Length: (\d+)", head)[1])
        replies.append((head[:12], raw[:length]))
        raw = raw[length:]
    assert replies == [(b"HTTP/1.1 200", b""), (b"HTTP/1.1 202", b""), (b"HTTP/1.1 200", b"blob")]
    assert raw == b""
    assert fake.log[1].body_length == 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(min_size=1, max_size=4096),
    chunk_size=st.integers(min_value=1, max_value=1024),
    style=st.sampled_from(["relative", "absolute", "state", "rotating"]),
)
def test_any_equal_chunking_uploads_the_right_blob(data, chunk_size, style):
    with FakeRegistry(location_style=style) as fake, client_for(fake) as client:
        finished = push_chunked(client, data, chunk_size)
        assert finished.status_code == 201, finished.text
        assert finished.headers["Docker-Content-Digest"] == sha256_digest(data)
        assert fake.blobs["test/repo"][sha256_digest(data)] == data


def test_concurrent_uploads_are_isolated(fake):
    blobs = [bytes([n]) * (100 + n) for n in range(8)]

    def push(data: bytes) -> int:
        with client_for(fake) as client:
            return push_chunked(client, data, 30, repo=f"repo/n{data[0]}").status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(push, blobs)) == [201] * 8
    assert all(fake.blobs[f"repo/n{data[0]}"] == {sha256_digest(data): data} for data in blobs)
    assert len(fake.log) == sum(2 + -(-len(data) // 30) for data in blobs)
