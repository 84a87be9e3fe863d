"""What the auth flow hands out stays with the origin it was meant for, across redirects,
and a token request is always followed by the request it was fetched for.

Over real sockets (tests/hostileregistry.py, the CLI in-process) where a server can play
it: a token service that redirects a refresh-token grant to another port, a token that
expires at once.  The http→https upgrade of the same host needs ports 80 and 443, so that
one goes through httpx with a mock transport, the guard (``transport.guard_origin``)
being httpx's own request hook either way.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from ocipush.cli import main
from ocipush.errors import AuthenticationError
from ocipush.registry.auth import Credentials, RegistryAuth
from ocipush.registry.transport import guard_origin
from tests.hostileregistry import PASSWORD, TOKEN, USER, HostileRegistry, Recorder, Reply, Request, Rule, _json
from tests.imagegen import LayerSpec, make_layout

IDENTITY_TOKEN = "IDENTITY-REFRESH-TOKEN-5f0c"
REPO = "team/app"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("redirect-image"), [LayerSpec(20_000)], ref="v1")


def push(image, registry: HostileRegistry, tag: str, *args: str) -> int:
    return main([f"oci:{image.layout}:v1", f"{registry.host}/{REPO}:{tag}", "--no-cache", "--retry", "0",
                 "--timeout", "5s", *args])


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ocipush: ") and "Traceback" not in err, err
    return lines[0]


def test_a_refresh_token_is_never_sent_to_where_the_token_service_redirects(image, user_config, capsys):
    """Finding 1: the token service answers the refresh-token POST with a 307 to another
    port.  httpx would repeat the POST there, body and all, and take its answer for our
    token; the guard refuses instead, naming the token service and the target."""
    with Recorder(_json(200, {"token": "FOREIGN"})) as elsewhere, HostileRegistry(
            [Rule("*", "^/token", Reply(307, {"Location": f"{elsewhere.url}/stolen"}))],
            auth="bearer") as registry:
        entry = {"auth": base64.b64encode(b"<token>:").decode(), "identitytoken": IDENTITY_TOKEN}
        authfile = user_config.home / "auth.json"
        authfile.write_text(json.dumps({"auths": {registry.host: entry}}))
        code = push(image, registry, "v1", "--authfile", str(authfile))
        received = elsewhere.requests()
    line = one_line(capsys.readouterr().err)
    assert code == 5, line
    assert not received, [(r.method, r.target) for r in received]
    assert "token service" in line and elsewhere.url in line and IDENTITY_TOKEN not in line, line
    assert (REPO, "v1") not in registry.manifests


class AnonymousPull(HostileRegistry):
    """Blobs may be read anonymously (so a HEAD never meets a challenge), pushing needs a
    token: the first 401 a push meets is on its POST or its manifest PUT."""

    def authorized(self, request: Request) -> bool:
        if request.method in ("HEAD", "GET") and "/blobs/sha256:" in request.path:
            return True
        return super().authorized(request)


def test_a_token_that_expires_at_once_is_used_for_the_request_it_was_fetched_for(image, user_config, capsys):
    """Finding 2: ``expires_in: 1e-9``.  The flow used to find no fresh token after fetching
    one and end there, and httpx handed the token service's 200 back as the answer to the
    manifest PUT: exit 0, "pushed", no tag.  Now exit 0 means the tag is really there."""
    with AnonymousPull(auth="bearer") as registry:
        assert push(image, registry, "v1", "--creds", f"{USER}:{PASSWORD}") == 0
        registry.token_doc = {"token": TOKEN, "expires_in": 1e-9}
        code = push(image, registry, "v2", "--creds", f"{USER}:{PASSWORD}")
    err = capsys.readouterr().err
    assert code in (0, 5), err
    if code:  # a refusal is fine, if it says so
        one_line(err)
        return
    # exit 0: the registry stored the manifest under the tag (this fake serves no GET of it)
    assert registry.manifests.get((REPO, "v2")) == image.manifest.path.read_bytes(), f"exit 0 without the tag: {err}"


# -- the same host over https is another origin ------------------------------------------------


def _recording_client(auth: RegistryAuth, seen: list[httpx.Request]) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.scheme == "http":
            if "authorization" not in request.headers:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return httpx.Response(302, headers={"Location": str(request.url.copy_with(scheme="https"))})
        return httpx.Response(200)

    return httpx.Client(transport=httpx.MockTransport(answer), auth=auth, event_hooks={"request": [guard_origin]})


def test_basic_credentials_do_not_follow_an_upgrade_to_https():
    """Finding 9: httpx keeps Authorization on an http→https redirect of the same host
    (:80 → :443); that is another origin, so the guard strips it."""
    auth = RegistryAuth("registry.example", lambda repo: Credentials(USER, PASSWORD), insecure=True)
    auth.bind("http://registry.example")
    seen: list[httpx.Request] = []
    with _recording_client(auth, seen) as http:
        http.get("http://registry.example/v2/")
        assert http.head(f"http://registry.example/v2/{REPO}/blobs/sha256:1", follow_redirects=True).status_code == 200
    upgraded = [r for r in seen if r.url.scheme == "https"]
    assert upgraded and all("authorization" not in r.headers for r in upgraded)
    assert any("authorization" in r.headers for r in seen if r.url.scheme == "http")  # the registry still got it


# -- plain HTTP: this machine without a proxy, or the insecure registry's own host -------------


@pytest.mark.parametrize("realm, insecure, proxied, allowed", [
    ("http://203.0.113.9/token", True, False, False),  # finding 13: insecure is not "any host"
    ("http://203.0.113.9/token", False, False, False),
    ("http://registry.example/token", True, False, True),  # the registry's own host, made insecure
    ("http://registry.example:8080/token", True, False, True),
    ("http://registry.example/token", False, False, False),
    ("http://127.0.0.1:5000/token", False, False, True),  # this machine
    ("http://127.0.0.1:5000/token", False, True, False),  # finding 6: through a proxy, it is not
    ("https://203.0.113.9/token", False, True, True),
])
def test_where_secrets_may_go_over_plain_http(realm, insecure, proxied, allowed):
    auth = RegistryAuth("registry.example:5000", lambda repo: None, insecure=insecure,
                        proxied=lambda url: proxied)
    if allowed:
        auth._check_plain_http(httpx.URL(realm), "credentials")
        return
    with pytest.raises(AuthenticationError, match="plain HTTP"):
        auth._check_plain_http(httpx.URL(realm), "credentials")


def test_redact_scrubs_every_secret_of_the_run():
    """Finding 5, at the source: what ``RegistryClient`` runs server text through."""
    auth = RegistryAuth("registry.example", lambda repo: Credentials(USER, PASSWORD, identity_token=IDENTITY_TOKEN))
    auth._credentials(REPO)
    text = f"got {PASSWORD} / {Credentials(USER, PASSWORD).basic_header()} / {IDENTITY_TOKEN}"
    clean = auth.redact(text)
    assert PASSWORD not in clean and IDENTITY_TOKEN not in clean and "Basic <redacted>" in clean, clean
