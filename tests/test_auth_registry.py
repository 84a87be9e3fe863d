"""Authentication against the real distribution registry: ``auth: htpasswd`` (Basic, with a
bcrypt file made here) and ``auth: token`` (JWTs from tests/tokenserver.py that the
registry verifies against their signing certificate)."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from ocipush.cli import main
from ocipush.push import PushOptions, push
from ocipush.registry.auth import Credentials
from ocipush.report import Reporter
from tests.imagegen import LayerSpec, make_layout
from tests.services import start_registry
from tests.tokenserver import TokenServer, htpasswd_auth
from tests.userconfig import auth_entry

pytestmark = pytest.mark.integration

# Distinctive, so a leak anywhere in the output is found by a plain search.
PASSWORD = "Pa55-ocipush-7f3a9-SECRET"
REFRESH_TOKEN = "refresh-ocipush-c41d-SECRET"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("image"), [3000, 5000], ref="v1")


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("htpasswd-registry")
    with start_registry(workdir, htpasswd_auth(workdir, {"alice": PASSWORD})) as registry:
        yield registry


@pytest.fixture(scope="module")
def token_service(tmp_path_factory):
    server = TokenServer(tmp_path_factory.mktemp("tokens"), users={"alice": PASSWORD},
                         refresh_tokens={REFRESH_TOKEN: "alice"})
    with server, start_registry(tmp_path_factory.mktemp("token-registry"), server.registry_config()) as registry:
        yield server, registry


@pytest.fixture
def tokens(token_service):
    """The token server with default lifetimes and empty logs; a test may change them."""
    server, _ = token_service
    server.valid_for, server.expires_in = 300, 300
    server.requests.clear()
    yield server


@pytest.fixture
def token_registry(token_service):
    return token_service[1]


def ocipush(image, destination: str, *args: str) -> int:
    return main([f"oci:{image.layout}:v1", destination, "--jobs", "2", *args])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def pulled_digest(host: str, repo: str, tag: str, auth: httpx.Auth | tuple[str, str]) -> str:
    response = httpx.get(f"http://{host}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT}, auth=auth)
    assert response.status_code == 200, response.text
    return "sha256:" + hashlib.sha256(response.content).hexdigest()


class _Bearer(httpx.Auth):
    """Just enough of a client to read back what a test pushed to the token registry."""

    def __init__(self, server: TokenServer, repo: str):
        self.params = {"service": server.service, "scope": f"repository:{repo}:pull"}
        self.realm = server.realm

    def auth_flow(self, request):
        token = httpx.get(self.realm, params=self.params, auth=("alice", PASSWORD)).json()["token"]
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


# -- Basic (htpasswd) ---------------------------------------------------------------


def test_basic_push_with_creds(basic_registry, image, repo, capsys, user_config):
    assert ocipush(image, f"{basic_registry.host}/{repo}:v1", "--creds", f"alice:{PASSWORD}") == 0
    assert capsys.readouterr().out.strip() == f"{basic_registry.host}/{repo}@{image.digest}"
    assert pulled_digest(basic_registry.host, repo, "v1", ("alice", PASSWORD)) == image.digest


def test_basic_wrong_password_is_one_line_and_exit_5(basic_registry, image, repo, capsys, user_config):
    assert ocipush(image, f"{basic_registry.host}/{repo}:v1", "--creds", "alice:not-the-password") == 5
    assert error_line(capsys) == (f"ocipush: {basic_registry.host}: authentication failed: the registry refused "
                                  f"user 'alice' (from --creds) for {repo}")


def test_basic_without_credentials(basic_registry, image, repo, capsys, user_config):
    assert ocipush(image, f"{basic_registry.host}/{repo}:v1") == 5
    line = error_line(capsys)
    assert line.startswith(f"ocipush: {basic_registry.host}: authentication failed") and "--creds" in line


def test_basic_login_from_podman_auth_file_by_namespace(basic_registry, image, repo, capsys, user_config):
    host = basic_registry.host
    user_config.write_json(user_config.runtime_auth, {"auths": {
        host: auth_entry("alice", "wrong-for-the-host"),  # a shorter prefix: must lose
        f"{host}/team": auth_entry("alice", PASSWORD),
    }})
    assert ocipush(image, f"{host}/team/{repo}:v1") == 0, capsys.readouterr().err
    assert pulled_digest(host, f"team/{repo}", "v1", ("alice", PASSWORD)) == image.digest
    capsys.readouterr()
    assert ocipush(image, f"{host}/{repo}:v1") == 5
    assert f"refused user 'alice' (from {user_config.runtime_auth})" in error_line(capsys)


def test_basic_login_from_a_docker_credential_helper(basic_registry, image, repo, capsys, user_config):
    log = user_config.install_helper("test", {basic_registry.host: ("alice", PASSWORD)})
    user_config.write_json(user_config.docker_config, {"credHelpers": {basic_registry.host: "test"}})
    assert ocipush(image, f"{basic_registry.host}/{repo}:v1") == 0, capsys.readouterr().err
    assert log.read_text() == f"get {basic_registry.host}\n"  # asked once for the whole push


def test_authfile_option(basic_registry, image, repo, capsys, user_config, tmp_path):
    user_config.write_json(user_config.docker_config, {"auths": {basic_registry.host: auth_entry("alice", "old")}})
    login = {"auths": {basic_registry.host: auth_entry("alice", PASSWORD)}}
    authfile = user_config.write_json(tmp_path / "a.json", login)
    assert ocipush(image, f"{basic_registry.host}/{repo}:v1", "--authfile", str(authfile)) == 0
    capsys.readouterr()
    assert ocipush(image, f"{basic_registry.host}/{repo}:v1", "--authfile", str(tmp_path / "none.json")) == 2
    assert error_line(capsys) == f"ocipush: --authfile {tmp_path / 'none.json'}: no such file"


# -- Bearer tokens (auth: token) ----------------------------------------------------


def test_token_push_with_password_stdin(tokens, token_registry, image, repo, capsys, monkeypatch, user_config):
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert ocipush(image, f"{token_registry.host}/{repo}:v1", "--username", "alice", "--password-stdin") == 0
    assert {(r.grant, r.user, r.scopes) for r in tokens.requests} == {
        ("basic", "alice", (f"repository:{repo}:pull,push",))}
    assert pulled_digest(token_registry.host, repo, "v1", _Bearer(tokens, repo)) == image.digest


def test_token_wrong_password(tokens, token_registry, image, repo, capsys, user_config):
    assert ocipush(image, f"{token_registry.host}/{repo}:v1", "--creds", "alice:wrong") == 5
    assert error_line(capsys) == (f"ocipush: {token_registry.host}: authentication failed: the token service "
                                  f"{tokens.realm} refused user 'alice' (from --creds)")


def test_token_anonymous_push_refused(tokens, token_registry, image, repo, capsys, user_config):
    assert ocipush(image, f"{token_registry.host}/{repo}:v1") == 5
    line = error_line(capsys)
    assert f"{token_registry.host}: authentication failed: anonymous access to {repo} refused" in line
    assert "give --creds, or log in" in line


def test_token_identity_token_from_docker_config(tokens, token_registry, image, repo, capsys, user_config):
    user_config.write_json(user_config.docker_config, {"auths": {
        token_registry.host: auth_entry("alice", "", identitytoken=REFRESH_TOKEN)}})
    assert ocipush(image, f"{token_registry.host}/{repo}:v1") == 0, capsys.readouterr().err
    assert {(r.method, r.grant) for r in tokens.requests} == {("POST", "refresh_token")}


class _PausingReporter(Reporter):
    """Pauses the push once, after the layer's first chunk, until the wall-clock time
    ``until()`` gives then: the push outlives exactly the token moment a test is about,
    however fast or slow the machine is (a pause per MiB only made that likely)."""

    def __init__(self, until: Callable[[], float]):
        self.until = until
        self.paused = threading.Event()

    def blob_position(self, desc, offset: int) -> None:
        if desc.size > _CHUNK and offset >= _CHUNK and not self.paused.is_set():
            self.paused.set()
            time.sleep(max(0.0, self.until() - time.time()))


_CHUNK = 1 << 20


def _paused_push(image_dir, host: str, repo: str, until: Callable[[], float]):
    layout = make_layout(image_dir, [LayerSpec(6_000_000)], ref="v1")
    options = PushOptions(chunk_size=_CHUNK, jobs=1, credentials=Credentials("alice", PASSWORD))
    reporter = _PausingReporter(until)
    push(f"oci:{layout.layout}:v1", f"{host}/{repo}:v1", options, reporter)
    assert reporter.paused.is_set(), "the layer went up in one chunk: nothing was paused"
    return layout


def test_token_expiring_mid_push_renews_and_resends_only_that_chunk(
        tokens, token_registry, make_proxy, repo, tmp_path, user_config):
    # The registry takes each token for a second or two, but the answer promises 300 s:
    # only the registry's 401 can tell the client.
    tokens.valid_for, tokens.expires_in = 1, 300
    proxy = make_proxy(upstream=token_registry, headers=None)
    mark = proxy.mark()
    # Mid-layer, wait until the registry refuses the token the push is using: it compares
    # whole seconds (refused once the clock's second is past refused_from), hence + 1.1.
    layout = _paused_push(tmp_path, proxy.host, repo, until=lambda: tokens.refused_from[-1] + 1.1)
    requests = proxy.requests(mark)
    # The registry refused the old token after the pause: on the next PATCH, or (when the
    # chunk in flight through the pause was cut, a 502 from nginx) on the status GET that
    # follows it. Either way the client renewed the token and went on with the same upload.
    refused = [r for r in requests if r.status == 401 and r.path != "/v2/"]
    assert refused, "the push outlived no token: make it slower"
    patches = [(r.status, r.content_range) for r in requests if r.method == "PATCH"]
    accepted = Counter(rng for status, rng in patches if status == 202)
    assert all(n == 1 for n in accepted.values())
    # Each chunk that did not pass was sent again right away: no restarted upload.
    for i, (status, rng) in enumerate(patches):
        if status != 202:
            assert patches[i + 1] == (202, rng), patches
    assert [r.method for r in proxy.requests(mark)].count("POST") == 2  # config and layer, once each
    assert len(tokens.requests) >= 2
    assert pulled_digest(token_registry.host, repo, "v1", _Bearer(tokens, repo)) == layout.digest


def test_token_expires_in_is_renewed_before_the_registry_refuses(
        tokens, token_registry, make_proxy, repo, tmp_path, user_config):
    tokens.valid_for, tokens.expires_in = 3, 2  # renewed after 1 s, 2 s before the registry would refuse
    proxy = make_proxy(upstream=token_registry, headers=None)
    mark = proxy.mark()
    issued: list[int] = []

    def renewal_due() -> float:
        # Mid-layer, wait past the client's renewal time (1 s after issue), well before the
        # registry would refuse (3 s after): the next chunk must go with a new token.
        issued.append(len(tokens.requests))
        return tokens.issued_at[-1] + 1.5

    _paused_push(tmp_path, proxy.host, repo, until=renewal_due)
    statuses = [r.status for r in proxy.requests(mark) if r.path != "/v2/"]
    assert 401 not in statuses
    assert len(tokens.requests) > issued[0], "no token was asked for after the pause"


# -- no secret in any output --------------------------------------------------------


def test_no_secret_is_ever_printed_or_logged(tokens, token_registry, basic_registry, image, repo, capsys, caplog,
                                             monkeypatch, user_config):
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included: the most there is
    tokens.issued.clear()
    assert ocipush(image, f"{token_registry.host}/{repo}:v1", "--creds", f"alice:{PASSWORD}") == 0
    assert ocipush(image, f"{basic_registry.host}/{repo}:v1", "--creds", f"alice:{PASSWORD}") == 0
    assert ocipush(image, f"{basic_registry.host}/{repo}:v1", "--creds", f"bob:{PASSWORD}") == 5
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert ocipush(image, f"{token_registry.host}/{repo}:v1", "--username", "mallory", "--password-stdin") == 5
    user_config.write_json(user_config.runtime_auth, {"auths": {
        token_registry.host: auth_entry("alice", "", identitytoken=REFRESH_TOKEN)}})
    assert ocipush(image, f"{token_registry.host}/{repo}:v2") == 0
    out = capsys.readouterr()
    text = out.out + out.err + caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "HTTP Request: PATCH" in caplog.text  # the debug logs were on
    secrets = [PASSWORD, REFRESH_TOKEN, *tokens.issued,
               *(base64.b64encode(f"{u}:{PASSWORD}".encode()).decode() for u in ("alice", "bob", "mallory"))]
    assert len(tokens.issued) == 2  # alice's push, and the identity token's
    for secret in secrets:
        assert secret not in text
