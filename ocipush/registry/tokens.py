"""Strict readers of what a registry's auth side sends: ``WWW-Authenticate`` challenges,
the token realm they name, and the token service's JSON answer.

All of it is untrusted (a hostile registry, a proxy, a host an upload was sent to): a
challenge that does not parse gives fewer challenges, never an exception; a realm must be
an absolute http(s) URL; a token must be a short RFC 6750 ``b64token`` (it goes into a
header on every request, where CR/LF or a megabyte would do harm) and ``expires_in`` a
finite JSON number, clamped.  Failures are ``RegistryError``s naming what was at fault.
"""

from __future__ import annotations

import re
import threading

import attrs
import httpx

from ..errors import RegistryError
from ..models import load_json

__all__ = ["Challenge", "Secrets", "host_of", "parse_challenges", "parse_realm", "parse_token_answer", "printable"]

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, when the token service gives no expires_in (per the spec)
MAX_TOKEN_LIFETIME = 24 * 3600.0  # a longer promise is taken as a day: renewal is cheap
MAX_TOKEN_LENGTH = 16 * 1024  # it travels in a header on every request; servers cap headers near 8-16 KiB


@attrs.frozen
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]


# RFC 7235: auth-scheme followed by comma-separated auth-params; values may be quoted
# strings containing commas and escaped quotes.
_PARAM_RE = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')
_SCHEME_RE = re.compile(r"\s*,?\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$)")
# RFC 6750's b64token: what a Bearer header may carry (no space, no CR/LF, ASCII only).
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_HOST_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|[0-9a-f:.]+")  # raw_host: IDNA or an IP


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of a ``WWW-Authenticate`` value; garbage gives fewer, never an error."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _SCHEME_RE.match(header, pos)
        if not m:
            break
        scheme, pos = m[1].lower(), m.end()
        params: dict[str, str] = {}
        while True:
            p = _PARAM_RE.match(header, pos)
            if not p:
                break
            value = p[2]
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[p[1].lower()] = value
            pos = p.end()
        challenges.append(Challenge(scheme, params))
    return challenges


def parse_realm(realm: str, what: str) -> httpx.URL:
    """The token service URL of a Bearer challenge: an absolute http(s) URL, or a
    ``RegistryError`` naming it (``what``: the registry, for the message)."""
    try:
        url = httpx.URL(realm)
        host = url.raw_host.decode("ascii").lower()
        valid = url.scheme in ("http", "https") and bool(_HOST_RE.fullmatch(host)) and (url.port or 1) <= 65535
    except (httpx.InvalidURL, UnicodeError, ValueError):
        valid = False
    if not valid:
        raise RegistryError(f"{what}: its Bearer challenge names the realm {printable(realm)!r}, "
                            "which is not an http(s) URL", status=401)
    return url


def parse_token_answer(body: bytes, what: str) -> tuple[str, float]:
    """(token, lifetime in seconds) from a token service's JSON answer, strictly.

    ``token`` (or OAuth2's ``access_token``) must be a b64token of at most
    MAX_TOKEN_LENGTH characters; ``expires_in`` a JSON number: missing, zero or negative
    means DEFAULT_TOKEN_LIFETIME, more than MAX_TOKEN_LIFETIME (1e400 too) means that.
    ``what`` names the token service for messages."""

    def refuse(why: str) -> RegistryError:
        return RegistryError(f"{what} answered 200 OK without a usable token: {why}", status=200)

    doc = load_json(body, error=lambda _: refuse("the answer is not JSON"), allow_nan=False)
    if not isinstance(doc, dict):
        raise refuse("the answer is not a JSON object")
    value = doc.get("token") or doc.get("access_token")
    if not isinstance(value, str) or not value:
        raise refuse('no "token" or "access_token" string')
    if len(value) > MAX_TOKEN_LENGTH or not _TOKEN68_RE.fullmatch(value):
        raise refuse(f"the token is not a bearer token of at most {MAX_TOKEN_LENGTH} characters")
    lifetime = doc.get("expires_in")
    if lifetime is None:
        return value, DEFAULT_TOKEN_LIFETIME
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)):
        raise refuse('"expires_in" is not a number')
    if lifetime <= 0:  # ints compared as ints: ±10**400 has no float
        return value, DEFAULT_TOKEN_LIFETIME
    return value, float(min(lifetime, MAX_TOKEN_LIFETIME))  # 1e400 parses as inf


def printable(text: str, limit: int = 120) -> str:
    """Untrusted text for a one-line message: printable characters only, bounded."""
    clean = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return clean if len(clean) <= limit else clean[:limit] + "…"


class Secrets:
    """The secrets of a run (thread-safe), and text from a server with each of them replaced:
    a server that echoes the Authorization it got must not put it in our error lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: set[str] = set()

    def add(self, *secrets: str) -> None:
        with self._lock:
            self._known.update(s for s in secrets if s)

    @classmethod
    def union(cls, *many: Secrets) -> Secrets:
        """One set of all their secrets: redacted longest first, whichever set holds them
        (a password may be part of another's)."""
        joined = cls()
        for secrets in many:
            with secrets._lock:
                joined._known.update(secrets._known)
        return joined

    def redact(self, text: str) -> str:
        with self._lock:
            known = sorted(self._known, key=len, reverse=True)  # a password inside its base64: longest first
        for secret in known:
            text = text.replace(secret, "<redacted>")
        return text


def host_of(registry: str) -> str:
    """The host of ``registry`` (host[:port]), lower case; "" when it does not parse."""
    try:
        return httpx.URL(f"https://{registry}").host.lower()
    except httpx.InvalidURL:
        return ""
