"""The sockets under ``RegistryClient``: a total deadline per request, a byte budget per
request, and a way to stop every request in flight from another thread.

httpx only has per-operation timeouts: a server that trickles a byte every 100 s never
times out, and one that streams forever is read forever.  So every socket operation of a
request (connect, TLS handshake, each read and write — token requests of the auth flow
and redirects included) waits at most ``min(its own timeout, time left until the
request's deadline)``, and every request may read at most ``READ_BUDGET`` bytes from the
network in all, headers and bodies of every answer it gets.  Both are held per thread by
``request_scope``, which ``RegistryClient.request`` opens around the whole request.

``CancellableBackend.cancel`` is the first step of an interrupt: it half-closes every
socket (the server sees the end of our body, so the CNCF registry finishes with a PATCH
before we DELETE its upload; a DELETE that overtakes a PATCH leaves the upload behind),
waits briefly for the servers to answer or close, then shuts every socket down; every
later connect, read or write fails.  Requests after that go through another backend.

This relies on one httpx internal: ``HTTPTransport._pool`` (an httpcore pool, whose
``network_backend`` is public).  pyproject.toml pins the versions it was tested with, and
``bounded_transport`` fails at once if the attribute is missing.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import httpcore
import httpx

__all__ = [
    "CancellableBackend",
    "Interrupted",
    "READ_BUDGET",
    "RequestScope",
    "bind",
    "bounded_transport",
    "current_scope",
    "request_scope",
]

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


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    """The timeout of one socket operation: cut to the time left in the request."""
    scope = current_scope()
    if scope is None:
        return timeout
    left = scope.remaining()
    if left <= 0:
        raise expired(f"the request's deadline of {scope.seconds:g}s has passed")
    return left if timeout is None else min(timeout, left)


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
        tls = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout))
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
        self.cancelled = False

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        self.check(httpcore.ConnectError)
        inner = self._inner.connect_tcp(host, port, _bounded(timeout, httpcore.ConnectTimeout),
                                        local_address, socket_options)
        return self._track(_Stream(inner, self))

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        self.check(httpcore.ConnectError)
        inner = self._inner.connect_unix_socket(path, _bounded(timeout, httpcore.ConnectTimeout), socket_options)
        return self._track(_Stream(inner, self))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

    # -- bookkeeping ------------------------------------------------------------------

    def check(self, error: type[Exception]) -> None:
        if self.cancelled:
            raise error("the push was interrupted")

    def _track(self, stream: _Stream) -> _Stream:
        with self._lock:
            self._live.add(stream)
            cancelled = self.cancelled
        if cancelled:  # cancel() ran while this one was connecting
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

    def cancel(self, grace: float = 2.0) -> None:
        """Stop every request in flight (from any thread) and refuse new ones.

        Each socket is half-closed first and we wait up to ``grace`` seconds for its
        server to answer or close: a server then has finished with the request (the CNCF
        registry has written what it got of a PATCH) before anything else is sent.
        Duplicates of the sockets keep the connections ours while their threads give up.
        """
        with self._lock:
            self.cancelled = True
            socks = [s.socket() for s in self._live]
        dups = [_dup(sock) for sock in socks if sock is not None]
        dups = [d for d in dups if d is not None]
        for d in dups:
            _shutdown(d, socket.SHUT_WR)
        _wait_closed(dups, grace)
        for d in dups:
            _shutdown(d)
            d.close()


def _dup(sock: socket.socket) -> socket.socket | None:
    try:
        return socket.socket(fileno=os.dup(sock.fileno()))
    except OSError:
        return None  # already closed by its thread


def _shutdown(sock: socket.socket | None, how: int = socket.SHUT_RDWR) -> None:
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, how)  # the plain socket's: ssl.SSLSocket.shutdown unwraps first
    except OSError:
        pass


def _wait_closed(socks: list[socket.socket], grace: float) -> None:
    """Read and drop what each server still sends, until it closes or ``grace`` passes."""
    deadline = time.monotonic() + grace
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        open_ = len(socks)
        while open_ and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(key.fileobj)
                    open_ -= 1


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
    if not hasattr(pool, "_network_backend"):
        raise RuntimeError(
            f"httpx {httpx.__version__} / httpcore {httpcore.__version__}: "
            f"{type(transport).__name__} has no pool backend to bound"
        )
    pool._network_backend = backend
