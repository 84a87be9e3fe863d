"""The HTTP side of one registry: TLS choice, authentication, error messages; the scheme is found by ``connect``.

TLS settings come from ``tls.registry_tls`` (cert dirs, registries.conf), credentials
from the user or ``credentials.AuthFiles``; ``auth.RegistryAuth`` answers challenges.

Every request goes through ``RegistryClient.request``, which turns transport failures and
unexpected statuses into one-line ``RegistryError``s naming the method, URL and reason.
URLs in messages lose their query: upload locations and redirects may carry signatures.

Nothing a server sends is read whole: every request has a total deadline besides the
per-read timeout (``transport``), answers are streamed and read up to a limit by purpose
(``headers.BODY_LIMITS``), never inflated (we ask for ``identity``).  ``interrupt()`` stops
every request from another thread; ``cleanup()`` then sends the last DELETEs.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx

from ..__version__ import __version__
from ..errors import AuthenticationError, RegistryError
from .auth import Credentials, RegistryAuth
from .connect import Probe, failure_reason, find_origin
from .credentials import AuthFiles
from .headers import BODY_LIMITS, read_bounded, redact_text, redact_url
from .retry import RetryPolicy
from .tls import registry_tls
from .transport import (
    CancellableBackend,
    Interrupted,
    body_size,
    bounded_transport,
    environment_proxies,
    guard_origin,
    keep_raw,
    proxied,
    request_scope,
)

__all__ = ["CLEANUP_DEADLINE", "INTERRUPT_GRACE", "ClientOptions", "RegistryClient", "describe_error", "redact"]

USER_AGENT = f"ocipush/{__version__}"
CLEANUP_DEADLINE = 5.0  # seconds for each DELETE sent after an interrupt
INTERRUPT_GRACE = 3.0  # seconds the requests in flight get to end after an interrupt
# An answer whose body we do not use (202 to a PATCH, 201 to a PUT, the ping's {}) is read
# anyway, up to this much, so its connection can serve the next request; past it, refused.
_UNUSED_BODY_LIMIT = BODY_LIMITS["error"]
_OciErrors = list[dict[str, Any]]  # an OCI error body's "errors", the objects among them


def _optional_path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)


@attrs.frozen
class ClientOptions:
    tls_verify: bool | None = None  # None: verify, unless registries.conf marks the registry insecure
    credentials: Credentials | None = None  # the user's own; None: looked up in the auth files
    anonymous: bool = False  # no credentials at all, none looked up (skopeo's --src-no-creds/--dest-no-creds)
    authfile: Path | None = attrs.field(default=None, converter=_optional_path)  # the only auth file, when given
    cert_dir: Path | None = attrs.field(default=None, converter=_optional_path)  # instead of certs.d/HOST
    timeout: float = 120.0  # per read/write: chunks of 100 MB on slow links need minutes
    deadline: float = 300.0  # the whole of a request without a body (--timeout), token requests included
    body_rate: int = 64 * 1024  # bytes/s: a request sending N bytes gets N / body_rate seconds more

    def deadline_for(self, body_size: int) -> float:
        """Seconds a request may take in all, sending ``body_size`` bytes."""
        return self.deadline + body_size / self.body_rate


class RegistryClient:
    """Talks to one registry host. Thread-safe: uploads share it."""

    def __init__(
        self,
        host: str,
        options: ClientOptions = ClientOptions(),
        *,
        loopback: bool = False,
        retry: RetryPolicy | None = None,
        actions: str = "pull,push",
        creds_flag: str = "--creds",
    ):
        self.host = host
        self.creds_flag = creds_flag  # the option that gives this registry's credentials, for messages
        self.flags = creds_flag.removesuffix("creds")  # "--" or "--src-": this side's options, for messages
        self.options = options
        self.loopback = loopback
        self.retry = RetryPolicy() if retry is None else retry
        self.on_retry: Callable[[RegistryError], None] = lambda error: None
        self.base_url = ""
        self.tls = registry_tls(host, verify=options.tls_verify, cert_dir=options.cert_dir, flags=self.flags)
        # Plain HTTP only to this machine (no proxy between), or to a registry the user made insecure.
        local = loopback and not proxied(httpx.URL(f"http://{host}/v2/"))
        self._schemes = ("https", "http") if local or self.tls.insecure else ("https",)
        self.auth = RegistryAuth(host, self._credentials_lookup(), insecure=self.tls.insecure, proxied=proxied,
                                 actions=actions, creds_flag=creds_flag)
        self._backend = CancellableBackend()
        self._http = self._make_http(self._backend)
        self._spare: httpx.Client | None = None  # for cleanup() after interrupt()
        self._spare_lock = threading.Lock()
        self._local = threading.local()  # .cleanup: the deadline of this thread's cleanup() requests
        self._idle = threading.Condition()  # notified when no request is in flight
        self._active = 0  # requests in flight
        self._moved: dict[str, str] = {}  # upload URL → the Location its last answer gave (moved_to)

    def _make_http(self, backend: CancellableBackend) -> httpx.Client:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}

        def transport(proxy: str | None = None) -> httpx.HTTPTransport:
            return bounded_transport(backend, verify=self.tls.context, limits=limits,
                                     proxy=httpx.Proxy(proxy) if proxy else None)

        # httpx ignores HTTP(S)_PROXY and NO_PROXY once given a transport: mount them as it would.
        proxies = {pattern: transport(url) if url else None for pattern, url in environment_proxies().items()}
        return httpx.Client(
            transport=transport(),
            mounts=proxies,
            timeout=self._timeout(self.options.deadline),
            headers=headers,
            auth=self.auth,
            event_hooks={"request": [guard_origin], "response": [keep_raw]},
        )

    def _timeout(self, seconds: float) -> httpx.Timeout:
        # The backend cuts these to the time left; the wait for a free connection it cannot see.
        return httpx.Timeout(self.options.timeout, connect=min(30.0, self.options.timeout), pool=seconds)

    def _credentials_lookup(self) -> Callable[[str], Credentials | None]:
        """repository → credentials: the user's own for every repository, else the auth files'."""
        given = self.options.credentials
        if self.options.anonymous:
            return lambda repository: None
        if given is not None:
            return lambda repository: given
        return functools.partial(AuthFiles.discover(self.options.authfile).find, self.host)

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        if self._spare is not None:
            self._spare.close()

    # -- interrupts -------------------------------------------------------------------

    def interrupt(self, grace: float = INTERRUPT_GRACE) -> None:
        """Stop every request, from any thread: none starts from now on (each raises
        ``Interrupted``, except inside ``cleanup()``); those in flight get ``grace`` seconds
        to end, then their connections are shut down.

        Why not cut at once: a PATCH cut midway leaves the CNCF registry holding part of
        the chunk under a state no client was told, and it refuses the DELETE of that
        upload (404 BLOB_UPLOAD_INVALID), which then stays in its storage.  A PATCH that
        ends brings the Location its DELETE needs."""
        self._backend.refuse()
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout=grace)
        self._backend.cut()

    def moved_to(self, location: str) -> str:
        """The newest ``Location`` the registry gave in answer to a request on ``location``
        (an upload's next URL, which may carry its state): for the DELETE after an
        interrupt, when the thread that got that answer may not have stored it yet."""
        url = location
        for _ in range(8):
            with self._idle:
                following = self._moved.get(_key(url))
            if following is None:
                break
            url = following
        return url

    @contextlib.contextmanager
    def cleanup(self, seconds: float = CLEANUP_DEADLINE) -> Iterator[None]:
        """Requests this thread sends inside go out on fresh connections, even after
        ``interrupt()``, each bounded by ``seconds``: the DELETEs of open uploads."""
        with self._spare_lock:
            if self._spare is None:
                self._spare = self._make_http(CancellableBackend())
        self._local.cleanup = seconds
        try:
            yield
        finally:
            self._local.cleanup = None

    # -- connection -----------------------------------------------------------------

    def connect(self) -> None:
        """Find the origin that serves ``/v2/`` (``connect.find_origin``): HTTPS, then plain
        HTTP where allowed, the HTTPS probe's handshake cut short there.  Found once: every
        request of this client goes to it, and credentials go to it only."""
        probe = Probe(self.host, self._schemes, self._exchange, self._describe, self.retry, self.on_retry,
                      self.flags)
        self.base_url = find_origin(probe)
        self.auth.bind(self.base_url)

    def _describe(self, response: httpx.Response, body: bytes) -> str:
        """The ping's answer in words, secrets the server echoed removed."""
        return self.auth.redact(describe_error(response, body))

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    # -- requests -------------------------------------------------------------------

    def request(self, method: str, url: str, *, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        """Send one request; a status outside ``expect`` raises RegistryError.

        The answer comes back closed: its status and headers are there, its body was read
        (up to 64 KiB, refused past it) and dropped.  The request, answers to its auth
        challenge and redirects included, has ``ClientOptions.deadline_for`` its body in all.
        """
        return self._checked(method, url, expect, kwargs)[0]

    def fetch(
        self, method: str, url: str, *, expect: tuple[int, ...], limit: int, **kwargs: Any
    ) -> tuple[httpx.Response, bytes]:
        """``request``, and the body of an expected answer read up to ``limit`` bytes (a
        manifest pulled from a source registry), under the request's deadline."""
        return self._checked(method, url, expect, kwargs, limit=limit)

    def open(self, method: str, url: str, *, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        """``request``, but an expected answer comes back with its body unread, for the
        caller to stream (a blob) and close; its reads are outside the request's deadline
        unless the caller re-enters a scope (``transport.within``)."""
        return self._checked(method, url, expect, kwargs, stream=expect)[0]

    def _checked(
        self, method: str, url: str, expect: tuple[int, ...], kwargs: dict[str, Any], *,
        limit: int = 0, stream: tuple[int, ...] = (),
    ) -> tuple[httpx.Response, bytes]:
        try:
            response, body = self._exchange(method, url, kwargs, limit=limit, stream=stream)
        except httpx.HTTPError as e:
            raise RegistryError(f"{method} {redact(url)}: {failure_reason(e)}") from None
        except httpx.InvalidURL as e:
            raise RegistryError(f"{method} {redact_text(url)}: invalid URL ({e})") from None
        if response.status_code in expect:
            return response, body
        errors = _oci_errors(body)  # parsed once, for the codes and the message
        codes = _error_codes(errors)
        message = f"{method} {redact(url)}: {self.auth.redact(describe_error(response, body, errors))}"
        if response.status_code == 401:
            raise AuthenticationError(
                f"{self.host}: authentication failed ({message})"
                + ("" if self.options.credentials else f"; give credentials with {self.creds_flag}")
            )
        headers = {k.lower(): v for k, v in response.headers.items()}
        raise RegistryError(message, status=response.status_code, codes=codes, headers=headers)

    def _exchange(
        self, method: str, url: str, kwargs: dict[str, Any], *, limit: int = 0, stream: tuple[int, ...] = ()
    ) -> tuple[httpx.Response, bytes]:
        """One request under its deadline and read budget: the closed answer and its body
        (read up to ``limit``, or the limit for unused bodies); an answer whose status is in
        ``stream`` comes back open, its body unread."""
        cleanup = getattr(self._local, "cleanup", None)
        if cleanup is None and self._backend.refusing:
            raise Interrupted()
        http = self._spare if cleanup is not None else self._http
        assert http is not None
        seconds = cleanup if cleanup is not None else self.options.deadline_for(body_size(kwargs))
        kwargs = dict(kwargs)
        follow = kwargs.pop("follow_redirects", False)
        kwargs.setdefault("timeout", self._timeout(seconds))
        with self._in_flight(), request_scope(seconds) as scope:
            try:
                response = http.send(http.build_request(method, url, **kwargs), stream=True, follow_redirects=follow)
                body = b""
                if response.status_code not in stream:
                    body = _read(response, max(limit, _UNUSED_BODY_LIMIT), f"{method} {redact(url)}")
                self._scrub_headers(response)
                self._remember_location(response)
            except httpx.HTTPError as e:
                if cleanup is None and self._backend.refusing:
                    raise Interrupted() from None
                if isinstance(e, httpx.TimeoutException) and scope.remaining() < 0.01:
                    raise httpx.TimeoutException(
                        f"no complete answer within {_seconds(seconds)} (the request's deadline; see --timeout)"
                    ) from None
                raise
        return response, body

    def _scrub_headers(self, response: httpx.Response) -> None:
        """A header that echoes a secret of this run loses it here, before anything parses or
        quotes it: an error line shows at most a header's first characters, which redaction
        of the whole secret afterwards would miss."""
        for name, value in list(response.headers.items()):
            clean = self.auth.redact(value)
            if clean != value:
                response.headers[name] = clean

    def _remember_location(self, response: httpx.Response) -> None:
        """Before the request counts as ended: where an upload goes on (see moved_to)."""
        location = response.headers.get("Location")
        if response.request.method not in ("PATCH", "GET") or response.status_code not in (202, 204) or not location:
            return
        try:
            following = str(response.request.url.join(location))
        except httpx.InvalidURL:
            return
        with self._idle:
            if len(self._moved) >= 4096:
                self._moved.pop(next(iter(self._moved)))
            self._moved[str(response.request.url)] = following

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def idempotent(self, method: str, url: str, *, expect: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        """``request`` for requests that may simply be sent again: retried when transient,
        ``retry.attempts`` times at most (``RetryPolicy.run``)."""
        return self.retry.run(lambda: self.request(method, url, expect=expect, **kwargs), on_retry=self.on_retry)


def redact(url: str | httpx.URL) -> str:
    try:
        u = httpx.URL(str(url))
    except httpx.InvalidURL:
        return redact_text(str(url))
    return redact_url(u)


def _read(response: httpx.Response, limit: int, what: str) -> bytes:
    """``read_bounded``, with the status of the answer in its error: an endless 200 is not
    worth another try, an endless 503 is."""
    try:
        return read_bounded(response, limit, what)
    except RegistryError as e:
        headers = {k.lower(): v for k, v in response.headers.items()}
        raise RegistryError(str(e), status=response.status_code, headers=headers) from None


def _key(url: str) -> str:
    try:
        return str(httpx.URL(url))
    except httpx.InvalidURL:
        return url


def _seconds(value: float) -> str:
    return f"{value:.3g}s" if value < 100 else f"{value:.0f}s"


def _oci_errors(body: bytes) -> _OciErrors | None:
    """The ``errors`` of an OCI error body; None when the body is not one."""
    try:
        errors = json.loads(body).get("errors") or []
    except Exception:  # not JSON, not an object, nested too deep…
        return None
    return [e for e in errors[:100] if isinstance(e, dict)] if isinstance(errors, list) else None


def _error_codes(errors: _OciErrors | None) -> tuple[str, ...]:
    return tuple(str(e.get("code"))[:100] for e in errors or ())


def describe_error(response: httpx.Response, body: bytes | None = None, errors: _OciErrors | None = None) -> str:
    """``413 Request Entity Too Large: <detail>`` from an OCI error body, an HTML page or text.
    ``body``: the answer's body as read (bounded); None: the response's, if it was read.
    ``errors``: its ``_oci_errors``, when the caller has parsed them already."""
    head = f"{response.status_code} {response.reason_phrase}".strip()
    if body is None:
        try:
            body = response.content
        except httpx.ResponseNotRead:
            body = b""
    raw = body[:8192]
    text = raw.decode("utf-8", "replace")
    junk = sum(1 for c in text if c == "\ufffd" or (not c.isprintable() and c not in "\t\n\r"))
    if errors is None:
        errors = _oci_errors(body)
    if errors is not None:
        detail = "; ".join(f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ") for e in errors)
    elif junk > len(text) // 20:  # not text (compressed, binary): say so, show none of it
        detail = f"{len(raw)}{'+' if len(raw) == 8192 else ''} bytes that are not text"
    else:
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        detail = " ".join((title[1] if title else re.sub(r"<[^>]+>", " ", text)).split())[:160]
    # Whatever a server sends is untrusted: no control characters reach the terminal.
    detail = " ".join("".join(c if c.isprintable() else " " for c in detail).split())[:300]
    head = "".join(c for c in head if c.isprintable())
    if detail and detail.lower() != head.lower() and detail.lower() not in head.lower():
        return f"{head}: {detail}"
    return head
