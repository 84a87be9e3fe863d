"""The auth flow against a scripted registry and token service (httpx MockTransport), and
redirects to another host against real in-process servers."""

from __future__ import annotations

import base64
import threading
import time
from urllib.parse import parse_qs

import httpx
import pytest

from ocipush.errors import AuthenticationError, RegistryError
from ocipush.registry import auth as auth_module
from ocipush.registry.auth import Credentials, RegistryAuth, Scope
from ocipush.registry.client import ClientOptions, RegistryClient
from tests.helpers import ALICE, REALM, REGISTRY
from tests.tokenserver import Server, ServerReply, ServerRequest


class Registry:
    """A registry at ``base`` wanting ``scheme`` auth, with its token service at ``realm``.

    Tokens are ``tok-N``; the registry accepts those in ``valid`` (a test revokes them
    by clearing it).  Anonymous tokens may only read.
    """

    def __init__(self, scheme: str = "bearer", *, base: str = REGISTRY, realm: str = REALM,
                 token_field: str = "token", expires_in: float = 300, token_delay: float = 0.0):
        self.scheme, self.base, self.realm = scheme, base, realm
        self.token_field, self.expires_in = token_field, expires_in
        self.token_delay = token_delay
        self.valid: set[str] = set()
        self.seen: list[tuple[str, str | None]] = []  # (method, Authorization) as each request arrived
        self.token_calls: list[httpx.Request] = []
        self.bodies: list[bytes] = []  # PATCH bodies that arrived
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if str(request.url.copy_with(query=None)) == self.realm:
            return self._token(request)
        with self._lock:
            self.seen.append((request.method, request.headers.get("Authorization")))
        if request.method == "PATCH":
            self.bodies.append(request.read())
        if request.url.path == "/v2/" or not self._allowed(request):
            return httpx.Response(401, headers={"WWW-Authenticate": self._challenge()})
        return httpx.Response(202 if request.method == "PATCH" else 200)

    def _challenge(self) -> str:
        if self.scheme == "basic":
            return 'Basic realm="test"'
        return f'Bearer realm="{self.realm}",service="registry.example.com"'

    def _allowed(self, request: httpx.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.scheme == "basic":
            return header == ALICE.basic_header()
        token = header.removeprefix("Bearer ")
        return token in self.valid and (not token.endswith("-anonymous") or request.method in ("GET", "HEAD"))

    def _token(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self.token_delay)
        with self._lock:
            self.token_calls.append(request)
            n = len(self.token_calls)
        if request.method == "POST":
            ok = parse_qs(request.read().decode()).get("refresh_token") == ["refresh-1"]
            anonymous = False
        else:
            header = request.headers.get("Authorization")
            ok = header in (None, ALICE.basic_header())
            anonymous = header is None
        if not ok:
            return httpx.Response(401, json={"details": "incorrect username or password"})
        token = f"tok-{n}" + ("-anonymous" if anonymous else "")
        self.valid.add(token)
        return httpx.Response(200, json={self.token_field: token, "expires_in": self.expires_in})


def client(registry: Registry, credentials: Credentials | None = ALICE, *, insecure: bool = False) -> httpx.Client:
    host = httpx.URL(registry.base).netloc.decode()
    return httpx.Client(transport=httpx.MockTransport(registry),
                        auth=RegistryAuth(host, lambda repository: credentials, insecure=insecure))


class Body:
    """A replayable request body, as upload chunks are (not a generator)."""

    def __iter__(self):
        return iter([b"a" * 1000, b"b" * 1000])


def test_basic_goes_up_front_after_the_ping():
    registry = Registry("basic")
    with client(registry) as http:
        assert http.get(f"{REGISTRY}/v2/").status_code == 401
        assert http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1").status_code == 200
    assert [auth for _, auth in registry.seen] == [None, ALICE.basic_header()]


def test_basic_challenge_then_credentials():
    registry = Registry("basic")
    with client(registry) as http:
        assert http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1").status_code == 200
        assert http.patch(f"{REGISTRY}/v2/team/app/blobs/uploads/1", content=Body()).status_code == 202
    assert len(registry.seen) == 3 and registry.bodies == [b"a" * 1000 + b"b" * 1000]


def test_refused_basic_credentials_are_one_line_without_the_password():
    registry = Registry("basic")
    wrong = Credentials("alice", "wrong-s3cret", source="--creds")
    with client(registry, wrong) as http, pytest.raises(AuthenticationError) as e:
        http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1")
    assert str(e.value) == ("registry.example.com: authentication failed: the registry refused "
                            "user 'alice' (from --creds) for team/app")
    assert e.value.exit_code == 5


def test_no_credentials_leaves_the_401_to_the_caller():
    registry = Registry("basic")
    with client(registry, None) as http:
        assert http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1").status_code == 401


def test_bearer_token_per_scope_with_basic_to_the_realm():
    registry = Registry()
    with client(registry) as http:
        http.get(f"{REGISTRY}/v2/")
        for path in ("blobs/sha256:1", "manifests/v1", "blobs/sha256:2"):
            assert http.head(f"{REGISTRY}/v2/team/app/{path}").status_code == 200
        assert http.head(f"{REGISTRY}/v2/team/other/blobs/sha256:1").status_code == 200
    first, second = registry.token_calls
    assert first.method == "GET" and first.headers["Authorization"] == ALICE.basic_header()
    assert first.url.params.multi_items() == [
        ("scope", "repository:team/app:pull,push"), ("service", "registry.example.com"), ("account", "alice")]
    assert second.url.params["scope"] == "repository:team/other:pull,push"
    # Every request after the ping carried a token: none was sent only to be refused.
    assert all(auth.startswith("Bearer ") for _, auth in registry.seen[1:])


@pytest.mark.parametrize("path, repository", [
    ("/v2/team/app/blobs/uploads/", "team/app"), ("/v2/team/app/blobs/uploads/1f2e?_state=x", "team/app"),
    ("/v2/a/blobs/sha256:1", "a"), ("/v2/team/blobs/manifests/v1", "team/blobs"), ("/v2/x/tags/list", "x"),
    ("/v2/x/referrers/sha256:1", "x"), ("/v2/", None), ("/v2/_catalog", None),
])
def test_scope_of_a_request(path, repository):
    scope = Scope.of(httpx.URL(f"{REGISTRY}{path}"))
    assert (scope and scope.repository) == repository


def test_mount_asks_for_pull_on_the_source_too():
    registry = Registry()
    with client(registry) as http:
        http.post(f"{REGISTRY}/v2/team/app/blobs/uploads/?mount=sha256:1&from=lib/base")
    assert registry.token_calls[0].url.params.get_list("scope") == [
        "repository:team/app:pull,push", "repository:lib/base:pull"]


@pytest.mark.parametrize("field", ["token", "access_token"])
def test_token_or_access_token_and_expires_in(field, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(auth_module.time, "monotonic", lambda: now[0])
    registry = Registry(token_field=field, expires_in=4)
    with client(registry) as http:
        http.get(f"{REGISTRY}/v2/")
        url = f"{REGISTRY}/v2/team/app/blobs/sha256:1"
        assert http.head(url).status_code == 200
        now[0] += 1.5
        assert http.head(url).status_code == 200 and len(registry.token_calls) == 1
        now[0] += 1.0  # past half the lifetime: renewed before the request, not after a 401
        assert http.head(url).status_code == 200 and len(registry.token_calls) == 2
    assert [auth for _, auth in registry.seen[1:]] == ["Bearer tok-1"] * 2 + ["Bearer tok-2"]


def test_identity_token_is_an_oauth2_refresh_token():
    registry = Registry()
    with client(registry, Credentials("", identity_token="refresh-1", source="docker-credential-x")) as http:
        assert http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1").status_code == 200
    (call,) = registry.token_calls
    assert call.method == "POST" and "Authorization" not in call.headers
    assert parse_qs(call.content.decode()) == {
        "grant_type": ["refresh_token"], "refresh_token": ["refresh-1"], "client_id": ["ocipush"],
        "scope": ["repository:team/app:pull,push"], "service": ["registry.example.com"]}


def test_token_refused_mid_upload_renews_and_resends_that_chunk():
    registry = Registry()
    with client(registry) as http:
        http.get(f"{REGISTRY}/v2/")
        url = f"{REGISTRY}/v2/team/app/blobs/uploads/1"
        assert http.patch(url, content=Body()).status_code == 202
        registry.valid.clear()  # the registry no longer takes the token the client holds
        assert http.patch(url, content=Body()).status_code == 202
    whole = b"a" * 1000 + b"b" * 1000
    assert registry.bodies == [whole, whole, whole]  # the refused chunk was sent again, whole
    assert len(registry.token_calls) == 2
    assert [auth for _, auth in registry.seen[1:]] == ["Bearer tok-1"] * 2 + ["Bearer tok-2"]


def test_parallel_uploads_share_one_renewal():
    registry = Registry(token_delay=0.2)
    with client(registry) as http:
        http.get(f"{REGISTRY}/v2/")
        http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:0")
        registry.valid.clear()
        statuses = []
        threads = [threading.Thread(target=lambda i=i: statuses.append(
            http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:{i}").status_code)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 4 and len(registry.token_calls) == 2


def test_anonymous_push_refused_names_the_way_out():
    registry = Registry()
    with client(registry, None) as http:
        assert http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1").status_code == 200  # anonymous pull
        with pytest.raises(AuthenticationError, match="anonymous access to team/app refused; give --creds"):
            http.post(f"{REGISTRY}/v2/team/app/blobs/uploads/")


def test_token_service_refusal_and_failure():
    registry = Registry()
    with client(registry, Credentials("alice", "wrong", source="/h/auth.json")) as http, pytest.raises(
            AuthenticationError, match=(
                "registry.example.com: authentication failed: the token service https://auth.example.com/token "
                r"refused user 'alice' \(from /h/auth.json\)$")):
        http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1")
    registry = Registry(token_field="tokens")
    with client(registry) as http:
        with pytest.raises(RegistryError, match="answered 200 OK without a usable token") as e:
            http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1")
        assert not isinstance(e.value, AuthenticationError)


@pytest.mark.parametrize("scheme, base, realm, insecure, allowed", [
    ("basic", "http://registry.example.com", REALM, False, False),
    ("basic", "http://registry.example.com", REALM, True, True),  # the user made it insecure
    ("basic", "http://127.0.0.1:5000", REALM, False, True),  # this machine
    ("bearer", REGISTRY, "http://auth.example.com/token", False, False),  # the realm is checked too
    ("bearer", "http://localhost:5000", "http://localhost:9000/token", False, True),
])
def test_credentials_over_plain_http(scheme, base, realm, insecure, allowed):
    registry = Registry(scheme, base=base, realm=realm)
    with client(registry, insecure=insecure) as http:
        url = f"{base}/v2/team/app/blobs/sha256:1"
        if allowed:
            assert http.head(url).status_code == 200
        else:
            with pytest.raises(AuthenticationError, match="refusing to send credentials over plain HTTP"):
                http.head(url)
            assert not registry.token_calls and all(auth is None for _, auth in registry.seen)


# -- redirects to another host, over real sockets ------------------------------------


@pytest.mark.parametrize("storage_status", [200, 401])
def test_redirect_to_another_host_carries_no_credentials(storage_status):
    """A blob redirected to object storage: httpx drops Authorization on the way, and a
    401 from storage (with a challenge of its own) is not answered with our credentials."""

    def storage_answer(request: ServerRequest) -> ServerReply:
        return ServerReply(storage_status, {"WWW-Authenticate": f'Bearer realm="{storage.url}/token"'}
                           if storage_status == 401 else {})

    tokens = []

    def registry_answer(request: ServerRequest) -> ServerReply:
        if request.path == "/token":
            tokens.append(request)
            return ServerReply.json(200, {"token": "registry-token"})
        if request.headers.get("authorization") != "Bearer registry-token":
            return ServerReply(401, {"WWW-Authenticate": f'Bearer realm="{registry.url}/token",service="r"'})
        return ServerReply(307, {"Location": f"{storage.url.replace('127.0.0.1', 'localhost')}/blob?sig=x"})

    with Server(storage_answer) as storage, Server(registry_answer) as registry:
        host = registry.url.removeprefix("http://")
        with RegistryClient(host, ClientOptions(credentials=ALICE), loopback=True) as c:
            c.connect()
            url = c.url("/v2/team/app/blobs/sha256:1")
            if storage_status == 200:
                c.request("GET", url, expect=(200,), follow_redirects=True)
            else:
                with pytest.raises(AuthenticationError):
                    c.request("GET", url, expect=(200,), follow_redirects=True)
    assert len(tokens) == 1 and tokens[0].headers["authorization"] == "Basic " + base64.b64encode(
        b"alice:pw-alice").decode()
    assert [r.path for r in storage.seen] == ["/blob"]  # never its token endpoint
    assert "authorization" not in storage.seen[0].headers


@pytest.mark.parametrize("url, ours", [
    ("https://registry.example.com:443/v2/team/app/blobs/uploads/1", True),  # the default port, spelled out
    ("https://REGISTRY.example.com/elsewhere/upload/1", True),  # outside /v2/: still the registry's
    ("http://registry.example.com/v2/team/app/blobs/uploads/1", False),  # bound to HTTPS
    ("https://registry.example.com:8443/v2/team/app/blobs/uploads/1", False),
    ("https://storage.example.com/v2/team/app/blobs/uploads/1", False),  # a /v2/ path proves nothing
    ("https://registry.example.com.evil.net/v2/team/app/blobs/uploads/1", False),
])
def test_only_the_bound_origin_gets_credentials(url, ours):
    registry = Registry()
    seen = {}

    def transport(request: httpx.Request) -> httpx.Response:
        ours_or_realm = auth_module.origin_of(request.url) in (
            ("https", "registry.example.com", 443), ("https", "auth.example.com", 443))
        if not ours_or_realm:
            seen[str(request.url)] = request.headers.get("Authorization")
            return httpx.Response(202)
        return registry(request)

    auth = RegistryAuth("registry.example.com", lambda repository: ALICE)
    auth.bind(REGISTRY)
    with httpx.Client(transport=httpx.MockTransport(transport), auth=auth) as http:
        http.get(f"{REGISTRY}/v2/")
        http.patch(url, content=b"x", extensions=auth_module.for_repository("team/app"))
    if ours:
        assert registry.seen[-1] == ("PATCH", "Bearer tok-1")
    else:
        assert seen == {url: None} and len(registry.token_calls) == 0
