"""Servers that look at a connection's first byte to tell a TLS ClientHello (0x16) from plain
HTTP, for the scheme probe's tests.

``SilentTLSFront`` is a local ``wrangler dev``: it accepts TCP, swallows a ClientHello and
never answers it (until the client hangs up, the server closes, or ``SILENCE_CAP_SECONDS``),
and splices plain HTTP to a real registry.  ``TLSStub`` is an HTTPS server whose handshakes
answer when a rule says (at once, after a delay, or never) and which tells plain HTTP it came
to a TLS port (400, as the CNCF registry and nginx do).  Both count connections by kind and
note when each arrived.  Stdlib only; shares no code with ocipush.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable

__all__ = ["SILENCE_CAP_SECONDS", "SilentTLSFront", "TLSStub"]

SILENCE_CAP_SECONDS = 40.0  # past the old connect timeout (30 s): the old code's stall shows in full
_HEAD_LIMIT = 64 * 1024


class _Sniffer:
    """Accepts on 127.0.0.1:<free port>; each connection goes to ``tls`` or ``plain``."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.hellos: list[float] = []  # time.monotonic() of each connection that began with a ClientHello
        self.plain: list[float] = []  # and of each that began otherwise
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        _quiet(self._sock.shutdown, socket.SHUT_RDWR)
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _quiet(conn.shutdown, socket.SHUT_RDWR)
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def tls(self, conn: socket.socket, index: int) -> None:
        raise NotImplementedError

    def plain_http(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def silence(self, conn: socket.socket) -> None:
        """Read and drop whatever comes, answer nothing, until the client hangs up."""
        deadline = time.monotonic() + SILENCE_CAP_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([conn], [], [], 0.2)
            if readable and not conn.recv(65536):
                return

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(SILENCE_CAP_SECONDS)
            first = conn.recv(1, socket.MSG_PEEK)
            if not first:
                return
            with self._lock:
                kind = self.hellos if first == b"\x16" else self.plain
                kind.append(time.monotonic())
                index = len(kind) - 1
            if first == b"\x16":
                self.tls(conn, index)
            else:
                self.plain_http(conn)
        except (OSError, ssl.SSLError):
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            _quiet(conn.close)


class SilentTLSFront(_Sniffer):
    """Plain HTTP spliced to ``upstream`` (HOST:PORT); a ClientHello is never answered."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))

    def tls(self, conn: socket.socket, index: int) -> None:
        self.silence(conn)

    def plain_http(self, conn: socket.socket) -> None:
        with socket.create_connection(self._upstream, timeout=SILENCE_CAP_SECONDS) as upstream:
            back = threading.Thread(target=_pump, args=(upstream, conn), daemon=True)
            back.start()
            _pump(conn, upstream)
            back.join(SILENCE_CAP_SECONDS)


class TLSStub(_Sniffer):
    """HTTPS that answers ``GET /v2/`` with 200 ``{}``; ``delay(index)`` says how long the
    index-th TLS connection's handshake waits first (None: it never comes)."""

    def __init__(self, context: ssl.SSLContext, delay: Callable[[int], float | None] = lambda index: 0.0) -> None:
        super().__init__()
        self._context = context
        self._delay = delay

    def tls(self, conn: socket.socket, index: int) -> None:
        delay = self._delay(index)
        if delay is None:
            self.silence(conn)
            return
        if self._stop.wait(delay):
            return
        with self._context.wrap_socket(conn, server_side=True) as tls:
            while _read_head(tls):
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                            b"Docker-Distribution-Api-Version: registry/2.0\r\nContent-Length: 2\r\n\r\n{}")

    def plain_http(self, conn: socket.socket) -> None:
        if _read_head(conn):
            body = b"Client sent an HTTP request to an HTTPS server.\n"
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def _read_head(conn: socket.socket) -> bool:
    """Read one request head (our pings have no body); False when the client hung up."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = conn.recv(4096)
        if not data or len(head) > _HEAD_LIMIT:
            return False
        head += data
    return True


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then end ``sink``'s writing side."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    _quiet(sink.shutdown, socket.SHUT_WR)


def _quiet(function, *args) -> None:
    with contextlib.suppress(OSError):
        function(*args)
