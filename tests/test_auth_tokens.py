"""What a registry's auth side sends is untrusted: the token service's answer (endless,
malformed, a token that would inject a header, an ``expires_in`` no float holds), the
realm its challenge names, a 401 body without end, and any ``WWW-Authenticate`` text.
Each is an answer or one of ocipush's one-line errors, never a traceback or a hang."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocipush.errors import AuthenticationError, OcipushError, RegistryError
from ocipush.registry import auth as auth_module
from ocipush.registry import tokens as tokens_module
from ocipush.registry.auth import RegistryAuth, parse_challenges
from tests.helpers import ALICE, REALM, REGISTRY

# -- what the token service and challenges send is untrusted --------------------------


class Scripted:
    """A Bearer registry whose token service answers ``token_answer`` (a Response
    factory); counts the bytes a streamed body produced."""

    def __init__(self, token_answer, *, challenge: str = f'Bearer realm="{REALM}",service="r"',
                 registry_401_body=None):
        self.token_answer, self.challenge, self.registry_401_body = token_answer, challenge, registry_401_body
        self.produced = 0
        self.token_calls = 0

    def stream(self, block: bytes, total: int):
        """A body of ``total`` bytes (far more than any limit), counted as it is produced."""
        while self.produced < total:
            self.produced += len(block)
            yield block

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if str(request.url.copy_with(query=None)) == REALM:
            self.token_calls += 1
            return self.token_answer(self)
        if request.headers.get("Authorization", "").startswith("Bearer "):
            return httpx.Response(200)
        body = self.registry_401_body(self) if self.registry_401_body else b""
        return httpx.Response(401, headers=[(b"WWW-Authenticate", self.challenge.encode("latin-1"))], content=body)


def scripted_client(registry: Scripted) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(registry),
                        auth=RegistryAuth("registry.example.com", lambda repository: ALICE))


def test_an_endless_token_answer_is_refused_in_bounded_memory():
    registry = Scripted(lambda s: httpx.Response(200, content=s.stream(b"x" * 65536, 64 * 2**20)))
    with scripted_client(registry) as http, pytest.raises(RegistryError, match=(
            r"^registry\.example\.com: the token service https://auth\.example\.com/token: "
            r"the answer's body exceeds 1048576 bytes; refused$")) as e:
        http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1")
    assert e.value.exit_code == 4 and e.value.status == 200  # not retried as "no answer"
    assert registry.produced <= 2 * 2**20


def test_an_endless_401_body_is_read_bounded():
    registry = Scripted(lambda s: httpx.Response(200, json={"token": "t"}),
                        registry_401_body=lambda s: s.stream(b"y" * 65536, 64 * 2**20))
    with scripted_client(registry) as http, pytest.raises(RegistryError, match=r"exceeds 65536 bytes; refused$"):
        http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1")
    assert registry.produced <= 2**20


BAD_TOKEN_ANSWERS = [
    (b'{"token": "t", "expires_in": "\xc2\xb2"}', '"expires_in" is not a number'),
    (b'{"token": "t", "expires_in": "60"}', '"expires_in" is not a number'),
    (b'{"token": "t", "expires_in": true}', '"expires_in" is not a number'),
    (b'{"token": "t", "expires_in": NaN}', "the answer is not JSON"),
    (b'{"token": "t", "expires_in": Infinity}', "the answer is not JSON"),
    (b'{"token": "t", "expires_in": 1' + b"0" * 5000 + b"}", "the answer is not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "the answer is not JSON"),
    (b'["t"]', "the answer is not a JSON object"),
    (b'{"token": 5}', 'no "token" or "access_token" string'),
    (b'{"token": ["t"]}', 'no "token" or "access_token" string'),
    (b'{"token": "a b"}', "not a bearer token"),
    (b'{"token": "t\\r\\nX-Injected: 1"}', "not a bearer token"),
    (b'{"token": "t\xc3\xa9"}', "not a bearer token"),
    (b'{"token": "' + b"t" * 20_000 + b'"}', "not a bearer token of at most 16384 characters"),
    (b"\xff\xfe garbage", "the answer is not JSON"),
]


@pytest.mark.parametrize("body, why", BAD_TOKEN_ANSWERS)
def test_a_token_answer_is_parsed_strictly(body, why):
    registry = Scripted(lambda s: httpx.Response(200, content=body))
    with scripted_client(registry) as http, pytest.raises(RegistryError) as e:
        http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1")
    message = str(e.value)
    assert message.startswith("registry.example.com: the token service https://auth.example.com/token answered "
                              "200 OK without a usable token: ") and why in message, message
    assert "\n" not in message and "X-Injected" not in message and not isinstance(e.value, AuthenticationError)


@pytest.mark.parametrize("expires_in, renewed_after", [
    (b"1e400", tokens_module.MAX_TOKEN_LIFETIME - 10),  # inf as a float: a day
    (b"1" + b"0" * 400, tokens_module.MAX_TOKEN_LIFETIME - 10),  # no float holds it
    (b"-1" + b"0" * 400, 50.0), (b"-5", 50.0), (b"0", 50.0),  # the default, 60 s
    (b"120", 110.0), (b"30", 20.0), (b"4", 2.0),
    (b"0.5", auth_module.MIN_TOKEN_REUSE), (b"1e-9", auth_module.MIN_TOKEN_REUSE),  # used a while at least
])
def test_expires_in_is_clamped(expires_in, renewed_after, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(auth_module.time, "monotonic", lambda: now[0])
    registry = Scripted(lambda s: httpx.Response(200, content=b'{"token": "t", "expires_in": ' + expires_in + b"}"))
    with scripted_client(registry) as http:
        url = f"{REGISTRY}/v2/team/app/blobs/sha256:1"
        assert http.head(url).status_code == 200
        now[0] += renewed_after - 0.01
        assert http.head(url).status_code == 200 and registry.token_calls == 1
        now[0] += 0.02
        assert http.head(url).status_code == 200 and registry.token_calls == 2


@pytest.mark.parametrize("realm", [
    "http://[::1", "ftp://auth.example.com/token", "https://exa mple.com/token", "/token", "https:///token",
    "https://auth.example.com:99999/token", "https://auth\x00.example.com/", "javascript:alert(1)", "x" * 5000,
])
def test_a_realm_that_is_not_an_http_url_is_a_clean_error(realm):
    challenge = 'Bearer realm="' + realm.replace("\\", "\\\\").replace('"', '\\"') + '",service="r"'
    registry = Scripted(lambda s: httpx.Response(200, json={"token": "t"}), challenge=challenge)
    with scripted_client(registry) as http, pytest.raises(RegistryError, match=(
            r"^registry\.example\.com: its Bearer challenge names the realm '.{0,125}', "
            r"which is not an http\(s\) URL$")) as e:
        http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1")
    assert e.value.exit_code == 4 and registry.token_calls == 0


_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200)
_challenge_like = st.builds(
    lambda scheme, realm, rest: f'{scheme} realm="{realm}",{rest}',
    st.sampled_from(["Bearer", "Basic", "bearer", "Negotiate", ""]),
    st.one_of(_header_text, st.sampled_from([REALM, "https://registry.example.com/v2/", "http://[::1", ""])),
    _header_text,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.one_of(_header_text, _challenge_like), token=st.binary(max_size=64))
def test_any_challenge_and_token_answer_give_a_response_or_ocipush_error(header, token):
    """Whatever a registry puts in WWW-Authenticate, and its token service in its body:
    an answer, or one of ocipush's own one-line errors — never another exception."""
    parse_challenges(header)  # never raises
    registry = Scripted(lambda s: httpx.Response(200, content=token), challenge=header)

    def transport(request: httpx.Request) -> httpx.Response:
        if request.url.host != "registry.example.com" and str(request.url.copy_with(query=None)) != REALM:
            return httpx.Response(200, content=token)  # any other realm the header named
        return registry(request)

    with httpx.Client(transport=httpx.MockTransport(transport),
                      auth=RegistryAuth("registry.example.com", lambda repository: ALICE)) as http:
        try:
            http.head(f"{REGISTRY}/v2/team/app/blobs/sha256:1")
        except OcipushError as e:
            assert "\n" not in str(e) and "\r" not in str(e) and "pw-alice" not in str(e)
