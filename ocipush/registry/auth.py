"""Registry authentication as an httpx auth flow: anonymous first, then what the
registry's ``WWW-Authenticate`` challenge asks for — Basic, or a Bearer token from its realm.

- Credentials are bound to the registry's origin (scheme, host, port), decided when the
  client connects (``bind``).  Authorization goes only to that origin; a request anywhere
  else (an upload ``Location`` on object storage, a redirect target) goes without it, and
  a 401 from anywhere else is an error, never answered and never taken for the registry's
  challenge: that host could otherwise collect the password by naming itself as realm.
- Once challenged (the ``/v2/`` ping usually is), every request is authorized before it
  is sent: a chunk body must not travel once only to be refused.  A request's scope is its
  repository, given by the caller (``for_repository``: upload Locations are opaque, they
  need not be under ``/v2/``), else read from its ``/v2/`` path.
- Bearer tokens are cached per scope, in memory only, and renewed before ``expires_in``
  runs out.  A registry may still refuse one early (its clock, a revocation, a lifetime
  shorter than announced): a 401 to a request sent with a token fetches a new token and
  sends that same request again — a chunk too, its body is replayable — so an expired
  token costs one request, never the push.  Parallel uploads that meet the same expired
  token share one renewal.
- What the registry and its token service send is untrusted: the token answer is read up
  to ``BODY_LIMITS["token"]`` and parsed strictly (``parse_token_answer``), the realm must
  be an http(s) URL, and a 401 we answer is read up to ``BODY_LIMITS["error"]``.
- Secrets never reach a log, an error message or a repr (``redact`` scrubs what a server
  echoes).  Basic credentials and refresh tokens travel over plain HTTP only to this
  machine with no proxy between, or to the host of a registry the user made insecure; that
  holds for the token realm too.  What carries a secret is bound to its origin through
  redirects (``transport.guard_origin``).
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
from .headers import BODY_LIMITS, read_bounded, redact_url
from .tokens import Challenge, Secrets, host_of, parse_challenges, parse_realm, parse_token_answer, printable
from .transport import BINDING_EXTENSION, Binding, Origin, origin_of

__all__ = [
    "REPOSITORY_EXTENSION",
    "Challenge",
    "Credentials",
    "RegistryAuth",
    "Scope",
    "for_repository",
    "parse_challenges",
]

CLIENT_ID = "ocipush"  # OAuth2 client_id on refresh-token grants
REPOSITORY_EXTENSION = "ocipush.repository"  # httpx request extension: the repository a request is for

Flow = Generator[httpx.Request, httpx.Response, None]
TokenFlow = Generator[httpx.Request, httpx.Response, "str | None"]
# A token counts as fresh this long at least, whatever its expires_in: the request it was
# fetched for must be able to use it (a token service answering 1e-9 gets a 401 from the
# registry instead, and a clean refusal).
MIN_TOKEN_REUSE = 1.0


def for_repository(repository: str) -> dict[str, str]:
    """The ``extensions=`` of a request on ``repository`` whose URL may not say so (an
    upload Location): the auth flow authorizes it for that repository's scope."""
    return {REPOSITORY_EXTENSION: repository}


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
class Scope:
    """What a request needs: push and pull on its repository (and pull on a mount's source)."""

    repository: str
    tokens: tuple[str, ...]  # token-service scopes, e.g. ("repository:team/app:pull,push",)

    @classmethod
    def of(cls, url: httpx.URL, repository: str | None = None, actions: str = "pull,push") -> Scope | None:
        """``repository`` when the caller gave it, else read from a ``/v2/`` API path;
        None for the ``/v2/`` ping (and anything else outside a repository)."""
        if not repository:
            m = _API_PATH_RE.match(url.path)
            if not m:
                return None
            repository = m[1]
        tokens = [f"repository:{repository}:{actions}"]
        source = url.params.get("from")
        if "mount" in url.params and source and source != repository:
            tokens.append(f"repository:{source}:pull")
        return cls(repository, tuple(tokens))

    @classmethod
    def of_request(cls, request: httpx.Request, actions: str = "pull,push") -> Scope | None:
        given = request.extensions.get(REPOSITORY_EXTENSION)
        return cls.of(request.url, given if isinstance(given, str) else None, actions)


# The repository is what precedes the endpoint; greedy, so a repository may have a
# component named "blobs" or "manifests" (team/blobs/manifests/v1).
_API_PATH_RE = re.compile(
    r"^/v2/(.+)/(?:blobs/uploads(?:/[^/]*)?|blobs/[^/]+|manifests/[^/]+|tags/list|referrers/[^/]+)$"
)

def _drain(response: httpx.Response, limit: int, what: str) -> bytes:
    """Read a response the flow consumes, bounded; httpx reads every response the flow
    answers once more, so it gets the bytes read here instead of the network's."""
    try:
        body = read_bounded(response, limit, what)
    except RegistryError as e:
        raise RegistryError(str(e), status=response.status_code) from None
    response._content = body  # what Response.read() itself stores
    return body


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
    Until ``bind`` names the registry's URL, its origin is ``registry`` (host[:port]) over
    HTTPS or plain HTTP: the ping that decides between them must see the challenge.
    """

    requires_response_body = False  # bodies are read here, bounded, when the flow needs them

    def __init__(self, registry: str, lookup: Callable[[str], Credentials | None], *, insecure: bool = False,
                 proxied: Callable[[httpx.URL], bool] = lambda url: False, actions: str = "pull,push",
                 creds_flag: str = "--creds"):
        self.registry = registry
        self.actions = actions  # what a token asks for: "pull" for a source registry
        self.creds_flag = creds_flag  # the option that gives credentials, for messages
        self.insecure = insecure
        self._proxied = proxied  # does a request to this URL go through a proxy (transport.proxied)
        self._secrets = Secrets()  # every secret of this run, for redact()
        self._also: list[Secrets] = []  # another client's secrets, redacted here too (redact_also)
        self._lookup = lookup
        self._lock = threading.Lock()
        self._renewal = threading.Lock()  # one token request at a time; the others reuse its token
        self._found: dict[str, Credentials | None] = {}
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._challenge: Challenge | None = None  # the registry's latest challenge
        self._origins = _candidate_origins(registry)

    def bind(self, base_url: str) -> None:
        """The registry lives at ``base_url`` (``https://host:port``): credentials go
        to that origin only from now on."""
        self._origins = frozenset({origin_of(httpx.URL(base_url))})

    def is_registry(self, url: httpx.URL) -> bool:
        return origin_of(url) in self._origins

    def sync_auth_flow(self, request: httpx.Request) -> Flow:
        """httpx's own driver, but the inner flow is closed when httpx closes this one: a
        request that fails mid-flow (a token answer cut or refused) must release the token
        lock ``_prepare`` holds across its ``yield`` now, not when a traceback that keeps
        the flow alive is collected — the other uploads wait on that lock."""
        flow = self.auth_flow(request)
        try:
            response = yield next(flow)
            while True:
                response = yield flow.send(response)
        except StopIteration:
            return
        finally:
            flow.close()

    def auth_flow(self, request: httpx.Request) -> Flow:
        if not self.is_registry(request.url):  # object storage, a presigned URL: nothing of ours
            request.headers.pop("Authorization", None)
            response = yield request
            self._challenged(response)  # raises on a 401
            return
        scope = Scope.of_request(request, self.actions)
        if scope is None:  # the ping: no credentials, but its challenge tells us what to send
            response = yield request
            self._challenged(response)
            return
        fetched = None
        if self._challenge is not None:
            fetched = yield from self._prepare(self._challenge, scope, refused=None)
        sent = self._authorize(request, scope, fetched)
        response = yield request
        challenge = self._challenged(response)
        if challenge is None:
            return
        # httpx reads this 401 whole before the next request goes out: bounded, here.
        _drain(response, BODY_LIMITS["error"], f"{request.method} {redact_url(request.url)}")
        fetched = yield from self._prepare(challenge, scope, refused=sent)
        if self._authorize(request, scope, fetched) is None:
            if fetched is not None:  # httpx would return the token service's answer as this request's
                raise self._refused(scope, response)
            return  # nothing to answer with (no token request went out): the caller reports the 401
        response = yield request
        if self._challenged(response) is not None:
            raise self._refused(scope, response)

    # -- the steps ------------------------------------------------------------------

    def _challenged(self, response: httpx.Response) -> Challenge | None:
        """The challenge of a 401 from the registry, Bearer preferred; remembered for the
        requests that follow.  A 401 from another origin (the request's own, or a
        redirect's target) raises: it is never answered with the registry's credentials."""
        if response.status_code != 401:
            return None
        if not self.is_registry(response.url):
            where = f"{response.request.method} {printable(redact_url(response.url), 200)}"
            raise AuthenticationError(
                f"{printable(response.url.host, 100)} asked for credentials ({where}); "
                f"ocipush sends them only to the registry {self.registry}",
                status=401,
            )
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        challenge = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if challenge is not None:
            self._challenge = challenge
        return challenge

    def _prepare(self, challenge: Challenge, scope: Scope, *, refused: str | None) -> TokenFlow:
        """Make sure there is something new to send: a token for ``scope`` other than the
        ``refused`` one.  Refused Basic credentials are final.  Returns the token it
        fetched (None: no token request went out), which the request then uses whatever
        the clock says: once a token request was yielded, the flow must send the request."""
        if challenge.scheme == "basic":
            if refused is not None:
                raise self._refused(scope, None)
            return None
        with self._renewal:  # held while the token request is out: the others wait for it
            current = self._token(scope)
            if current is None or current == refused:
                credentials = self._credentials(scope.repository)
                response = yield self._token_request(challenge, scope, credentials)
                return self._store_token(response, scope, credentials)
        return None

    def _authorize(self, request: httpx.Request, scope: Scope, fetched: str | None = None) -> str | None:
        """Set the request's Authorization (``fetched``: the token just fetched for it),
        bound to the request's origin; returns it (None: nothing to send)."""
        header = fetched or self._token(scope)
        if header is None and self._challenge is not None and self._challenge.scheme == "basic":
            credentials = self._credentials(scope.repository)
            if credentials is not None:
                self._check_plain_http(request.url, "credentials")
                header = credentials.basic_header()
        if header is None:
            request.headers.pop("Authorization", None)
            request.extensions.pop(BINDING_EXTENSION, None)
        else:
            request.headers["Authorization"] = header
            request.extensions[BINDING_EXTENSION] = Binding(origin_of(request.url))
        return header

    def _token_request(self, challenge: Challenge, scope: Scope, credentials: Credentials | None) -> httpx.Request:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthenticationError(f"{self.registry}: its Bearer challenge names no token service (realm)")
        url = parse_realm(realm, self.registry)
        service = {"service": challenge.params["service"]} if "service" in challenge.params else {}
        if credentials is not None and credentials.identity_token:
            # OAuth2 refresh-token grant, as docker does with an identity token.
            self._check_plain_http(url, "an identity token")
            form = {"grant_type": "refresh_token", "refresh_token": credentials.identity_token,
                    "client_id": CLIENT_ID, "scope": " ".join(scope.tokens), **service}
            return httpx.Request("POST", url, data=form, extensions=self._bound(url, "an identity token"))
        params = [("scope", s) for s in scope.tokens] + list(service.items())
        headers = {}
        if credentials is not None:
            self._check_plain_http(url, "credentials")
            params.append(("account", credentials.username))
            headers["Authorization"] = credentials.basic_header()
        secret = "credentials" if credentials is not None else ""
        return httpx.Request("GET", url.copy_merge_params(tuple(params)), headers=headers,
                             extensions=self._bound(url, secret))

    def _bound(self, realm: httpx.URL, secret: str) -> dict[str, Binding]:
        """The extensions of a token request: bound to the realm's origin (guard_origin)."""
        service = f"{self.registry}: the token service {redact_url(realm.copy_with(query=None))}"
        return {BINDING_EXTENSION: Binding(origin_of(realm), service, secret)}

    def _store_token(self, response: httpx.Response, scope: Scope, credentials: Credentials | None) -> str:
        realm = redact_url(response.request.url.copy_with(query=None))
        what = f"{self.registry}: the token service {realm}"
        body = _drain(response, BODY_LIMITS["token"], what)
        if response.status_code in (400, 401, 403):  # 400: OAuth2's invalid_grant
            who = credentials.describe() if credentials else f"anonymous access; give {self.creds_flag} or log in"
            raise AuthenticationError(
                f"{self.registry}: authentication failed: the token service {realm} refused {who}"
            )
        if response.status_code != 200:
            reason = self.redact("".join(c for c in response.reason_phrase[:60] if c.isprintable()))
            raise RegistryError(f"{what} answered {response.status_code} {reason} without a usable token",
                                status=response.status_code)
        value, lifetime = parse_token_answer(body, what)
        # Renew early: a token that expires while a chunk is on its way fails that chunk.
        renew_at = time.monotonic() + max(lifetime - 10, lifetime / 2, MIN_TOKEN_REUSE)
        header = f"Bearer {value}"
        with self._lock:
            self._secrets.add(value)
            self._tokens[scope.tokens] = _Token(header, renew_at)
        return header

    # -- state ----------------------------------------------------------------------

    def _token(self, scope: Scope) -> str | None:
        with self._lock:
            token = self._tokens.get(scope.tokens)
        return token.header if token and token.renew_at > time.monotonic() else None

    def _credentials(self, repository: str) -> Credentials | None:
        with self._lock:  # a helper runs once per repository, not once per thread
            if repository not in self._found:
                found = self._found[repository] = self._lookup(repository)
                if found is not None:
                    self._secrets.add(found.password, found.identity_token, found.basic_header()[6:])
            return self._found[repository]

    def redact(self, text: str) -> str:
        """``text`` from a server (an error body, a reason phrase) without any secret of this
        run (password, its Basic form, identity token, tokens): a server may echo them."""
        return (Secrets.union(self._secrets, *self._also) if self._also else self._secrets).redact(text)

    def redact_also(self, other: RegistryAuth) -> None:
        """Redact ``other``'s secrets too, those it has and those it gets later: a
        ``docker://`` source's client and the destination's each know only their own, and
        one registry may be both (or the two may collude) and echo the other's password."""
        self._also.append(other._secrets)

    def _check_plain_http(self, url: httpx.URL, what: str) -> None:
        """Secrets go over plain HTTP only to this machine (not through a proxy, which may be
        anywhere), or to the registry's own host when the user made it insecure: never to
        another host, whatever --tls-verify says (a realm is the registry's word only)."""
        if url.scheme != "http":
            return
        if is_loopback_host(url.host) and not self._proxied(url):
            return
        if self.insecure and url.host.lower() == host_of(self.registry):
            return
        raise AuthenticationError(
            f"{self.registry}: refusing to send {what} over plain HTTP to {url.host}"
            + (" (through a proxy)" if self._proxied(url) else "")
            + "; use HTTPS, or make the registry insecure (--tls-verify=false or registries.conf)"
        )

    def _refused(self, scope: Scope, response: httpx.Response | None) -> AuthenticationError:
        credentials = self._credentials(scope.repository)
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", "")) if response else []
        error = next((c.params["error"] for c in challenges if c.params.get("error")), None)
        why = f" ({printable(self.redact(error), 60)})" if error else ""
        if credentials is None:
            return AuthenticationError(
                f"{self.registry}: authentication failed: anonymous access to {scope.repository} refused{why}; "
                f"give {self.creds_flag}, or log in with podman login or docker login",
                status=401,
            )
        return AuthenticationError(
            f"{self.registry}: authentication failed: the registry refused {credentials.describe()} "
            f"for {scope.repository}{why}",
            status=401,
        )


def _candidate_origins(registry: str) -> frozenset[Origin]:
    """``registry`` (host[:port]) over HTTPS and over plain HTTP, before ``bind``."""
    try:
        return frozenset(origin_of(httpx.URL(f"{scheme}://{registry}")) for scheme in ("https", "http"))
    except httpx.InvalidURL:
        return frozenset()

