"""The sockets under ``RegistryClient``: a total deadline per request, a byte budget per
request, and a way to stop every request in flight from another thread.

httpx only has per-operation timeouts: a server that trickles a byte every 100 s never
times out, and one that streams forever is read forever.  So every socket operation of a
request (connect, TLS handshake, each read and write — token requests of the auth flow
and redirects included) waits at most ``min(its own timeout, time left until the
request's deadline)``, and every request may read at most ``READ_BUDGET`` bytes from the
network in all, headers and bodies of every answer it gets.  Both are held per thread by
``request_scope``, which ``RegistryClient.request`` opens around the whole request.

``guard_origin`` (a request hook: it sees redirects too) keeps what the auth flow bound to
an origin (``Binding``) from going anywhere else; ``proxied`` says whether the environment
sends a URL through a proxy.

``CancellableBackend`` is how an interrupt stops requests: ``refuse()`` opens no new
connection, ``cut()`` shuts every socket down from any thread, so the requests on them fail
at once and every later connect, read or write too.  Requests after that (the DELETEs of
open uploads) go through another backend.

This relies on httpx internals: ``HTTPTransport._pool._network_backend`` (the httpcore pool
takes ``network_backend`` publicly, httpx does not pass it on) and ``get_environment_proxies``
(httpx ignores HTTP(S)_PROXY once given a transport).  pyproject.toml pins the versions
this was tested with, and ``bind`` fails at once if the attribute is missing.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import httpcore
import httpx

from ..errors import AuthenticationError, OcipushError
from .headers import strict_int
from .tokens import printable

__all__ = [
    "BINDING_EXTENSION",
    "READ_BUDGET",
    "Binding",
    "CancellableBackend",
    "HandshakeCap",
    "Interrupted",
    "RequestScope",
    "bind",
    "body_size",
    "bounded_transport",
    "current_scope",
    "environment_proxies",
    "guard_origin",
    "handshake_cap",
    "keep_raw",
    "origin_of",
    "proxied",
    "request_scope",
    "within",
]

BINDING_EXTENSION = "ocipush.binding"  # httpx request extension: the origin a request's secrets are for
Origin = tuple[str, str, int]

# All the bytes one request may read: its answer, the 401s, redirects and token answers on
# the way.  The largest body we accept is a 4 MiB manifest (headers.BODY_LIMITS).
READ_BUDGET = 16 * 1024 * 1024


class Interrupted(KeyboardInterrupt):
    """The push was stopped by a signal (SIGINT, SIGTERM), or a request was refused
    because it was.  A KeyboardInterrupt, so it passes every ``except Exception``."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # as the shell reports a death by that signal: 130, 143

    @property
    def message(self) -> str:
        return "terminated" if self.signum == signal.SIGTERM else "interrupted"


@attrs.define
class RequestScope:
    """One request's limits; ``read`` counts the bytes it has read so far."""

    deadline: float  # time.monotonic()
    seconds: float  # the whole allowance, for messages
    budget: int = READ_BUDGET
    read: int = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0


_local = threading.local()


def current_scope() -> RequestScope | None:
    return getattr(_local, "scope", None)


@contextlib.contextmanager
def request_scope(seconds: float, budget: int = READ_BUDGET) -> Iterator[RequestScope]:
    """Everything this thread sends and reads inside is one request: ``seconds`` in all."""
    outer = current_scope()
    scope = RequestScope(time.monotonic() + seconds, seconds, budget)
    _local.scope = scope
    try:
        yield scope
    finally:
        _local.scope = outer


@contextlib.contextmanager
def within(scope: RequestScope) -> Iterator[RequestScope]:
    """Re-enter a scope opened earlier: a streamed answer's body (a blob pulled from a
    source registry) is read piece by piece, each read under the deadline and budget of
    the request that opened it."""
    outer = current_scope()
    _local.scope = scope
    try:
        yield scope
    finally:
        _local.scope = outer


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """The timeout of one socket operation: cut to the time left in the request."""
    scope = current_scope()
    if scope is None:
        return timeout
    left = scope.remaining()
    if left <= 0:
        raise expired(f"the request's deadline of {scope.seconds:g}s has passed")
    return left if timeout is None else min(timeout, left)


@attrs.define
class HandshakeCap:
    """A shorter deadline for the TLS handshakes of a probe; ``cut`` once it ended one."""

    seconds: float
    cut: bool = False


@contextlib.contextmanager
def handshake_cap(seconds: float) -> Iterator[HandshakeCap]:
    """TLS handshakes this thread starts inside wait at most ``seconds`` for the server.

    Why: a port that accepts TCP and swallows the ClientHello (a plain-HTTP dev server) would
    hold the HTTPS probe for the whole connect timeout before plain HTTP gets its turn."""
    cap = HandshakeCap(seconds)
    outer = getattr(_local, "handshake", None)
    _local.handshake = cap
    try:
        yield cap
    finally:
        _local.handshake = outer


@contextlib.contextmanager
def _capped(timeout: float | None) -> Iterator[float | None]:
    """The handshake's timeout under the thread's ``handshake_cap``, if it is the shorter."""
    cap: HandshakeCap | None = getattr(_local, "handshake", None)
    if cap is None or (timeout is not None and timeout <= cap.seconds):
        yield timeout
        return
    try:
        yield cap.seconds
    except httpcore.ConnectTimeout:
        cap.cut = True
        raise httpcore.ConnectTimeout(f"no TLS handshake within {cap.seconds:g}s") from None


class _Stream(httpcore.NetworkStream):
    """A socket stream whose every operation respects the thread's request scope."""

    def __init__(self, inner: httpcore.NetworkStream, backend: CancellableBackend):
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._backend.check(httpcore.ReadError)
        data = self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))
        scope = current_scope()
        if scope is not None:
            scope.read += len(data)
            if scope.read > scope.budget:
                raise httpcore.ReadError(f"more than {scope.budget} bytes in answer to one request")
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._backend.check(httpcore.WriteError)
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._backend.forget(self)
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        self._backend.check(httpcore.ConnectError)
        with _capped(_bounded(timeout, httpcore.ConnectTimeout)) as seconds:
            tls = self._inner.start_tls(ssl_context, server_hostname, seconds)
        wrapped = _Stream(tls, self._backend)
        self._backend.replace(self, wrapped)
        return wrapped

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def socket(self) -> socket.socket | None:
        sock = self._inner.get_extra_info("socket")
        return sock if isinstance(sock, socket.socket) else None


class CancellableBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, bounded by the request scope, and cancellable."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()
        self._live: set[_Stream] = set()
        self._lock = threading.Lock()
        self.refusing = False  # no new connections
        self.cancelled = False  # and no more reads or writes on the open ones

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        self.check(httpcore.ConnectError, self.refusing)
        inner = self._inner.connect_tcp(host, port, _bounded(timeout, httpcore.ConnectTimeout),
                                        local_address, socket_options)
        return self._track(_Stream(inner, self))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        self.check(httpcore.ConnectError, self.refusing)
        inner = self._inner.connect_unix_socket(path, _bounded(timeout, httpcore.ConnectTimeout), socket_options)
        return self._track(_Stream(inner, self))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

    # -- bookkeeping ------------------------------------------------------------------

    def check(self, error: type[Exception], refused: bool | None = None) -> None:
        if self.cancelled if refused is None else refused:
            raise error("the push was interrupted")

    def _track(self, stream: _Stream) -> _Stream:
        with self._lock:
            self._live.add(stream)
            cancelled = self.cancelled
        if cancelled:  # cut() ran while this one was connecting
            _shutdown(stream.socket())
        return stream

    def replace(self, old: _Stream, new: _Stream) -> None:
        with self._lock:
            self._live.discard(old)
        self._track(new)

    def forget(self, stream: _Stream) -> None:
        with self._lock:
            self._live.discard(stream)

    # -- interrupt ----------------------------------------------------------------------

    def refuse(self) -> None:
        """Open no new connection from now on; those open carry on until ``cut()``."""
        self.refusing = True

    def cut(self) -> None:
        """Shut every socket down now, from any thread: the requests on them fail at once,
        and so does every later read, write or connect."""
        with self._lock:
            self.refusing = self.cancelled = True
            socks = [s.socket() for s in self._live]
        for sock in socks:
            _shutdown(sock)


def _shutdown(sock: socket.socket | None) -> None:
    if sock is None:
        return
    # The plain socket's shutdown: ssl.SSLSocket's would unwrap the TLS layer first,
    # under the feet of the thread reading from it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def bounded_transport(
    backend: CancellableBackend, *, verify: Any, limits: httpx.Limits, proxy: httpx.Proxy | None = None
) -> httpx.HTTPTransport:
    """An httpx transport whose connections go through ``backend``."""
    transport = httpx.HTTPTransport(verify=verify, limits=limits, proxy=proxy)
    bind(transport, backend)
    return transport


def bind(transport: httpx.BaseTransport, backend: CancellableBackend) -> None:
    """Make an httpx transport (also one httpx made for a proxy from the environment)
    open its connections through ``backend``."""
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        raise RuntimeError(
            f"httpx {httpx.__version__} / httpcore {httpcore.__version__}: "
            f"{type(transport).__name__} has no pool backend to bound"
        )
    pool._network_backend = backend


def environment_proxies() -> dict[str, str | None]:
    """HTTP(S)_PROXY, ALL_PROXY and NO_PROXY as httpx reads them: {URL pattern: proxy URL, or
    None for no proxy}."""
    from httpx._utils import get_environment_proxies

    return get_environment_proxies()


def body_size(kwargs: dict[str, Any]) -> int:
    """The size of a request's body, for its deadline: 0 when it has none."""
    content = kwargs.get("content")
    if isinstance(content, (bytes, bytearray)):
        return len(content)
    length = getattr(content, "length", None)
    if isinstance(length, int):
        return length
    declared = (kwargs.get("headers") or {}).get("Content-Length")
    try:
        return strict_int(declared, "Content-Length") if declared else 0
    except OcipushError:
        return 0


def keep_raw(response: httpx.Response) -> None:
    """We asked for ``identity``: a body compressed anyway is taken as the bytes it is, never
    inflated (a few KB of gzip could inflate past any limit)."""
    response.headers.pop("Content-Encoding", None)


def origin_of(url: httpx.URL) -> Origin:
    """(scheme, host, port) with the scheme's default port filled in."""
    port = url.port or {"https": 443, "http": 80}.get(url.scheme, 0)
    return url.scheme, url.host.lower(), port


@attrs.frozen
class Binding:
    """What a request carries that is the user's, and the one origin it may go to.

    The auth flow sets it (``BINDING_EXTENSION``) on every request it authorizes and on
    every token request; httpx hands a request's extensions on to the requests it makes
    when following a redirect, so ``guard_origin`` sees it on each of them."""

    origin: Origin
    token_service: str = ""  # a token request: the service, for messages
    secret: str = ""  # what a token request carries ("credentials", "an identity token"); "": nothing


def guard_origin(request: httpx.Request) -> None:
    """httpx request hook, run before every request goes out, redirects included: nothing
    of the user's leaves the origin it is bound to.

    httpx strips Authorization on a redirect to another origin, except on an http→https
    upgrade of the same host, and a 307/308 keeps a POST's body (a refresh token).  So
    here: another origin never gets Authorization, and a token request carrying a secret
    is refused rather than sent there (its answer would be taken for our token too)."""
    binding = request.extensions.get(BINDING_EXTENSION)
    if not isinstance(binding, Binding) or origin_of(request.url) == binding.origin:
        return
    if binding.token_service and binding.secret:
        target = str(request.url.copy_with(query=None, fragment=None))
        raise AuthenticationError(
            f"{binding.token_service} redirected to {printable(target, 200)}; "
            f"ocipush sends {binding.secret} only to the token service the registry named"
        )
    request.headers.pop("Authorization", None)


def proxied(url: httpx.URL, proxies: dict[str, str | None] | None = None) -> bool:
    """Whether a request to ``url`` goes through a proxy from the environment (``proxies``:
    ``environment_proxies()``), matched as httpx matches its mounts.  A proxy may be
    anywhere: a loopback URL behind one does not stay on this machine."""
    from httpx._utils import URLPattern

    table = environment_proxies() if proxies is None else proxies
    for pattern in sorted(URLPattern(key) for key in table):
        if pattern.matches(url):
            return table[pattern.pattern] is not None
    return False
