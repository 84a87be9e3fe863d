"""The strict grammars of ocipush/registry/headers.py and the retry waits built on them:
every value a registry can send is a number in range, None, or a RegistryError that
names the header — never a traceback, never NaN, never a wait past the cap."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.digest import Digest
from ocipush.errors import RegistryError, UploadError, UsageError
from ocipush.registry import headers
from ocipush.registry.retry import RetryPolicy

BASE = "http://127.0.0.1:5000/v2/r/blobs/uploads/abc?_state=1"
# What hostile registries send: Unicode digits, huge numbers, signs, spaces, controls, Latin-1.
nasty = st.one_of(
    st.text(),
    st.text("0123456789-=bytes ²³¹٣०１\t\x00+.e"),
    st.sampled_from(["²", "0-²", "٣", "0-" + "9" * 5000, "9" * 5000, "-1", "0x10", "1e3", "inf", "nan", "", " "]),
)


@pytest.mark.parametrize(
    "value, held",
    [("0-99", 100), ("bytes=0-9", 10), ("bytes 0-9", 10), (" 0-0 ", 1), ("0--1", 0), (None, None),
     ("0-999999999999999999", 10**18)],
)
def test_range_grammar(value, held):
    assert headers.parse_range(value, "header Range") == held


@pytest.mark.parametrize("value", [
    "5-9", "junk", "0-", "-1", "0-²", "0-٣", "0-" + "9" * 19, "0-1-2", "bytes 0-9/10", "0 - 9", "",
])
def test_range_garbage_names_the_header(value):
    with pytest.raises(RegistryError, match=r"^header Range from PATCH x: .* is not a range 0-END$"):
        headers.parse_range(value, "header Range from PATCH x")


@given(nasty)
def test_range_is_a_count_or_a_clean_error(value):
    try:
        held = headers.parse_range(value, "header Range")
    except RegistryError as e:
        assert "\n" not in str(e) and len(str(e)) < 200
    else:
        assert isinstance(held, int) and 0 <= held <= 10**18


@pytest.mark.parametrize("value", ["²", "0", "100MB", "-5", "9" * 19, "1.5", "", "٣"])
def test_chunk_length_garbage(value):
    with pytest.raises(RegistryError, match=r"^header OCI-Chunk-Max-Length: .* is not a positive number of bytes$"):
        headers.chunk_length(value, "header OCI-Chunk-Max-Length")


@given(nasty)
def test_chunk_length_is_positive_or_a_clean_error(value):
    try:
        length = headers.chunk_length(value, "h")
    except RegistryError:
        return
    assert 0 < length < 10**18


NOW = datetime(2026, 11, 30, 4, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    "value, seconds",
    [("0", 0.0), ("5", 5.0), ("86400", 3600.0), ("9" * 30, 3600.0), ("Mon, 30 Nov 2026 04:00:30 GMT", 30.0),
     ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0), ("Tue, 30 Nov 2027 04:00:00 GMT", 3600.0),
     ("²", None), ("-1", None), ("1.5", None), ("nan", None), ("inf", None), ("Mon, 31 Feb 2026 04:00:00 GMT", None),
     ("Monday, 30-Nov-26 04:00:30 GMT", None), ("9" * 5000, None), ("", None), (None, None)],
)
def test_retry_after_grammar(value, seconds):
    assert headers.retry_after(value, NOW) == seconds


@given(nasty, st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=2e9))
def test_retry_after_is_bounded_or_ignored(value, now):
    seconds = headers.retry_after(value, now)
    assert seconds is None or (math.isfinite(seconds) and 0 <= seconds <= headers.MAX_RETRY_AFTER)


@given(
    attempts=st.integers(0, 10**6),
    delay=st.floats(0, 1e300),
    max_delay=st.floats(0, 1e300),
    asked=st.one_of(st.none(), nasty),
)
def test_retry_wait_is_finite_and_capped(attempts, delay, max_delay, asked):
    policy = RetryPolicy(attempts=3, delay=delay, max_delay=max_delay)
    error = RegistryError("x", status=503, headers={"retry-after": asked} if asked is not None else None)
    wait = policy.wait(attempts, error)
    assert math.isfinite(wait) and 0 <= wait <= max_delay * 4


@pytest.mark.parametrize("field", ["delay", "max_delay"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
def test_retry_policy_refuses_nan_inf_negative(field, value):
    with pytest.raises(UsageError, match="finite number of seconds"):
        RetryPolicy(**{field: value})


@pytest.mark.parametrize(
    "value, url",
    [("/v2/r/blobs/uploads/x", "http://127.0.0.1:5000/v2/r/blobs/uploads/x"),
     ("x?_state=2", "http://127.0.0.1:5000/v2/r/blobs/uploads/x?_state=2"),
     ("https://bucket.example/up?sig=1", "https://bucket.example/up?sig=1")],
)
def test_location_resolves(value, url):
    assert headers.resolve_location(BASE, value, "header Location") == url


@pytest.mark.parametrize(
    "value",
    ["javascript:alert(1)", "ftp://h/x", "http://", "http:x", "http://[::1", "http://h:99999/", "http://h:0/",
     "http://user:pw@h/x", "https://a b", "http://²/", "/v2/\x00", "x" * 9000, "http://[zz]/", "http://xn--/", ""],
)
def test_location_garbage_names_the_header(value):
    with pytest.raises(UploadError, match=r"^header Location from POST x: "):
        headers.resolve_location(BASE, value, "header Location from POST x")


@pytest.mark.parametrize("value", ["/up?_state=SECRETTOKEN\x01", "ftp://h/up?sig=SECRETTOKEN", "http://h:0/?SECRETTOKEN"])
def test_a_refused_location_is_quoted_without_its_query(value):
    """The query of an upload location may be a signature or the registry's state token."""
    with pytest.raises(UploadError) as refused:
        headers.resolve_location(BASE, value, "header Location from POST x")
    assert "SECRET" not in str(refused.value) and "query not shown" in str(refused.value)


@given(nasty)
def test_location_is_a_url_or_a_clean_error(value):
    try:
        url = httpx.URL(headers.resolve_location(BASE, value, "h"))
    except UploadError:
        return
    assert url.scheme in ("http", "https") and url.host


def test_location_absent_names_the_request():
    response = httpx.Response(202, request=httpx.Request("POST", "http://h/v2/r/blobs/uploads/?secret=1"))
    with pytest.raises(UploadError, match=r"^POST http://h/v2/r/blobs/uploads/\?…: 202 without a Location header$"):
        headers.location(response)


def test_what_of_redacts_the_query():
    response = httpx.Response(202, request=httpx.Request("PATCH", "http://h/u?sig=secret"))
    assert headers.what_of(response, "Range") == "header Range from PATCH http://h/u?…"


@pytest.mark.parametrize("value", [
    "sha256:abc", "md5:" + "0" * 32, "sha256:" + "A" * 64, "²", "sha256:" + "0" * 64 + "x",
])
def test_content_digest_garbage(value):
    with pytest.raises(RegistryError, match=r"^header Docker-Content-Digest: .* is not a digest$"):
        headers.content_digest(value, "header Docker-Content-Digest")


def test_content_digest_parses():
    digest = "sha256:" + "a" * 64
    assert headers.content_digest(f" {digest} ", "h") == Digest.parse(digest)
    assert headers.content_digest(None, "h") is None


@pytest.mark.parametrize("delay", ["nan", "inf", "1e400"])
def test_cli_refuses_a_retry_delay_that_is_not_a_number_of_seconds(delay, capsys):
    from ocipush.cli import main

    assert main(["oci:/nonexistent", "127.0.0.1:1/r:t", "--retry-delay", delay]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ocipush: ") and "Traceback" not in err
