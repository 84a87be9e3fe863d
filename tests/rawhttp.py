"""HTTP/1.1 over raw sockets, for servers that must misbehave: stream a body forever,
trickle bytes, send header values of any bytes and any status line, never answer, cut
the connection — what no proper server library lets a test do.

``RawServer`` accepts on 127.0.0.1:<free port>, one thread per connection, logs every
``Request`` and sends what ``answer(request)`` returns: a ``Reply`` (whose body may be
``Endless`` or ``Trickle``, whose head may be trickled), ``Hang``, ``Cut`` or ``Raw``.

It is bounded itself: an endless stream stops when the client goes away, after
``STREAM_CAP_BYTES`` or ``STREAM_CAP_SECONDS``; a hang ends when the client closes, at
``HANG_CAP_SECONDS`` or on ``close()``; request heads and bodies are read up to a limit;
a client silent for ``_SOCKET_TIMEOUT`` is dropped.  A broken client can make a test
fail, never hang the suite.  Shares no code with ocipush.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Behaviour", "Cut", "Endless", "Hang", "Raw", "RawServer", "Reply", "Request", "Trickle"]

STREAM_CAP_BYTES = 320 * 1024 * 1024  # an "endless" body stops here (past the tests' memory limit)
STREAM_CAP_SECONDS = 40.0
HANG_CAP_SECONDS = 40.0
_HEAD_LIMIT = 1024 * 1024
_BODY_LIMIT = 64 * 1024 * 1024
_BODY_PREFIX = 4096  # what a log record keeps of a body
_SOCKET_TIMEOUT = 10.0  # a client that neither sends nor reads for this long is dropped


# -- what a server answers -------------------------------------------------------------


@dataclass(frozen=True)
class Endless:
    """A body that never ends: ``block`` again and again (until the caps)."""

    block: bytes = b"x" * 65536


@dataclass(frozen=True)
class Trickle:
    """A body sent one byte every ``every`` seconds, forever unless ``data`` runs out."""

    data: bytes = b""  # empty: endless spaces
    every: float = 0.5


Headers = tuple[tuple[str, "str | bytes"], ...]


@dataclass(frozen=True)
class Reply:
    """A response.  ``headers`` go out verbatim (str values as UTF-8, bytes as given);
    a ``Content-Length`` is added for a bytes body unless ``headers`` has one or
    ``framing`` says otherwise.  A streamed body (``Endless``/``Trickle``) is sent
    chunked, or delimited by closing the connection (``framing="close"``).
    ``trickle_head`` sends the status line and headers a byte at a time, that many
    seconds apart."""

    status: int | str = 200  # a str goes out as is: "999", "20", "abc"
    headers: Headers | dict = ()
    body: bytes | Endless | Trickle = b""
    reason: str = "Hostile"
    framing: str = "auto"  # auto | length | chunked | close | none
    trickle_head: float = 0.0

    def header_items(self) -> list[tuple[str, str | bytes]]:
        return list(self.headers.items()) if isinstance(self.headers, dict) else list(self.headers)


@dataclass(frozen=True)
class Hang:
    """Read the request, then say nothing until the client leaves (or the cap)."""


@dataclass(frozen=True)
class Cut:
    """Read the request, then close the connection without a word."""


@dataclass(frozen=True)
class Raw:
    """Send these bytes (``repeat``: over and over, until the caps) and close."""

    data: bytes
    repeat: bool = False


Behaviour = Reply | Hang | Cut | Raw


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as on the request line
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in order
    body: bytes  # up to _BODY_LIMIT
    body_length: int
    at: float = field(default_factory=time.monotonic)  # when its head and body had arrived

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def raw_text(self) -> str:
        """Everything the client sent, as text, for secret searches."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.method} {self.target}\n{head}\n\n" + self.body[:_BODY_PREFIX].decode("latin-1")


# -- the socket server -----------------------------------------------------------------


class RawServer:
    """Accepts on 127.0.0.1:<free port>; one thread per connection; logs every request.
    Subclasses implement ``answer``.  ``with`` starts it; ``close()`` ends every stream
    and hang at once and joins the threads."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log: list[Request] = []
        self.errors: list[str] = []  # the server's own bugs (a rule that raised): tests assert none
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name=f"hostile-{self.port}")

    def __enter__(self):
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        _quiet(self._sock.shutdown, socket.SHUT_RDWR)  # wakes the blocked accept()
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _quiet(conn.shutdown, socket.SHUT_RDWR)
        self._acceptor.join(5)
        for thread in list(self._threads):
            thread.join(5)

    def requests(self, method: str | None = None, target: str = "") -> list[Request]:
        with self._lock:
            log = list(self.log)
        return [r for r in log if (method is None or r.method == method) and re.search(target, r.target)]

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` requests have arrived (False after ``timeout``)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.log) >= count, timeout)

    def wait_for(self, method: str, target: str = "", count: int = 1, timeout: float = 10.0) -> bool:
        """Block until ``count`` requests ``method`` with ``target`` (a regex) have arrived."""

        def arrived() -> bool:
            return sum(r.method == method and re.search(target, r.target) is not None for r in self.log) >= count

        with self._arrived:
            return self._arrived.wait_for(arrived, timeout)

    def answer(self, request: Request) -> Behaviour:
        raise NotImplementedError

    # -- connections ------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.settimeout(_SOCKET_TIMEOUT)
            with self._lock:
                self._conns.add(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                with self._lock:
                    self.log.append(request)
                    self._arrived.notify_all()
                try:
                    behaviour = self.answer(request)
                except Exception as e:
                    self.errors.append(f"{request.method} {request.target}: {e!r}")
                    behaviour = Reply(500, {}, b"the test server failed")
                if not self._send(conn, request, behaviour):
                    return
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            _quiet(reader.close)
            _quiet(conn.close)

    def _send(self, conn: socket.socket, request: Request, behaviour: Behaviour) -> bool:
        """Answer; True to keep the connection for another request."""
        if isinstance(behaviour, Cut):
            _quiet(conn.shutdown, socket.SHUT_RDWR)
            return False
        if isinstance(behaviour, Hang):
            self._hang(conn)
            return False
        if isinstance(behaviour, Raw):
            self._stream(conn, behaviour.data, endless=behaviour.repeat)
            return False
        return self._reply(conn, request, behaviour)

    def _reply(self, conn: socket.socket, request: Request, reply: Reply) -> bool:
        headers = reply.header_items()
        names = {k.lower() for k, _ in headers}
        body = reply.body
        framing = reply.framing
        if framing == "auto":
            framing = "length" if isinstance(body, bytes) else "chunked"
        if framing == "length" and "content-length" not in names and isinstance(body, bytes):
            headers.append(("Content-Length", str(len(body))))
        if framing == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        if framing == "close":
            headers.append(("Connection", "close"))
        head = f"HTTP/1.1 {reply.status} {reply.reason}\r\n".encode()
        for name, value in headers:
            head += name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()) + b"\r\n"
        head += b"\r\n"
        if reply.trickle_head:
            if not self._trickle(conn, head, reply.trickle_head):
                return False
        else:
            conn.sendall(head)
        if request.method == "HEAD" or framing == "none":
            return framing != "close"
        chunked = framing == "chunked"
        if isinstance(body, Endless):
            self._stream(conn, body.block, endless=True, chunked=chunked)
            return False
        if isinstance(body, Trickle):
            self._trickle(conn, body.data, body.every, chunked=chunked)
            return False
        conn.sendall(_chunk(body) + _chunk(b"") if chunked and body else (_chunk(b"") if chunked else body))
        return framing != "close"

    def _hang(self, conn: socket.socket) -> None:
        """Say nothing until the client closes its end, the server closes, or the cap."""
        deadline = time.monotonic() + HANG_CAP_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([conn], [], [], 0.2)
            if readable and not conn.recv(65536):
                return

    def _stream(self, conn: socket.socket, block: bytes, *, endless: bool, chunked: bool = False) -> None:
        data = _chunk(block) if chunked else block
        deadline = time.monotonic() + STREAM_CAP_SECONDS
        sent = 0
        try:
            while True:
                conn.sendall(data)
                sent += len(data)
                if not endless or sent >= STREAM_CAP_BYTES or time.monotonic() > deadline or self._stop.is_set():
                    return
        except OSError:
            return  # the client went away: what we wanted

    def _trickle(self, conn: socket.socket, data: bytes, every: float, *, chunked: bool = False) -> bool:
        """One byte every ``every`` seconds; empty ``data``: spaces until the caps.
        False when the client left or a cap was reached before the end."""
        deadline = time.monotonic() + STREAM_CAP_SECONDS
        i = 0
        try:
            while data == b"" or i < len(data):
                byte = data[i:i + 1] if data else b" "
                conn.sendall(_chunk(byte) if chunked else byte)
                i += 1
                if self._stop.wait(every) or time.monotonic() > deadline:
                    return False
        except OSError:
            return False
        return True


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _quiet(function, *args) -> None:
    with contextlib.suppress(OSError):
        function(*args)


def _read_request(reader) -> Request | None:
    if reader.peek(1)[:1] == b"\x16":
        return None  # a TLS ClientHello (the client tries HTTPS first): plain HTTP only here
    line = reader.readline(_HEAD_LIMIT)
    if not line or not line.endswith(b"\n"):
        return None
    method, target, _ = [*line.decode("latin-1").split(" ", 2), "", ""][:3]
    headers: list[tuple[str, str]] = []
    size = len(line)
    while True:
        line = reader.readline(_HEAD_LIMIT)
        size += len(line)
        if not line or size > _HEAD_LIMIT:
            return None
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    lookup = dict(headers)
    if lookup.get("transfer-encoding", "").lower() == "chunked":
        body, length = _read_chunked(reader)
    else:
        length = int(lookup.get("content-length") or 0)
        body = reader.read(min(length, _BODY_LIMIT))
        if length > _BODY_LIMIT:
            return None
    return Request(method, target, tuple(headers), body, length)


def _read_chunked(reader) -> tuple[bytes, int]:
    parts: list[bytes] = []
    total = 0
    while True:
        size = int(reader.readline(1024).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while reader.readline(1024) not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts), total
        total += size
        if total > _BODY_LIMIT:
            raise ValueError("chunked body too large")
        parts.append(reader.read(size))
        reader.readline(1024)
