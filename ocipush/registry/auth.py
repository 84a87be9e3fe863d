"""Registry authentication as an httpx auth flow: anonymous first, then what the
``WWW-Authenticate`` challenge asks for (Basic, or a Bearer token from the realm).

Tokens are cached per scope, in memory only.  Nothing here ever logs a secret.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Generator

import attrs
import httpx

from ..errors import AuthenticationError

__all__ = ["Challenge", "Credentials", "RegistryAuth", "parse_challenges"]


@attrs.frozen(repr=False)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:  # keeps the password out of tracebacks and logs
        return f"Credentials(username={self.username!r}, password=<hidden>)"


@attrs.frozen
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]


# RFC 7235: auth-scheme followed by comma-separated auth-params; values may be quoted
# strings containing commas and escaped quotes.
_PARAM_RE = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')
_SCHEME_RE = re.compile(r"\s*,?\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?:\s+|$)")


def parse_challenges(header: str) -> list[Challenge]:
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


@attrs.define
class _Token:
    value: str
    expires: float


class RegistryAuth(httpx.Auth):
    """One instance per registry host; shared by every request of a push (thread-safe)."""

    requires_response_body = True  # the token endpoint's JSON

    def __init__(self, registry: str, credentials: Credentials | None, *, allow_http_basic: bool):
        self.registry = registry
        self.credentials = credentials
        self.allow_http_basic = allow_http_basic
        self._lock = threading.Lock()
        self._basic = False  # the registry asked for Basic once: send it up front from now on
        self._tokens: dict[str, _Token] = {}
        self._bearer: Challenge | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        scope = _scope_for(request.url.path)
        if scope is None:  # the /v2/ ping: its 401 is an answer, not a question to us
            yield request
            return
        self._authorize(request, scope)
        response = yield request
        if response.status_code != 401:
            return
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            with self._lock:
                self._bearer = bearer
                self._tokens.pop(scope, None)
            token_response = yield self._token_request(bearer, scope)
            self._store_token(token_response, scope)
        elif any(c.scheme == "basic" for c in challenges) and self.credentials:
            self._check_basic_allowed(request.url)
            with self._lock:
                self._basic = True
        else:
            return  # nothing we can answer with: the caller reports the 401
        self._authorize(request, scope)
        yield request

    def invalidate(self, path: str) -> None:
        """Forget the token for the scope of ``path`` (it was refused or expired)."""
        with self._lock:
            self._tokens.pop(_scope_for(path) or "", None)

    # -- internals ------------------------------------------------------------------

    def _authorize(self, request: httpx.Request, scope: str) -> None:
        with self._lock:
            token = self._tokens.get(scope)
            if token and token.expires > time.monotonic():
                request.headers["Authorization"] = f"Bearer {token.value}"
                return
            basic = self._basic
        if basic and self.credentials:
            self._check_basic_allowed(request.url)
            request.headers["Authorization"] = self.credentials.basic_header()

    def _check_basic_allowed(self, url: httpx.URL) -> None:
        if url.scheme == "http" and not self.allow_http_basic:
            raise AuthenticationError(
                f"{self.registry}: refusing to send credentials over plain HTTP; "
                "use HTTPS, or --tls-verify=false to allow it for this registry"
            )

    def _token_request(self, challenge: Challenge, scope: str) -> httpx.Request:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthenticationError(f"{self.registry}: Bearer challenge without a realm")
        params = {"scope": scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {}
        if self.credentials:
            self._check_basic_allowed(httpx.URL(realm))
            headers["Authorization"] = self.credentials.basic_header()
        return httpx.Request("GET", realm, params=params, headers=headers)

    def _store_token(self, response: httpx.Response, scope: str) -> None:
        if response.status_code in (401, 403):
            raise AuthenticationError(
                f"{self.registry}: authentication failed: the token service "
                f"{response.url.copy_with(query=None)} refused "
                + ("the credentials" if self.credentials else "anonymous access; give --creds")
            )
        try:
            doc = response.json()
            value = doc.get("token") or doc["access_token"]
            lifetime = float(doc.get("expires_in") or 60)
        except Exception:
            raise AuthenticationError(
                f"{self.registry}: the token service {response.url.copy_with(query=None)} "
                f"answered {response.status_code} without a token"
            ) from None
        # Renew a little early: a token that expires mid-request fails that request.
        with self._lock:
            self._tokens[scope] = _Token(value, time.monotonic() + max(lifetime - 10, lifetime / 2))


def _scope_for(path: str) -> str | None:
    """The token scope a request path needs: push and pull on its repository."""
    m = re.match(r"^/v2/(.+?)/(?:blobs|manifests|tags|referrers)/", path)
    return f"repository:{m[1]}:pull,push" if m else None
