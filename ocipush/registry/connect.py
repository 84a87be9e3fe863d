"""Which scheme serves a registry's ``/v2/``: HTTPS first, as podman, then plain HTTP where allowed.

Plain HTTP is allowed to loopback registries and to those the user made insecure.  There the
HTTPS probe's TLS handshake gets ``PROBE_HANDSHAKE`` seconds, not the connect timeout: a
plain-HTTP server that accepts TCP and swallows the ClientHello (``wrangler dev``, any server
that waits for a request line that never ends) would otherwise hold every push for the whole
connect timeout (30 s) before plain HTTP got its turn.  A TLS handshake on a LAN or this
machine takes milliseconds; one that really is slower loses no push: when plain HTTP then finds
no registry either, HTTPS gets a second try under the normal timeouts.  Where HTTPS is the only
scheme (verified, not loopback) there is no probe deadline at all.

Why not send both at once and take the first answer: HTTPS must win when both answer, so a
race would wait for HTTPS anyway, and it would send a plain-HTTP request to every HTTPS
registry on every push.  The answer is found once per client: every request of the push goes
to ``base_url``.

The message when no scheme answers leads with the attempt that says most: a TLS server's
refusal (certificate, alert) over the plain-HTTP complaint it causes; an HTTP answer, or the
plain attempt's failure, over an HTTPS attempt that met no TLS at all.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import attrs
import httpx

from ..errors import RegistryError
from .retry import TRANSIENT_STATUSES, RetryPolicy
from .transport import handshake_cap

__all__ = ["PROBE_HANDSHAKE", "Attempt", "Probe", "failure_reason", "find_origin"]

PROBE_HANDSHAKE = 0.5  # seconds for the HTTPS probe's TLS handshake, where plain HTTP may follow

Exchange = Callable[[str, str, dict[str, Any]], tuple[httpx.Response, bytes]]


@attrs.frozen
class Attempt:
    """One scheme's try at ``GET /v2/``: ``status`` None when no HTTP answer came."""

    url: str
    reason: str = ""  # why it is no registry; "" when it is one
    status: int | None = None
    cut: bool = False  # HTTPS ended by the probe's handshake deadline
    tls_refused: bool = False  # a TLS server answered and refused (certificate, alert)

    @property
    def ok(self) -> bool:
        return self.status in (200, 401)


@attrs.frozen
class Probe:
    """What ``find_origin`` needs of the client: its requests and how it words answers."""

    host: str
    schemes: tuple[str, ...]  # ("https",) or ("https", "http")
    exchange: Exchange  # one request under its deadline: (closed answer, body); httpx.HTTPError when none
    describe: Callable[[httpx.Response, bytes], str]
    retry: RetryPolicy
    on_retry: Callable[[RegistryError], None]
    flags: str = "--"  # how this side's options start in messages: "--", or "--src-" for a docker:// source


def find_origin(probe: Probe) -> str:
    """``scheme://host`` of the first scheme whose ``/v2/`` answers 200 or 401."""
    attempts: list[Attempt] = []
    for scheme in probe.schemes:
        fallback = scheme != probe.schemes[-1]
        attempt = _attempt(probe, scheme, PROBE_HANDSHAKE if fallback else None)
        if attempt.ok:
            return f"{scheme}://{probe.host}"
        attempts.append(attempt)
    if _second_chance(attempts):
        attempt = _attempt(probe, "https", None)
        if attempt.ok:
            return f"https://{probe.host}"
        attempts[0] = attempt
    raise RegistryError(f"cannot reach registry {probe.host}: {_summary(attempts)}")


def _second_chance(attempts: list[Attempt]) -> bool:
    """HTTPS was cut short by the probe and plain HTTP found no HTTP server, or one that
    complains of plain HTTP sent to its TLS port (400): HTTPS may just be slow."""
    return len(attempts) == 2 and attempts[0].cut and attempts[1].status in (None, 400)


def _attempt(probe: Probe, scheme: str, handshake: float | None) -> Attempt:
    url = f"{scheme}://{probe.host}/v2/"
    cut = False
    try:
        if handshake is None:
            response, body = _ping(probe, url)
        else:
            with handshake_cap(handshake) as cap:
                try:
                    response, body = _ping(probe, url)
                finally:
                    cut = cap.cut
    except httpx.HTTPError as e:
        reason = failure_reason(e) + _tls_hint(probe.host, e, probe.flags)
        return Attempt(url, reason, cut=cut, tls_refused=_tls_refused(e))
    return Attempt(url, probe.describe(response, body), response.status_code)


def _ping(probe: Probe, url: str) -> tuple[httpx.Response, bytes]:
    """``GET /v2/``, again while busy (503, 429…: there, not absent): the last answer."""
    budget = probe.retry.budget()
    response, body = probe.exchange("GET", url, {})  # no answer at all: the next scheme
    while response.status_code in TRANSIENT_STATUSES:
        error = RegistryError(f"GET {url}: {probe.describe(response, body)}", status=response.status_code,
                              headers={k.lower(): v for k, v in response.headers.items()})
        if not budget.spend(error, probe.on_retry):
            break
        try:
            response, body = probe.exchange("GET", url, {})
        except httpx.HTTPError:
            break  # busy, then silent: judged by the busy answer
    return response, body


def _summary(attempts: list[Attempt]) -> str:
    """One line naming every attempt, the most telling first; one reason shared is said once."""
    if len(attempts) == 2 and attempts[0].reason == attempts[1].reason:
        return f"{attempts[0].url}, {attempts[1].url}: {attempts[0].reason}"
    first, *others = sorted(attempts, key=_weight, reverse=True)
    tail = "".join(f" (also tried {a.url}: {a.reason})" for a in others)
    return f"{first.url}: {first.reason}{tail}"


def _weight(attempt: Attempt) -> int:
    """How much an attempt tells of what is wrong: a TLS server's refusal, then any HTTP
    answer, then a failure of plain HTTP, then HTTPS that met no TLS at all.  ``sorted`` is
    stable: equal weights keep the order they were tried in."""
    if attempt.tls_refused:
        return 3
    if attempt.status is not None:
        return 2
    return 1 if attempt.url.startswith("http:") else 0


def _tls_refused(error: BaseException) -> bool:
    """A TLS server answered and refused: a certificate not trusted, an alert it sent."""
    seen: BaseException | None = error
    for _ in range(8):  # the httpx error, httpcore's, the ssl module's
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            text = f"{seen.reason or ''} {seen}".upper()
            return "CERTIFICATE" in text or "ALERT" in text
        seen = seen.__cause__ or seen.__context__
    return False


def _tls_hint(host: str, error: httpx.HTTPError, flags: str = "--") -> str:
    if "CERTIFICATE_VERIFY_FAILED" not in str(error):
        return ""
    return (f" (give its CA with {flags}cert-dir DIR or in ~/.config/containers/certs.d/{host}/ca.crt, "
            f"or use {flags}tls-verify=false)")


def failure_reason(e: httpx.HTTPError) -> str:
    """A transport failure in one line."""
    text = str(e) or type(e).__name__
    return text.splitlines()[0]
