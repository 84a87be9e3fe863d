"""Registry authentication as an httpx auth flow: anonymous first, then what the
registry's ``WWW-Authenticate`` challenge asks for — Basic, or a Bearer token from its realm.

- Once challenged (the ``/v2/`` ping usually is), every request is authorized before it
  is sent: a chunk body must not travel once only to be refused.
- Bearer tokens are cached per scope, in memory only, and renewed before ``expires_in``
  runs out.  A registry may still refuse one early (its clock, a revocation, a lifetime
  shorter than announced): a 401 to a request sent with a token fetches a new token and
  sends that same request again — a chunk too, its body is replayable — so an expired
  token costs one request, never the push.  Parallel uploads that meet the same expired
  token share one renewal.
- Secrets never reach a log, an error message or a repr.  Basic credentials and refresh
  tokens travel over plain HTTP only to this machine or to a registry the user made
  insecure.  A 401 from a host we were redirected to (object storage) is not answered:
  httpx drops ``Authorization`` on a cross-origin redirect, and we must not hand our
  credentials to that host either.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Generator

import attrs
import httpx

from ..errors import AuthenticationError, RegistryError
from ..reference import is_loopback_host

__all__ = ["Challenge", "Credentials", "RegistryAuth", "Scope", "parse_challenges"]

CLIENT_ID = "ocipush"  # OAuth2 client_id on refresh-token grants
DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, when the token service gives no expires_in (per the spec)

Flow = Generator[httpx.Request, httpx.Response, None]


@attrs.frozen(repr=False)
class Credentials:
    username: str
    password: str = ""
    identity_token: str = ""  # docker's "identitytoken": an OAuth2 refresh token for the realm
    source: str = ""  # where they were found, for messages: "--creds", a file, a helper

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def describe(self) -> str:
        """Whose they are, for messages: never a secret."""
        who = f"user {self.username!r}" if self.username and not self.identity_token else "an identity token"
        return who + (f" (from {self.source})" if self.source else "")

    def __repr__(self) -> str:  # keeps secrets out of tracebacks and logs
        return f"Credentials(username={self.username!r}, source={self.source!r}, secrets=<hidden>)"


@attrs.frozen
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]


@attrs.frozen
class Scope:
    """What a request needs: push and pull on its repository (and pull on a mount's source)."""

    repository: str
    tokens: tuple[str, ...]  # token-service scopes, e.g. ("repository:team/app:pull,push",)

    @classmethod
    def of(cls, url: httpx.URL) -> Scope | None:
        """None for the ``/v2/`` ping, which needs no scope."""
        m = _API_PATH_RE.match(url.path)
        if not m:
            return None
        tokens = [f"repository:{m[1]}:pull,push"]
        source = url.params.get("from")
        if "mount" in url.params and source and source != m[1]:
            tokens.append(f"repository:{source}:pull")
        return cls(m[1], tuple(tokens))


# The repository is what precedes the endpoint; greedy, so a repository may have a
# component named "blobs" or "manifests" (team/blobs/manifests/v1).
_API_PATH_RE = re.compile(
    r"^/v2/(.+)/(?:blobs/uploads(?:/[^/]*)?|blobs/[^/]+|manifests/[^/]+|tags/list|referrers/[^/]+)$"
)

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


@attrs.frozen(repr=False)
class _Token:
    header: str  # "Bearer …"
    renew_at: float  # time.monotonic()

    def __repr__(self) -> str:
        return "_Token(<hidden>)"


class RegistryAuth(httpx.Auth):
    """One instance per registry host, shared by every request of a push (thread-safe).

    ``lookup(repository)`` gives the credentials for a repository, or None; it is asked
    once per repository, and only when the registry wants credentials.  ``insecure``:
    the user made this registry insecure, so secrets may go over plain HTTP to it.
    """

    requires_response_body = True  # the token service's JSON

    def __init__(self, registry: str, lookup: Callable[[str], Credentials | None], *, insecure: bool = False):
        self.registry = registry
        self.insecure = insecure
        self._lookup = lookup
        self._lock = threading.Lock()
        self._renewal = threading.Lock()  # one token request at a time; the others reuse its token
        self._found: dict[str, Credentials | None] = {}
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._challenge: Challenge | None = None  # the registry's latest challenge

    def auth_flow(self, request: httpx.Request) -> Flow:
        scope = Scope.of(request.url)
        if scope is None:  # the ping: no credentials, but its challenge tells us what to send
            response = yield request
            self._challenged(request, response)
            return
        if self._challenge is not None:
            yield from self._prepare(self._challenge, scope, refused=None)
        sent = self._authorize(request, scope)
        response = yield request
        challenge = self._challenged(request, response)
        if challenge is None:
            return
        yield from self._prepare(challenge, scope, refused=sent)
        if self._authorize(request, scope) is None:
            return  # nothing to answer with: the caller reports the 401
        response = yield request
        if self._challenged(request, response) is not None:
            raise self._refused(scope, response)

    # -- the steps ------------------------------------------------------------------

    def _challenged(self, request: httpx.Request, response: httpx.Response) -> Challenge | None:
        """The challenge of a 401 from the registry itself (not from a redirect target),
        Bearer preferred; remembered for the requests that follow."""
        if response.status_code != 401 or not _same_origin(response.url, request.url):
            return None
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        challenge = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if challenge is not None:
            self._challenge = challenge
        return challenge

    def _prepare(self, challenge: Challenge, scope: Scope, *, refused: str | None) -> Flow:
        """Make sure there is something new to send: a token for ``scope`` other than the
        ``refused`` one.  Refused Basic credentials are final."""
        if challenge.scheme == "basic":
            if refused is not None:
                raise self._refused(scope, None)
            return
        with self._renewal:  # held while the token request is out: the others wait for it
            current = self._token(scope)
            if current is None or current == refused:
                credentials = self._credentials(scope.repository)
                response = yield self._token_request(challenge, scope, credentials)
                self._store_token(response, scope, credentials)

    def _authorize(self, request: httpx.Request, scope: Scope) -> str | None:
        """Set the request's Authorization; returns it (None: nothing to send)."""
        header = self._token(scope)
        if header is None and self._challenge is not None and self._challenge.scheme == "basic":
            credentials = self._credentials(scope.repository)
            if credentials is not None:
                self._check_plain_http(request.url, "credentials")
                header = credentials.basic_header()
        if header is None:
            request.headers.pop("Authorization", None)
        else:
            request.headers["Authorization"] = header
        return header

    def _token_request(self, challenge: Challenge, scope: Scope, credentials: Credentials | None) -> httpx.Request:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthenticationError(f"{self.registry}: its Bearer challenge names no token service (realm)")
        url = httpx.URL(realm)
        service = {"service": challenge.params["service"]} if "service" in challenge.params else {}
        if credentials is not None and credentials.identity_token:
            # OAuth2 refresh-token grant, as docker does with an identity token.
            self._check_plain_http(url, "an identity token")
            form = {"grant_type": "refresh_token", "refresh_token": credentials.identity_token,
                    "client_id": CLIENT_ID, "scope": " ".join(scope.tokens), **service}
            return httpx.Request("POST", url, data=form)
        params = [("scope", s) for s in scope.tokens] + list(service.items())
        headers = {}
        if credentials is not None:
            self._check_plain_http(url, "credentials")
            params.append(("account", credentials.username))
            headers["Authorization"] = credentials.basic_header()
        return httpx.Request("GET", url.copy_merge_params(params), headers=headers)

    def _store_token(self, response: httpx.Response, scope: Scope, credentials: Credentials | None) -> None:
        realm = response.request.url.copy_with(query=None)
        if response.status_code in (400, 401, 403):  # 400: OAuth2's invalid_grant
            who = credentials.describe() if credentials else "anonymous access; give --creds or log in"
            raise AuthenticationError(
                f"{self.registry}: authentication failed: the token service {realm} refused {who}"
            )
        try:
            doc = response.json()
            value = doc.get("token") or doc.get("access_token")
            lifetime = float(doc.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            value, lifetime = None, 0.0
        if response.status_code != 200 or not isinstance(value, str) or not value or lifetime <= 0:
            raise RegistryError(
                f"{self.registry}: the token service {realm} answered {response.status_code} "
                f"{response.reason_phrase} without a usable token",
                status=response.status_code,
            )
        # Renew early: a token that expires while a chunk is on its way fails that chunk.
        renew_at = time.monotonic() + max(lifetime - 10, lifetime / 2)
        with self._lock:
            self._tokens[scope.tokens] = _Token(f"Bearer {value}", renew_at)

    # -- state ----------------------------------------------------------------------

    def _token(self, scope: Scope) -> str | None:
        with self._lock:
            token = self._tokens.get(scope.tokens)
        return token.header if token and token.renew_at > time.monotonic() else None

    def _credentials(self, repository: str) -> Credentials | None:
        with self._lock:  # a helper runs once per repository, not once per thread
            if repository not in self._found:
                self._found[repository] = self._lookup(repository)
            return self._found[repository]

    def _check_plain_http(self, url: httpx.URL, what: str) -> None:
        if url.scheme == "http" and not self.insecure and not is_loopback_host(url.host):
            raise AuthenticationError(
                f"{self.registry}: refusing to send {what} over plain HTTP to {url.host}; "
                "use HTTPS, or make the registry insecure (--tls-verify=false or registries.conf)"
            )

    def _refused(self, scope: Scope, response: httpx.Response | None) -> AuthenticationError:
        credentials = self._credentials(scope.repository)
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", "")) if response else []
        error = next((c.params["error"] for c in challenges if c.params.get("error")), None)
        why = f" ({error})" if error else ""
        if credentials is None:
            return AuthenticationError(
                f"{self.registry}: authentication failed: anonymous access to {scope.repository} refused{why}; "
                "give --creds, or log in with podman login or docker login",
                status=401,
            )
        return AuthenticationError(
            f"{self.registry}: authentication failed: the registry refused {credentials.describe()} "
            f"for {scope.repository}{why}",
            status=401,
        )


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)
