"""A real HTTP proxy for tests that sits between a client and a registry and injects faults.

    with FaultProxy(registry.host) as proxy:
        proxy.drop_response(method="PATCH", nth=2)  # the registry gets the 2nd PATCH, the client no answer
        proxy.respond(503, {"Retry-After": "1"}, method="HEAD", times=3)  # the first 3 HEADs
        push(f"{proxy.host}/team/img:v1")
        assert [e for e in proxy.requests() if e.fault]

Plain HTTP/1.1 on 127.0.0.1, stdlib sockets and one thread per client connection.
Requests go upstream faithfully: method and target (path and query) untouched, header fields
in order and spelling, `Host` as the client sent it (the registry builds its absolute
`Location` from it, so clients come back through the proxy), bodies streamed in 64 KiB blocks
in both directions whatever their size (`Content-Length` or `Transfer-Encoding: chunked`,
relayed as framed). Only the hop-by-hop fields (`Connection` and those it names, `Keep-Alive`,
`TE`, `Upgrade`, `Proxy-Connection`) are the proxy's own. Client connections are kept alive
between requests, so clients reuse pooled connections as they would through nginx; every
fault closes the client connection. Each request gets a fresh upstream connection (`Connection:
close`), so what one request does to the registry never depends on an earlier one.
`Expect: 100-continue` is not supported (httpx and Go clients do not send it). Bytes that are
not HTTP (skopeo probes TLS first) get a 400 at once and no log entry.

Faults are rules (`cut_body`, `cut_answer`, `drop_response`, `respond`, `stall`, `limit_body`,
`random_faults`) that match requests by method, a regex searched in the request target
(`path?query`), and occurrence: a rule counts the requests it matches, fires from the `nth` on,
`times` times (None: every time). Every matching rule counts a request; of those due, the
first installed fires and the others stay due for the next match. The log (`requests()`)
records each request with the fault applied.

What the CNCF registry 2.8.2 (Debian `docker-registry`) does, checked by
tests/test_faultproxy.py; resume logic depends on it:

- Upload state lives in the `_state` query of each `Location`: an HMAC-signed offset. A request
  on an upload (GET, PATCH, PUT) whose offset differs from the bytes the registry holds answers
  `404 BLOB_UPLOAD_INVALID`, with no `Location` or `Range`. The upload itself lives on under
  its newest `Location`, but a client that never saw that one cannot build it.
- `drop_response` on a PATCH: the registry appended the chunk and answered 202 with a new
  `Location`, which the client never got. Its old `Location` is now stale: a GET on it (the
  spec's way to ask for the offset) or a resent PATCH answers 404 `BLOB_UPLOAD_INVALID`. No
  resuming: start the blob again with a POST.
- `cut_body` on a PATCH: the registry keeps exactly the bytes that arrived before the cut (seen in
  its storage) and answers 499 (Go cancels the request when the connection ends), which no
  client sees. Same outcome as above: stale offset, 404 `BLOB_UPLOAD_INVALID` to GET and PATCH.
  A cut before any body byte changes nothing: the upload carries on.
- A PATCH the registry never saw (e.g. `respond`) changes nothing: GET on the `Location`
  answers 204 with `Range: 0-<offset - 1>`, `Docker-Upload-UUID` and a fresh `Location`.
- `drop_response` on the final `PUT ?digest=`: the blob is committed (201); resending the PUT
  answers 404 `BLOB_UPLOAD_UNKNOWN`, and HEAD on the blob answers 200.
- `Content-Range` is ignored: a PATCH whose range does not start at the current offset (a gap
  or an overlap) is appended all the same: 202, `Range: 0-<old size + body - 1>`; not the 416
  the OCI spec requires for out-of-order chunks.
- The registry refuses a stale-state PATCH without reading its body and closes the connection;
  this proxy absorbs that, so the client still reads the 404 (see _sending_while_read).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from io import BufferedReader
from typing import Literal

BLOCK = 64 * 1024
MAX_LINE = 64 * 1024
MAX_FIELDS = 200

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "upgrade"})
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,15})[ \t]*(?:;[^\r\n]*)?\r?\n")

# How a body ends: after a byte count, after a zero-size chunk, or when the sender closes.
CHUNKED = "chunked"
UNTIL_CLOSE = "until-close"
Framing = int | Literal["chunked", "until-close"]

Sink = Callable[[bytes], None]


class ProtocolError(Exception):
    """Bytes that are not the HTTP/1.1 this proxy relays."""


# --- faults ----------------------------------------------------------------


@dataclass(frozen=True)
class CutBody:
    """Forward the first `after_bytes` of the body, then close both connections."""

    after_bytes: int


@dataclass(frozen=True)
class DropResponse:
    """Deliver the request, read the registry's answer, close the client connection instead."""


@dataclass(frozen=True)
class Respond:
    """Answer by ourselves, as a gateway in front of the registry would."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def encode(self) -> bytes:
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = ""
        fields = [*self.headers, ("Content-Length", str(len(self.body))), ("Connection", "close")]
        head = "".join(f"{name}: {value}\r\n" for name, value in fields)
        return f"HTTP/1.1 {self.status} {reason}\r\n{head}\r\n".encode("latin-1") + self.body


@dataclass(frozen=True)
class Stall:
    """Read the request, say nothing for `seconds`, then close. `holding` is set once the
    whole request has arrived and the silence begins: a test waits on it, not on a clock."""

    seconds: float
    holding: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


@dataclass(frozen=True)
class CutAnswer:
    """Forward the request, relay the answer's head and the first `after_bytes` of its
    body, then close the client connection: a download broken midway."""

    after_bytes: int


Fault = CutBody | DropResponse | Respond | Stall | CutAnswer


def html_error_page(status: int) -> bytes:
    """The page nginx serves for its own errors: what clients get from a gateway, not JSON."""
    title = f"{status} {HTTPStatus(status).phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def oci_error_body(code: str, message: str) -> bytes:
    """An error body in the distribution spec's format."""
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


_HTML = ("Content-Type", "text/html")
_JSON = ("Content-Type", "application/json")

# What random_faults answers with for "respond": the transient errors clients must retry.
RANDOM_ANSWERS = (
    Respond(429, (("Retry-After", "1"), _JSON), oci_error_body("TOOMANYREQUESTS", "too many requests")),
    Respond(500, (_JSON,), oci_error_body("UNKNOWN", "unknown error")),
    Respond(502, (_HTML,), html_error_page(502)),
    Respond(503, (("Retry-After", "1"), _HTML), html_error_page(503)),
)
RANDOM_KINDS = ("cut_body", "drop_response", "respond")


# --- HTTP messages -----------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A request or response head: its start line and header fields, as received."""

    start: str
    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.fields if key.lower() == name.lower()), None)

    def tokens(self, name: str) -> set[str]:
        """The comma-separated values of every `name` field, lowercased (Connection, Transfer-Encoding)."""
        return {
            token.strip().lower()
            for key, value in self.fields
            if key.lower() == name.lower()
            for token in value.split(",")
        }

    def relayed(self, *extra: tuple[str, str]) -> bytes:
        """The head as a proxy passes it on: hop-by-hop fields are its own, `extra` added."""
        own = _HOP_BY_HOP | self.tokens("connection")
        kept = [(key, value) for key, value in self.fields if key.lower() not in own]
        lines = [self.start, *(f"{key}: {value}" for key, value in [*kept, *extra])]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def content_length(self) -> int | None:
        value = self.get("Content-Length")
        if value is None:
            return None
        if not re.fullmatch(r"[0-9]{1,18}", value.strip()):
            raise ProtocolError(f"bad Content-Length {value!r}")
        return int(value)

    def is_chunked(self) -> bool:
        return "chunked" in self.tokens("transfer-encoding")


@dataclass(frozen=True)
class Request:
    """A request head, its start line split."""

    head: Head
    method: str
    target: str
    version: str

    @classmethod
    def parse(cls, head: Head) -> Request:
        parts = head.start.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ProtocolError(f"bad request line {head.start[:100]!r}")
        return cls(head, *parts)

    @property
    def framing(self) -> Framing:
        return CHUNKED if self.head.is_chunked() else self.head.content_length() or 0

    @property
    def keep_alive(self) -> bool:
        return self.version == "HTTP/1.1" and "close" not in self.head.tokens("connection")


def response_status(head: Head) -> int:
    parts = head.start.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {head.start[:100]!r}")
    return int(parts[1])


def response_framing(head: Head, method: str) -> Framing:
    status = response_status(head)
    if method == "HEAD" or status in (204, 304) or status < 200:
        return 0
    if head.is_chunked():
        return CHUNKED
    length = head.content_length()
    return UNTIL_CLOSE if length is None else length


def _read_line(rfile: BufferedReader) -> bytes:
    line = rfile.readline(MAX_LINE)
    if not line.endswith(b"\n"):
        raise ProtocolError("connection closed mid-line" if len(line) < MAX_LINE else "line too long")
    return line


def read_head(rfile: BufferedReader) -> Head | None:
    """The next head, or None when the peer closed cleanly before sending one."""
    first = rfile.peek(1)[:1]
    if not first:
        return None
    if not first.isalpha():
        # Not a method nor "HTTP/": a TLS handshake (skopeo tries https first) has no line end
        # to wait for, and a prompt refusal makes the client fall back to plain HTTP at once.
        raise ProtocolError(f"not HTTP: {first!r}")
    lines = []
    while (line := _read_line(rfile)) not in (b"\r\n", b"\n"):
        if len(lines) > MAX_FIELDS:
            raise ProtocolError("too many header fields")
        lines.append(line.rstrip(b"\r\n").decode("latin-1"))
    if not lines:
        raise ProtocolError("empty head")
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"bad header field {line[:100]!r}")
        fields.append((name, value.strip()))
    return Head(lines[0], tuple(fields))


def _copy_exact(rfile: BufferedReader, size: int, write: Sink) -> None:
    while size > 0:
        block = rfile.read1(min(BLOCK, size))
        if not block:
            raise ProtocolError("connection closed mid-body")
        write(block)
        size -= len(block)


def _copy_chunked(rfile: BufferedReader, write: Sink) -> None:
    """Copy a chunked body verbatim, framing included, up to the end of its trailer."""
    while True:
        line = _read_line(rfile)
        if not (match := _CHUNK_SIZE.fullmatch(line)):
            raise ProtocolError(f"bad chunk size line {line[:100]!r}")
        write(line)
        size = int(match[1], 16)
        if size == 0:
            break
        _copy_exact(rfile, size + 2, write)  # the data and its CRLF
    while True:
        line = _read_line(rfile)
        write(line)
        if line in (b"\r\n", b"\n"):
            return


def copy_body(rfile: BufferedReader, framing: Framing, write: Sink) -> None:
    """Stream a body from rfile to write() block by block, as framed."""
    if framing == CHUNKED:
        _copy_chunked(rfile, write)
    elif framing == UNTIL_CLOSE:
        while block := rfile.read1(BLOCK):
            write(block)
    else:
        _copy_exact(rfile, framing, write)


def _discard(block: bytes) -> None:
    pass


class _Cut(Exception):
    """The body reached the cut point of a CutBody fault."""


def _cutting(limit: int, write: Sink) -> Sink:
    """write() the first `limit` bytes, then raise _Cut."""
    sent = 0

    def sink(block: bytes) -> None:
        nonlocal sent
        write(block[: max(limit - sent, 0)])
        sent += len(block)
        if sent >= limit:
            raise _Cut

    return sink


def _sending_while_read(upstream: socket.socket) -> Sink:
    """Send the body upstream until upstream stops reading it, then swallow the rest.

    The registry answers some requests without reading their body (404 on a stale upload) and
    closes. The client's body must still be read to its end, or closing the client connection
    with unread bytes would reset it and lose that answer on the way.
    """
    refused = False

    def sink(block: bytes) -> None:
        nonlocal refused
        if not refused:
            try:
                upstream.sendall(block)
            except OSError:
                refused = True

    return sink


# --- rules -------------------------------------------------------------------


class Rule:
    """Which requests a fault applies to. `seen` counts matching requests, `fired` the faults."""

    def __init__(self, method: str | None, path: str | None, larger_than: int | None = None):
        self.method = method.upper() if method else None
        self.path = re.compile(path) if path else None
        self.larger_than = larger_than
        self.seen = 0
        self.fired = 0
        self._fired = threading.Event()

    def wait_fired(self, timeout: float) -> bool:
        """Wait until the rule has fired once (a fault was given); whether it did in `timeout` s."""
        return self._fired.wait(timeout)

    def _firing(self) -> None:
        self.fired += 1
        self._fired.set()

    def matches(self, request: Request) -> bool:
        return (
            (self.method is None or request.method == self.method)
            and (self.path is None or self.path.search(request.target) is not None)
            and (self.larger_than is None or (request.head.content_length() or 0) > self.larger_than)
        )

    def fire(self, request: Request) -> Fault | None:
        """The fault for a matching request (already counted in `seen`), or None."""
        raise NotImplementedError

    def __repr__(self) -> str:
        pattern = self.path.pattern if self.path else "*"
        return f"<{type(self).__name__} {self.method or '*'} {pattern} seen={self.seen} fired={self.fired}>"


class FixedRule(Rule):
    """One fault, on the `nth` matching request and the next `times - 1` (None: all from nth)."""

    def __init__(self, fault: Fault, nth: int, times: int | None, **match):
        super().__init__(**match)
        if nth < 1 or (times is not None and times < 1):
            raise ValueError("nth and times count from 1")
        self.fault = fault
        self.nth = nth
        self.times = times

    def fire(self, request: Request) -> Fault | None:
        if self.seen < self.nth or (self.times is not None and self.fired >= self.times):
            return None
        self._firing()
        return self.fault


class RandomRule(Rule):
    """Each matching request gets a random fault with probability `rate`, `max_faults` in all.

    Decisions come from one seeded generator in the order requests arrive: the same sequence
    of requests gets the same faults. With concurrent clients, which request comes n-th is up
    to the scheduler, but the faults stay bounded.
    """

    def __init__(self, seed: int, rate: float, kinds: Iterable[str], max_faults: int,
                 stall_seconds: float, **match):
        super().__init__(**match)
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - {*RANDOM_KINDS, "stall"}
        if unknown or not self.kinds:
            raise ValueError(f"random kinds are among {(*RANDOM_KINDS, 'stall')}, not {sorted(unknown)}")
        self.rng = random.Random(seed)
        self.rate = rate
        self.max_faults = max_faults
        self.stall_seconds = stall_seconds

    def fire(self, request: Request) -> Fault | None:
        if self.fired >= self.max_faults or self.rng.random() >= self.rate:
            return None
        self._firing()
        match self.rng.choice(self.kinds):
            case "cut_body":
                # Somewhere inside the body; a body-less request is cut right after its head.
                return CutBody(self.rng.randrange((request.head.content_length() or 0) or 1))
            case "drop_response":
                return DropResponse()
            case "respond":
                return self.rng.choice(RANDOM_ANSWERS)
            case "stall":
                return Stall(self.stall_seconds)


# --- the proxy ---------------------------------------------------------------


@dataclass
class Exchange:
    """One request through the proxy and what became of it."""

    method: str
    path: str
    query: str
    content_range: str | None
    fault: Fault | None = None
    body_bytes: int = 0  # request body bytes read from the client (chunked: framing included)
    status: int | None = None  # what the client got; None: no answer
    upstream_status: int | None = None  # what the registry answered; None: not asked or no answer
    range: str | None = None  # the request's Range header (a resumed download)
    authorization: str | None = None  # the request's Authorization header, for origin checks


class FaultProxy:
    """A proxy to `upstream` ("host:port", plain HTTP) on a free loopback port; a context manager.

    timeout: how long a socket waits on its peer, including an idle kept-alive client.
    """

    def __init__(self, upstream: str, *, timeout: float = 30.0):
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.timeout = timeout
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._rules: list[Rule] = []
        self._log: list[Exchange] = []
        self._busy = 0
        self._closing = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._accepter = threading.Thread(target=self._accept, name=f"faultproxy-{self.port}", daemon=True)
        self._accepter.start()

    # --- faults

    def cut_body(self, after_bytes: int, *, method: str | None = None, path: str | None = None,
                 nth: int = 1, times: int | None = 1) -> Rule:
        """Forward the first `after_bytes` bytes of the body, then close both connections.

        The client sees a reset or EOF mid-upload; the registry sees the body end early, and
        has finished with it before the client connection closes (so a retry cannot race it).
        A body no longer than `after_bytes` reaches the registry whole, then the connection ends.
        """
        return self._add(FixedRule(CutBody(after_bytes), nth, times, method=method, path=path))

    def cut_answer(self, after_bytes: int, *, method: str | None = None, path: str | None = None,
                   nth: int = 1, times: int | None = 1) -> Rule:
        """Relay the answer's head and the first `after_bytes` bytes of its body, then close
        the client connection: the client sees its download end early."""
        return self._add(FixedRule(CutAnswer(after_bytes), nth, times, method=method, path=path))

    def drop_response(self, *, method: str | None = None, path: str | None = None,
                      nth: int = 1, times: int | None = 1) -> Rule:
        """Deliver the whole request, read the registry's answer, close the client connection."""
        return self._add(FixedRule(DropResponse(), nth, times, method=method, path=path))

    def respond(self, status: int, headers: Mapping[str, str] | None = None, body: bytes | str = b"",
                content_type: str | None = None, *, method: str | None = None,
                path: str | None = None, nth: int = 1, times: int | None = 1) -> Rule:
        """Answer `status` without contacting the registry, then close the connection."""
        fields = [*(headers or {}).items(), *([("Content-Type", content_type)] if content_type else [])]
        body = body.encode() if isinstance(body, str) else body
        fault = Respond(status, tuple(fields), body)
        return self._add(FixedRule(fault, nth, times, method=method, path=path))

    def stall(self, seconds: float, *, method: str | None = None, path: str | None = None,
              nth: int = 1, times: int | None = 1, larger_than: int | None = None) -> FixedRule:
        """Read the request, say nothing for `seconds`, then close: a client timeout.

        `larger_than` counts only requests whose Content-Length exceeds it (a layer's chunk,
        not a config's). The rule's ``fault.holding`` is set once a stalled request has arrived.
        """
        rule = FixedRule(Stall(seconds), nth, times, method=method, path=path, larger_than=larger_than)
        self._add(rule)
        return rule

    def limit_body(self, max_bytes: int, *, method: str | None = None, path: str | None = None) -> Rule:
        """Answer nginx's HTML 413 to every request whose Content-Length exceeds max_bytes.

        No header advertises the limit. Chunked bodies (no Content-Length) pass.
        """
        fault = Respond(413, (_HTML,), html_error_page(413))
        return self._add(FixedRule(fault, 1, None, method=method, path=path, larger_than=max_bytes))

    def random_faults(self, seed: int, rate: float, kinds: Iterable[str] = RANDOM_KINDS, *,
                      max_faults: int = 10, stall_seconds: float = 2.0,
                      method: str | None = None, path: str | None = None) -> Rule:
        """Give each matching request a random fault among `kinds` with probability `rate`.

        kinds: "cut_body" (at a random byte of the body), "drop_response", "respond" (one of
        RANDOM_ANSWERS: 429/503 with Retry-After, JSON 500, HTML 502), "stall" (stall_seconds).
        """
        rule = RandomRule(seed, rate, kinds, max_faults, stall_seconds, method=method, path=path)
        return self._add(rule)

    def clear(self) -> None:
        """Remove every rule: later requests pass untouched."""
        with self._lock:
            self._rules.clear()

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _fault_for(self, request: Request) -> Fault | None:
        fault = None
        with self._lock:
            for rule in self._rules:
                if rule.matches(request):
                    rule.seen += 1
                    fault = fault or rule.fire(request)
        return fault

    # --- log

    def mark(self, timeout: float = 10.0) -> int:
        """A position in the log; pass it to requests() to see only later requests."""
        with self._idle:
            self._wait_idle(timeout)
            return len(self._log)

    def requests(self, since: int = 0, timeout: float = 10.0) -> list[Exchange]:
        """Requests finished since mark() returned `since`, in the order they finished.

        Waits for requests in flight (e.g. from another thread) to finish first.
        """
        with self._idle:
            self._wait_idle(timeout)
            return self._log[since:]

    def _wait_idle(self, timeout: float) -> None:
        if not self._idle.wait_for(lambda: self._busy == 0, timeout):
            raise TimeoutError(f"{self._busy} requests still in flight after {timeout:g}s")

    @contextlib.contextmanager
    def _logged(self, exchange: Exchange) -> Iterator[None]:
        with self._lock:
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._log.append(exchange)
                self._busy -= 1
                self._idle.notify_all()

    # --- connections

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            if self._closing.is_set():
                client.close()
                return
            _no_delay(client)
            client.settimeout(self.timeout)
            name = f"faultproxy-{self.port}-conn"
            thread = threading.Thread(target=self._serve, args=(client,), name=name, daemon=True)
            with self._lock:
                self._sockets.add(client)
                self._threads.add(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        """One client connection: its requests in turn, until a fault or either side closes it."""
        try:
            with client, client.makefile("rb") as rfile:
                try:
                    while self._exchange(client, rfile):
                        pass
                except ProtocolError:
                    with contextlib.suppress(OSError):
                        client.sendall(Respond(400).encode())
        except OSError:
            pass  # the client or the registry went away: nobody is left to tell
        finally:
            with self._lock:
                self._sockets.discard(client)
                self._threads.discard(threading.current_thread())

    def _exchange(self, client: socket.socket, rfile: BufferedReader) -> bool:
        """Handle one request; whether the client connection stays open for the next."""
        head = read_head(rfile)
        if head is None:
            return False
        request = Request.parse(head)
        path, _, query = request.target.partition("?")
        exchange = Exchange(request.method, path, query, head.get("Content-Range"),
                            range=head.get("Range"), authorization=head.get("Authorization"))
        with self._logged(exchange):
            exchange.fault = self._fault_for(request)
            match exchange.fault:
                case None:
                    return self._forward(client, rfile, request, exchange)
                case CutBody(after_bytes=after_bytes):
                    self._cut_body(rfile, request, exchange, after_bytes)
                case DropResponse():
                    self._drop_response(rfile, request, exchange)
                case Respond() as answer:
                    self._respond(client, rfile, request, exchange, answer)
                case Stall() as stall:
                    self._stall(rfile, request, exchange, stall)
                case CutAnswer(after_bytes=after_bytes):
                    self._cut_answer(client, rfile, request, exchange, after_bytes)
            return False

    @contextlib.contextmanager
    def _upstream(self) -> Iterator[socket.socket]:
        sock = socket.create_connection(self.upstream, timeout=self.timeout)
        _no_delay(sock)
        with sock:
            with self._lock:
                if self._closing.is_set():
                    raise ConnectionAbortedError("the proxy is closing")
                self._sockets.add(sock)
            try:
                yield sock
            finally:
                with self._lock:
                    self._sockets.discard(sock)

    def _send_request(self, upstream: socket.socket, rfile: BufferedReader, request: Request,
                      exchange: Exchange, cut_after: int | None = None) -> None:
        """Send the head and stream the body upstream (its first `cut_after` bytes, then _Cut)."""
        upstream.sendall(request.head.relayed(("Connection", "close")))
        write = _counting(exchange, _sending_while_read(upstream))
        copy_body(rfile, request.framing, write if cut_after is None else _cutting(cut_after, write))

    def _forward(self, client: socket.socket, rfile: BufferedReader, request: Request,
                 exchange: Exchange) -> bool:
        with self._upstream() as upstream, upstream.makefile("rb") as answer:
            self._send_request(upstream, rfile, request, exchange)
            head = read_head(answer)
            if head is None:
                raise ProtocolError("the registry closed without answering")
            framing = response_framing(head, request.method)
            keep_alive = request.keep_alive and framing != UNTIL_CLOSE
            client.sendall(head.relayed() if keep_alive else head.relayed(("Connection", "close")))
            exchange.status = exchange.upstream_status = response_status(head)
            copy_body(answer, framing, client.sendall)
        return keep_alive

    def _cut_answer(self, client: socket.socket, rfile: BufferedReader, request: Request,
                    exchange: Exchange, after_bytes: int) -> None:
        with self._upstream() as upstream, upstream.makefile("rb") as answer:
            self._send_request(upstream, rfile, request, exchange)
            head = read_head(answer)
            if head is None:
                raise ProtocolError("the registry closed without answering")
            client.sendall(head.relayed(("Connection", "close")))
            exchange.upstream_status = response_status(head)
            with contextlib.suppress(_Cut):
                copy_body(answer, response_framing(head, request.method), _cutting(after_bytes, client.sendall))

    def _drop_response(self, rfile: BufferedReader, request: Request, exchange: Exchange) -> None:
        with self._upstream() as upstream:
            self._send_request(upstream, rfile, request, exchange)
            exchange.upstream_status = _read_answer(upstream)

    def _cut_body(self, rfile: BufferedReader, request: Request, exchange: Exchange,
                  after_bytes: int) -> None:
        with self._upstream() as upstream:
            with contextlib.suppress(_Cut):
                self._send_request(upstream, rfile, request, exchange, cut_after=after_bytes)
            # Half-close so the registry's body read ends now, and wait for it to be done with
            # the request: the client's next request must find the upload in its final state.
            upstream.shutdown(socket.SHUT_WR)
            exchange.upstream_status = _read_answer(upstream)

    def _respond(self, client: socket.socket, rfile: BufferedReader, request: Request,
                 exchange: Exchange, answer: Respond) -> None:
        # Answer first, like nginx's 413 on a Content-Length, then read the rest of the body:
        # closing with unread bytes would reset the connection under the answer.
        client.sendall(answer.encode())
        exchange.status = answer.status
        with contextlib.suppress(ProtocolError, OSError):  # a client that stops sending is fine
            copy_body(rfile, request.framing, _counting(exchange, _discard))

    def _stall(self, rfile: BufferedReader, request: Request, exchange: Exchange, stall: Stall) -> None:
        copy_body(rfile, request.framing, _counting(exchange, _discard))
        stall.holding.set()
        self._closing.wait(stall.seconds)  # close() ends the stall early

    # --- lifetime

    def close(self) -> None:
        """Stop accepting, cut every open connection, and wait for all threads to end."""
        if self._closing.is_set():
            return
        self._closing.set()
        # accept() does not return when another thread closes the socket; a connection wakes it.
        socket.create_connection(self._listener.getsockname(), timeout=self.timeout).close()
        self._accepter.join()
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it
        for thread in threads:
            thread.join(self.timeout)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _counting(exchange: Exchange, write: Sink) -> Sink:
    def sink(block: bytes) -> None:
        exchange.body_bytes += len(block)
        write(block)

    return sink


def _no_delay(sock: socket.socket) -> None:
    # A head and a small body go out in two writes; with Nagle's algorithm the second waits
    # for the peer's delayed ACK, 40 ms a request. Proxies (nginx's tcp_nodelay) turn it off.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _read_answer(upstream: socket.socket) -> int | None:
    """Read the registry's whole answer (it closes after it); its status, None if it sent none."""
    with upstream.makefile("rb") as answer:
        try:
            head = read_head(answer)
            while answer.read1(BLOCK):
                pass
            return None if head is None else response_status(head)
        except (ProtocolError, OSError):
            return None
