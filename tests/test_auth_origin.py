"""Credentials stay with the registry's origin (scheme, host, port), over real sockets.

The registry is the strict fake (Basic) or the real distribution registry with the test
token service (Bearer), behind a ``Forwarder`` that plays what an attacker or a CDN
would: it hands out upload ``Location``s on a second loopback port (``storage``) that
records every request it gets and forwards it to the registry with credentials of its
own, as presigned object-storage URLs work.  Every test here failed before the origin
rule: the old flow read a request's scope from its path (``/v2/NAME/blobs/uploads/…`` on
any host got the token) and took a foreign 401's challenge for the registry's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import httpx
import pytest

from ocipush.cli import main
from ocipush.errors import AuthenticationError
from ocipush.push import PushOptions, push
from ocipush.registry.auth import Credentials
from ocipush.registry.client import ClientOptions, RegistryClient
from ocipush.registry.retry import RetryPolicy
from tests.fakeregistry import FakeRegistry
from tests.imagegen import make_layout
from tests.services import start_registry
from tests.tokenserver import Server, ServerReply, ServerRequest, TokenServer

PASSWORD = "Pa55-origin-9c2e-SECRET"
ALICE = Credentials("alice", PASSWORD, source="--creds")
BASIC = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
FAST = RetryPolicy(attempts=1, delay=0.01, max_delay=0.02)


@attrs.frozen
class Seen:
    method: str
    path: str  # with its query
    headers: dict[str, str]  # lower-cased names


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""


class Forwarder(ThreadingHTTPServer):
    """Forwards every request to ``upstream`` (an origin URL) and records it.

    ``inbound(seen)`` may answer by itself (an ``Answer``) instead; ``authorize`` replaces
    the request's Authorization upstream (None: passed as it came); ``location(value)``
    rewrites the answer's Location (by default, the upstream's origin becomes ours);
    ``prefix`` is stripped from paths that start with it.
    """

    daemon_threads = True

    def __init__(self, upstream: str, *, authorize: Callable[[Seen], str | None] | None = None,
                 location: Callable[[str], str] | None = None, prefix: str = "",
                 inbound: Callable[[Seen], Answer | None] = lambda seen: None):
        super().__init__(("127.0.0.1", 0), _ForwardHandler)
        self.upstream, self.authorize, self.rewrite, self.prefix = upstream, authorize, location, prefix
        self.inbound = inbound
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.rewrite = location or (lambda value: value.replace(self.upstream, self.url, 1))  # answers come back here
        self.host = self.url.removeprefix("http://")
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        self.http = httpx.Client(timeout=30)
        self._thread = threading.Thread(target=self.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> Forwarder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self.http.close()

    def handle_error(self, request, client_address) -> None:  # a client that hung up: the test's business
        import sys
        self.errors.append(repr(sys.exc_info()[1]))

    def authorized(self) -> list[Seen]:
        return [s for s in self.seen if "authorization" in s.headers]

    def forward(self, seen: Seen, body: bytes) -> Answer:
        answer = self.inbound(seen)
        if answer is not None:
            return answer
        headers = {k: v for k, v in seen.headers.items() if k not in ("host", "connection", "authorization")}
        authorization = self.authorize(seen) if self.authorize else seen.headers.get("authorization")
        if authorization:
            headers["authorization"] = authorization
        path = seen.path.removeprefix(self.prefix) if self.prefix and seen.path.startswith(self.prefix) else seen.path
        response = self.http.request(seen.method, self.upstream + path, headers=headers, content=body)
        out = {k: v for k, v in response.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")}
        if "location" in response.headers:
            out = {k: v for k, v in out.items() if k.lower() != "location"}
            out["Location"] = self.rewrite(response.headers["location"])
        return Answer(response.status_code, out, response.content)


class _ForwardHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Forwarder

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
        self.server.seen.append(seen)
        answer = self.server.forward(seen, body)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


def on_origin(origin: str, prefix: str = "") -> Callable[[str], str]:
    """A Location rewriter: upload Locations move to ``origin`` (under ``prefix``)."""

    def rewrite(value: str) -> str:
        parts = urlsplit(value)
        if "/blobs/uploads/" not in parts.path:
            return value
        return f"{origin}{prefix}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    return rewrite


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("image"), [3000, 5000], ref="v1")


def stored(fake: FakeRegistry, repo: str, info) -> None:
    for layer in [info.config, *info.layers]:
        assert "sha256:" + hashlib.sha256(fake.blobs[repo][layer.digest]).hexdigest() == layer.digest
    assert fake.tags[repo][info.ref] == info.digest


def run(image, destination: str, capsys) -> tuple[int, str]:
    """The CLI's exit code and stderr, with the password on stdin."""
    code = main([f"oci:{image.layout}:v1", destination, "--creds", f"alice:{PASSWORD}", "--retry", "1",
                 "--retry-delay", "10ms"])
    return code, capsys.readouterr().err


# -- Basic, against the strict fake ---------------------------------------------------


def test_upload_location_on_another_origin_gets_no_credentials(image):
    """Presigned-URL style: the upload goes to storage, which the registry trusts by
    itself; the user's password never reaches it, and the push works."""
    with FakeRegistry(require_basic=("alice", PASSWORD), location_style="absolute") as fake, \
            Forwarder(fake.url, authorize=lambda seen: BASIC) as storage, \
            Forwarder(fake.url, location=on_origin(storage.url)) as registry:
        push(f"oci:{image.layout}", f"{registry.host}/r:v1", PushOptions(credentials=ALICE, retry=FAST))
        stored(fake, "r", image)
        assert {s.method for s in storage.seen} >= {"PATCH", "PUT"}
        assert storage.authorized() == []
        assert all(s.headers.get("authorization") in (None, BASIC) for s in registry.seen)


def test_same_origin_location_outside_v2_is_authorized(image):
    """The spec calls Location opaque: /storage/v2/… on the registry's own origin is the
    registry's, and gets credentials although its path is not an API path."""
    with FakeRegistry(require_basic=("alice", PASSWORD), location_style="absolute") as fake:
        front: list[Forwarder] = []
        with Forwarder(fake.url, prefix="/storage",
                       location=lambda value: on_origin(front[0].url, "/storage")(value)) as registry:
            front.append(registry)
            push(f"oci:{image.layout}", f"{registry.host}/r:v1", PushOptions(credentials=ALICE, retry=FAST))
        stored(fake, "r", image)
        outside = [s for s in registry.seen if s.path.startswith("/storage/")]
        assert {s.method for s in outside} >= {"PATCH", "PUT"}
        assert all(s.headers.get("authorization") == BASIC for s in outside)


@pytest.mark.parametrize("challenge", [
    "Bearer realm=\"{storage}/token\",service=\"evil\"",
    "Basic realm=\"storage\"",
])
def test_a_401_from_another_origin_is_never_answered(image, capsys, challenge):
    """Storage asks for credentials, naming itself as the token realm: a clean error, no
    token request, no Authorization, no password anywhere but the registry."""
    def refuse(seen: Seen) -> Answer:
        return Answer(401, {"WWW-Authenticate": challenge.format(storage=storage.url)})

    with FakeRegistry(require_basic=("alice", PASSWORD), location_style="absolute") as fake, \
            Forwarder(fake.url, inbound=refuse) as storage, \
            Forwarder(fake.url, location=on_origin(storage.url)) as registry:
        code, err = run(image, f"{registry.host}/r:v1", capsys)
    assert code == 5, err
    assert err.count("\n") == 1 and err.startswith("ocipush: ") and "Traceback" not in err
    assert f"{storage.url.removeprefix('http://').split(':')[0]} asked for credentials" in err
    assert f"only to the registry {registry.host}" in err and PASSWORD not in err
    assert storage.authorized() == [] and not [s for s in storage.seen if s.path.startswith("/token")]
    # Each blob's PATCH was refused once and never sent again with anything; its upload cancelled.
    assert {s.method for s in storage.seen} == {"PATCH", "DELETE"}


# -- Bearer, against the real registry and token service ------------------------------


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    server = TokenServer(tmp_path_factory.mktemp("tokens"), users={"alice": PASSWORD})
    with server, start_registry(tmp_path_factory.mktemp("registry"), server.registry_config()) as registry:
        yield server, registry


@pytest.mark.integration
def test_bearer_upload_on_another_origin_gets_no_token(image, token_registry):
    """The token is the registry's: storage (which fetches a token of its own, as a
    presigned URL carries its own signature) never sees ours, and the image arrives."""
    tokens, real = token_registry
    http = httpx.Client()

    def storage_token(seen: Seen) -> str:
        repo = seen.path.split("/blobs/")[0].removeprefix("/v2/")
        answer = http.get(tokens.realm, params={"scope": f"repository:{repo}:pull,push",
                                                "service": tokens.service}, auth=("alice", PASSWORD))
        return f"Bearer {answer.json()['token']}"

    with Forwarder(real.url, authorize=storage_token) as storage, \
            Forwarder(real.url, location=on_origin(storage.url)) as registry:
        tokens.requests.clear()
        push(f"oci:{image.layout}", f"{registry.host}/team/app:v1", PushOptions(credentials=ALICE, retry=FAST))
        ours = [s.headers["authorization"] for s in registry.authorized()]
    http.close()
    assert {s.method for s in storage.seen} >= {"PATCH", "PUT"} and storage.authorized() == []
    assert ours and all(a.startswith("Bearer ") for a in ours)
    manifest = httpx.get(f"{real.url}/v2/team/app/manifests/v1", auth=_TokenAuth(tokens, "team/app"),
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert manifest.status_code == 200 and hashlib.sha256(manifest.content).hexdigest() == image.digest[7:]


class _TokenAuth(httpx.Auth):
    def __init__(self, tokens: TokenServer, repo: str):
        self.tokens, self.repo = tokens, repo

    def auth_flow(self, request):
        answer = httpx.get(self.tokens.realm, params={"scope": f"repository:{self.repo}:pull",
                                                      "service": self.tokens.service}, auth=("alice", PASSWORD))
        request.headers["Authorization"] = f"Bearer {answer.json()['token']}"
        yield request


# -- redirects on GET/HEAD ------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_redirect_to_another_origin_carries_nothing_and_its_401_is_not_ours(method):
    """httpx drops Authorization on a cross-origin redirect; a 401 there, with a realm of
    its own, is an error naming that host, and does not replace the registry's challenge."""
    tokens: list[ServerRequest] = []

    def storage_answer(request: ServerRequest) -> ServerReply:
        if request.path == "/free":
            return ServerReply(200)
        return ServerReply(401, {"WWW-Authenticate": f'Bearer realm="{storage.url}/token",service="s"'})

    def registry_answer(request: ServerRequest) -> ServerReply:
        if request.path == "/token":
            tokens.append(request)
            return ServerReply.json(200, {"token": "registry-token", "expires_in": 300})
        if request.headers.get("authorization") != "Bearer registry-token":
            return ServerReply(401, {"WWW-Authenticate": f'Bearer realm="{registry.url}/token",service="r"'})
        target = "free" if request.path.endswith(":1") else "locked"
        return ServerReply(307, {"Location": f"{storage.url}/{target}?sig=x"})

    with (
        Server(storage_answer) as storage,
        Server(registry_answer) as registry,
        RegistryClient(registry.url.removeprefix("http://"), ClientOptions(credentials=ALICE), loopback=True) as client,
    ):
        client.connect()
        assert client.request(method, client.url("/v2/team/app/blobs/sha256:1"), expect=(200,),
                              follow_redirects=True).status_code == 200
        with pytest.raises(AuthenticationError, match=(
                rf"^127\.0\.0\.1 asked for credentials \({method} {storage.url}/locked\?…\); "
                rf"ocipush sends them only to the registry {client.host}$")):
            client.request(method, client.url("/v2/team/app/blobs/sha256:2"), expect=(200,),
                           follow_redirects=True)
        # The registry's own challenge still rules: its token serves the next request.
        client.request(method, client.url("/v2/team/app/blobs/sha256:1"), expect=(200,),
                       follow_redirects=True)
    assert len(tokens) == 1 and tokens[0].headers["authorization"] == BASIC
    assert [r.path for r in storage.seen] == ["/free", "/locked", "/free"]
    assert all("authorization" not in r.headers for r in storage.seen)


# -- an endless token answer, end to end ----------------------------------------------


class _EndlessTokenHandler(BaseHTTPRequestHandler):
    """A registry whose token service streams a chunked body that never ends."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        host = self.headers["Host"]
        if self.path.startswith("/token"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b'{"token": "' + b"a" * 65536
            try:
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
            except OSError:
                return
        body = b'{"errors": [{"code": "UNAUTHORIZED"}]}'
        self.send_response(401)
        self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",service="r"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_endless_token_answer_ends_the_push_cleanly(image, tmp_path):
    """In a process of its own, so that the old code's hang is a failed test, not a stuck run."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EndlessTokenHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    # VmHWM is the child's own peak since exec: getrusage's ru_maxrss would also count the
    # pytest process it was spawned from (Linux carries the old image's peak across exec).
    script = ("import sys; from ocipush.cli import main; code = main(sys.argv[1:]); "
              "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]; "
              "sys.stderr.write(f'maxrss={hwm}\\n'); sys.exit(code)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "HOME": str(tmp_path)}
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, f"oci:{image.layout}:v1", f"{host}/team/app:v1", "--creds",
             f"alice:{PASSWORD}", "--retry", "0"],
            capture_output=True, text=True, timeout=30, env=env)
    finally:
        server.shutdown()
        server.server_close()
    *lines, rss = result.stderr.splitlines()
    assert result.returncode == 4, result.stderr
    assert lines == [f"ocipush: {host}: the token service http://{host}/token: "
                     "the answer's body exceeds 1048576 bytes; refused"]
    assert int(rss.removeprefix("maxrss=")) < 300 * 1024  # KiB
