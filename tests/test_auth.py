import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.registry.auth import Credentials, parse_challenges


def test_bearer_challenge_with_quoted_commas():
    header = 'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'
    (c,) = parse_challenges(header)
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:a/b:pull,push",
    }


def test_several_challenges_and_escapes():
    header = 'Basic realm="a \\"quoted\\" realm", Bearer realm="https://x/t",error="invalid_token"'
    challenges = parse_challenges(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].params["realm"] == 'a "quoted" realm'
    assert challenges[1].params == {"realm": "https://x/t", "error": "invalid_token"}


def test_unquoted_params_and_case():
    (c,) = parse_challenges("BASIC Realm=registry")
    assert c.scheme == "basic" and c.params == {"realm": "registry"}


safe_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


@given(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), safe_text, max_size=4))
def test_any_quoted_params_round_trip(params):
    escaped = {k: v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)) for k, v in params.items()}
    quoted = ",".join(f'{k}="{v}"' for k, v in escaped.items())
    (c,) = parse_challenges(f"Bearer {quoted}")
    assert c.params == params


def test_credentials_repr_hides_the_password():
    creds = Credentials("alice", "s3cret-pa55")
    assert "s3cret" not in repr(creds)
    assert "s3cret" not in str(creds)


@given(st.text(max_size=500))
def test_any_header_text_parses_without_error(header):
    for challenge in parse_challenges(header):
        assert challenge.scheme == challenge.scheme.lower()
        assert all(isinstance(v, str) for v in challenge.params.values())


@pytest.mark.parametrize("header", [
    "Bearer " + "a=," * 20000, "Bearer a=\"" + "\\\"" * 30000, "Bearer a=\"" + "\\" * 60000, "a " * 30000,
    " " * 60000 + "x", "," * 60000, "B " + " =" * 30000,
])
def test_pathological_headers_parse_in_linear_time(header):
    started = time.perf_counter()
    parse_challenges(header)
    assert time.perf_counter() - started < 2.0
