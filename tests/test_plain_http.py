"""The scheme probe (registry/connect.py): HTTPS first, plain HTTP where allowed, found in well
under a second even when the registry's port swallows TLS ClientHellos and never answers
(``wrangler dev``), once per push; verified HTTPS never falls back and keeps its timeouts."""

from __future__ import annotations

import ssl
import time

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.cli import main
from ocipush.errors import RegistryError
from ocipush.registry.client import ClientOptions, RegistryClient
from ocipush.registry.connect import PROBE_HANDSHAKE, Attempt, _summary, _weight
from tests.imagegen import make_layout
from tests.pki import make_ca, make_leaf
from tests.rawhttp import RawServer, Reply
from tests.schemeserver import SilentTLSFront, TLSStub
from tests.services import skopeo_pull

PROBE_BOUND = 3.0  # seconds: generous for 0.5 s of probing on a busy machine; the old code took 30 s


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    return ca, make_leaf(directory, ca, "server")


@pytest.fixture
def server_context(pki):
    _, leaf = pki
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.cert, leaf.key)
    return context


@pytest.fixture
def ca_dir(pki, tmp_path):
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "ca.crt").write_bytes(pki[0].cert.read_bytes())
    return directory


@pytest.mark.integration
@pytest.mark.parametrize("flags", [["--tls-verify=false"], []], ids=["tls-verify-false", "loopback"])
def test_a_push_finds_plain_http_behind_a_silent_tls_port_at_once_and_keeps_it(
        registry, repo, tmp_path, capsys, user_config, flags):
    """One ClientHello for the whole push, swallowed; plain HTTP follows within the bound."""
    image = make_layout(tmp_path / "image", [300_000, 2000], ref="v1")
    with SilentTLSFront(registry.host) as front:
        assert main([f"oci:{image.layout}:v1", f"{front.host}/{repo}:v1", "--jobs", "2", *flags]) == 0
        assert capsys.readouterr().out.strip() == f"{front.host}/{repo}@{image.digest}"
        assert len(front.hellos) == 1, front.hellos  # probed once: every later request went plain
        assert front.plain and front.plain[0] - front.hellos[0] < PROBE_BOUND
    skopeo_pull(f"{registry.host}/{repo}:v1", tmp_path / "pulled")


@pytest.mark.integration
def test_connect_falls_back_within_a_second_of_probing(registry):
    with SilentTLSFront(registry.host) as front, RegistryClient(front.host, ClientOptions(tls_verify=False)) as client:
        started = time.monotonic()
        client.connect()
        seconds = time.monotonic() - started
        assert client.base_url == f"http://{front.host}"
        assert len(front.hellos) == 1 and len(front.plain) == 1
    assert PROBE_HANDSHAKE <= seconds < PROBE_BOUND


@pytest.mark.integration
def test_verified_https_never_falls_back_and_keeps_its_timeouts(registry):
    """Not loopback, verified: HTTPS alone, waited for until the request's deadline."""
    with (
        SilentTLSFront(registry.host) as front,
        RegistryClient(front.host, ClientOptions(deadline=2.0), loopback=False) as client,
    ):
        started = time.monotonic()
        with pytest.raises(RegistryError, match=r"^cannot reach registry \S+: https://\S+/v2/: .*within 2s"):
            client.connect()
        assert time.monotonic() - started >= 1.9
        assert not front.plain


def test_a_slow_https_handshake_is_waited_for_where_https_is_required(server_context, ca_dir):
    with (
        TLSStub(server_context, delay=lambda index: 3 * PROBE_HANDSHAKE) as stub,
        RegistryClient(stub.host, ClientOptions(cert_dir=ca_dir, deadline=30), loopback=False) as client,
    ):
        client.connect()
        assert client.base_url == f"https://{stub.host}"
        assert len(stub.hellos) == 1 and not stub.plain


def test_https_cut_short_by_the_probe_gets_a_second_try_when_plain_http_finds_no_registry(server_context):
    """The first handshake is never answered: plain HTTP hears 400 (a TLS port), so HTTPS
    again, under the normal timeouts: it answers."""
    with (
        TLSStub(server_context, delay=lambda index: None if index == 0 else 0.0) as stub,
        RegistryClient(stub.host, ClientOptions(tls_verify=False, deadline=30), loopback=True) as client,
    ):
        client.connect()
        assert client.base_url == f"https://{stub.host}"
        assert len(stub.hellos) == 2 and len(stub.plain) == 1


def test_an_untrusted_certificate_leads_the_message_over_the_plain_http_complaint(server_context):
    with (
        TLSStub(server_context) as stub,
        RegistryClient(stub.host, loopback=True) as client,
        pytest.raises(RegistryError) as caught,
    ):
        client.connect()
    message = str(caught.value)
    assert message.startswith(f"cannot reach registry {stub.host}: https://{stub.host}/v2/: [SSL: CERTIFICATE_VERIFY")
    assert "--cert-dir" in message and f"(also tried http://{stub.host}/v2/: 400 Bad Request" in message
    assert "\n" not in message


class Broken(RawServer):
    """Plain HTTP only (a ClientHello: the connection is closed), and /v2/ fails."""

    def answer(self, request):
        return Reply(404, {"Content-Type": "text/plain"}, b"no such page")


def test_a_plain_http_answer_leads_the_message_over_https_that_met_no_tls():
    with (
        Broken() as server,
        RegistryClient(server.host, ClientOptions(tls_verify=False), loopback=True) as client,
        pytest.raises(RegistryError) as caught,
    ):
        client.connect()
    message = str(caught.value)
    assert message.startswith(f"cannot reach registry {server.host}: http://{server.host}/v2/: 404 Hostile"), message
    assert f"(also tried https://{server.host}/v2/: " in message


def test_one_reason_for_both_schemes_is_said_once():
    same = [Attempt("https://h/v2/", "[Errno 111] Connection refused"),
            Attempt("http://h/v2/", "[Errno 111] Connection refused")]
    assert _summary(same) == "https://h/v2/, http://h/v2/: [Errno 111] Connection refused"
    cut = [Attempt("https://h/v2/", "no TLS handshake within 0.5s", cut=True), Attempt("http://h/v2/", "timed out")]
    assert _summary(cut) == "http://h/v2/: timed out (also tried https://h/v2/: no TLS handshake within 0.5s)"


attempts = st.builds(
    Attempt,
    url=st.sampled_from(["https://h/v2/", "http://h/v2/"]),
    reason=st.text(st.characters(codec="ascii", categories=["L", "N", "P", "Zs"]), min_size=1, max_size=40),
    status=st.none() | st.integers(100, 599),
    cut=st.booleans(),
    tls_refused=st.booleans(),
)


@given(first=attempts, second=attempts)
def test_the_summary_names_every_attempt_on_one_line_the_most_telling_first(first, second):
    first = attrs.evolve(first, url="https://h/v2/")
    second = attrs.evolve(second, url="http://h/v2/", tls_refused=False)
    text = _summary([first, second])
    assert "\n" not in text and "https://h/v2/" in text and "http://h/v2/" in text
    if first.reason == second.reason:
        assert text == f"https://h/v2/, http://h/v2/: {first.reason}"
        return
    lead = first if text.startswith("https:") else second
    assert _weight(lead) == max(_weight(first), _weight(second))
    assert lead.reason in text.partition(" (also tried ")[0]
