"""Deadlines and body limits, against a registry that never finishes an answer.

A tiny in-process server speaks just enough of the registry API to reach the request under
test (ping, HEAD, POST, PATCH), then misbehaves there: a body that never ends, a body or a
header section trickled one byte at a time (never slow enough for the per-read timeout), or
nothing at all.  ``python -m ocipush … --timeout 2s --retry 0`` must end with exit 4 and
one ``ocipush:`` line naming the request, within the deadline (plus start-up), in bounded
memory: the child runs under an address-space limit (so the old code, which read bodies
whole, fails by MemoryError instead of eating the machine) and its peak RSS is measured.
(Checked against the code before registry/transport.py: 2 GiB and MemoryError for endless
bodies, killed after 40 s for trickles, 224 MiB for the gzip bomb.)
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocipush.errors import RegistryError
from ocipush.registry.client import ClientOptions, RegistryClient
from ocipush.registry.transport import READ_BUDGET, CancellableBackend, bounded_transport, request_scope
from tests.imagegen import LayerSpec, make_layout

MAX_RSS = 200 * 1024 * 1024  # bytes; the old code grew to the address-space limit
ADDRESS_SPACE = 2 * 1024**3
TRICKLE = 0.25  # seconds between bytes: far below the 120 s per-read timeout

Behaviour = Callable[[socket.socket], None]


def endless_body(status: str) -> Behaviour:
    def act(sock: socket.socket) -> None:
        sock.sendall(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                     "Location: /v2/r/blobs/uploads/u1\r\nRange: 0-0\r\n\r\n".encode())
        block = b"x" * 65536
        while True:
            sock.sendall(block)

    return act


def trickled_body(status: str) -> Behaviour:
    def act(sock: socket.socket) -> None:
        sock.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 1000000\r\n\r\n".encode())
        while True:
            sock.sendall(b"x")
            time.sleep(TRICKLE)

    return act


def trickled_headers(sock: socket.socket) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    while True:
        sock.sendall(b"X")
        time.sleep(TRICKLE)


def silence(sock: socket.socket) -> None:
    time.sleep(60)


def gzip_bomb(sock: socket.socket) -> None:
    import gzip

    body = gzip.compress(b"{" * (64 * 1024 * 1024), 9)  # 64 KiB of gzip, 64 MiB inflated
    sock.sendall(f"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body)


class MisbehavingRegistry:
    """Answers ping, HEAD (404), POST (202), PATCH (202), PUT (201) and DELETE (204) as a
    registry would, except the requests ``(method, path prefix)`` given to ``fault`` (method
    ``*``: any)."""

    def __init__(self, method: str, path: str, behaviour: Behaviour, *, bearer: bool = False):
        self.fault = (method, path, behaviour)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        # bearer: the ping answers 401 with a challenge whose token service is /token here.
        self.challenge = f'Bearer realm="http://{self.host}/token",service="test"' if bearer else None
        self.seen: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        rfile = sock.makefile("rb")
        try:
            while True:
                line = rfile.readline(65536).decode("latin-1")
                parts = line.split()
                if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                    return  # a TLS hello (we try HTTPS first), or the end
                method, target = parts[0], parts[1]
                length = 0
                while (header := rfile.readline(65536).decode("latin-1").strip()):
                    name, _, value = header.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                rfile.read(length)
                self.seen.append(f"{method} {target}")
                fmethod, fpath, behaviour = self.fault
                if fmethod in (method, "*") and target.startswith(fpath):
                    behaviour(sock)
                    return
                if self.challenge and method == "GET" and target == "/v2/":
                    sock.sendall(f"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {self.challenge}\r\n"
                                 "Content-Length: 0\r\n\r\n".encode())
                    continue
                sock.sendall(self._answer(method, target))
        except OSError:
            pass
        finally:
            sock.close()

    @staticmethod
    def _answer(method: str, target: str) -> bytes:
        status, headers = {
            "GET": ("200 OK", {}),
            "HEAD": ("404 Not Found", {}),
            "POST": ("202 Accepted", {"Location": "/v2/r/blobs/uploads/u1"}),
            "PATCH": ("202 Accepted", {"Location": "/v2/r/blobs/uploads/u1"}),
            "PUT": ("201 Created", {}),
            "DELETE": ("204 No Content", {}),
        }[method]
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return f"HTTP/1.1 {status}\r\n{lines}Content-Length: 0\r\n\r\n".encode()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(300_000)], ref="v1")


def run_push(image, host: str, *extra: str, limit: float = 30) -> tuple[int, str, float, int]:
    """Exit code, stderr, wall seconds and peak RSS (bytes) of ``python -m ocipush``."""
    argv = [sys.executable, "-m", "ocipush", f"oci:{image.layout}", f"{host}/r:v1",
            "--timeout", "2s", "--retry", "0", "--no-cache", *extra]

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               preexec_fn=limit_memory, env={**os.environ, "PYTHONPATH": os.getcwd()})
    peak = PeakRSS(process.pid)
    timer = threading.Timer(limit, process.kill)
    timer.start()
    try:
        err = process.stderr.read().decode(errors="replace")
        process.wait()
    finally:
        timer.cancel()
        peak.stop()
    return process.returncode, err, time.monotonic() - started, peak.bytes


class PeakRSS:
    """The child's VmHWM (its peak resident size since exec; getrusage would also count the
    fork of this big pytest process), read every 10 ms until it exits."""

    def __init__(self, pid: int):
        self.path = f"/proc/{pid}/status"
        self.bytes = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.01):
            try:
                with open(self.path) as status:
                    for line in status:
                        if line.startswith("VmHWM:"):
                            self.bytes = max(self.bytes, int(line.split()[1]) * 1024)
            except (FileNotFoundError, ProcessLookupError):
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


CASES = {
    "ping: endless 200": ("GET", "/v2/", endless_body("200 OK"), "/v2/"),
    "ping: endless 503": ("GET", "/v2/", endless_body("503 Busy"), "/v2/"),
    "ping: trickled body": ("GET", "/v2/", trickled_body("200 OK"), "deadline"),
    "ping: trickled headers": ("GET", "/v2/", trickled_headers, "deadline"),
    "ping: silence": ("GET", "/v2/", silence, "deadline"),
    "POST: endless error": ("POST", "/v2/r/blobs/uploads/", endless_body("500 Oops"), "POST http"),
    "POST: trickled error": ("POST", "/v2/r/blobs/uploads/", trickled_body("500 Oops"), "deadline"),
    "POST: gzip bomb": ("POST", "/v2/r/blobs/uploads/", gzip_bomb, "POST http"),
    "PATCH: endless 202": ("PATCH", "/v2/r/blobs/uploads/", endless_body("202 Accepted"), "PATCH http"),
    "PATCH: endless 500": ("PATCH", "/v2/r/blobs/uploads/", endless_body("500 Oops"), "PATCH http"),
    "PATCH: trickled 202": ("PATCH", "/v2/r/blobs/uploads/", trickled_body("202 Accepted"), "deadline"),
    "PATCH: trickled headers": ("PATCH", "/v2/r/blobs/uploads/", trickled_headers, "deadline"),
    "token: endless": ("GET", "/token", endless_body("200 OK"), "http"),
    "token: trickled": ("GET", "/token", trickled_body("200 OK"), "deadline"),
}
BEARER = {"token: endless", "token: trickled"}  # the registry asks for a token from its realm


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_an_endless_or_trickled_answer_is_a_clean_error_in_time(case, image, user_config):
    method, path, behaviour, named = CASES[case]
    server = MisbehavingRegistry(method, path, behaviour, bearer=case in BEARER)
    try:
        code, err, seconds, rss = run_push(image, server.host)
    finally:
        server.close()
    lines = err.splitlines()
    assert "Traceback" not in err and "MemoryError" not in err, err
    assert code == 4 and len(lines) == 1 and lines[0].startswith("ocipush: "), (code, err)
    assert named in lines[0] and "\ufffd" not in lines[0], lines[0]
    # ping over HTTPS first, then HTTP: two deadlines of 2 s at most, plus interpreter start-up.
    assert seconds < 12, f"{seconds:.1f}s: {err}"
    assert rss < MAX_RSS, f"peak RSS {rss / 2**20:.0f} MiB: {err}"


def test_the_timeout_flag_bounds_a_request_on_its_own(user_config):
    """--timeout is the whole request: a silent registry ends the ping after it, not after
    the 120 s per-read timeout."""
    server = MisbehavingRegistry("GET", "/v2/", silence)
    started = time.monotonic()
    try:
        with (
            RegistryClient(server.host, ClientOptions(deadline=0.5), loopback=True) as client,
            pytest.raises(RegistryError, match=r"cannot reach registry .*within 0\.5s"),
        ):
            client.connect()
    finally:
        server.close()
    assert time.monotonic() - started < 5


def test_a_body_gets_time_in_proportion_to_its_size():
    options = ClientOptions(deadline=300, body_rate=64 * 1024)
    assert options.deadline_for(0) == 300
    assert options.deadline_for(64 * 1024 * 100) == 400


def test_the_read_budget_caps_every_answer_of_one_request():
    """Bodies httpx reads on its own (401s in the auth flow, redirects) count too."""
    server = MisbehavingRegistry("GET", "/", endless_body("200 OK"))
    backend = CancellableBackend()
    transport = bounded_transport(backend, verify=False, limits=httpx.Limits())
    try:
        with (
            httpx.Client(transport=transport) as http,
            request_scope(10) as scope,
            pytest.raises(httpx.ReadError, match="more than"),
        ):
            http.get(f"http://{server.host}/")
        assert READ_BUDGET < scope.read < READ_BUDGET + 1024 * 1024
    finally:
        server.close()


def test_interrupt_stops_a_request_in_flight_from_another_thread():
    server = MisbehavingRegistry("GET", "/v2/", silence)
    errors: list[BaseException] = []
    try:
        with RegistryClient(server.host, ClientOptions(deadline=30), loopback=True) as client:
            client.base_url = f"http://{server.host}"

            def ask() -> None:
                try:
                    client.request("GET", client.url("/v2/"), expect=(200,))
                except BaseException as e:
                    errors.append(e)

            thread = threading.Thread(target=ask)
            thread.start()
            deadline = time.monotonic() + 5
            while not server.seen and time.monotonic() < deadline:
                time.sleep(0.01)
            started = time.monotonic()
            client.interrupt(grace=0.2)
            thread.join(5)
            assert not thread.is_alive() and time.monotonic() - started < 2
            assert [type(e).__name__ for e in errors] == ["Interrupted"]
            with pytest.raises(KeyboardInterrupt):  # no request after an interrupt…
                client.request("GET", client.url("/v2/"), expect=(200,))
            # …but the cleanup's, on fresh connections
            with client.cleanup(1.0), pytest.raises(RegistryError, match="deadline"):
                client.request("GET", client.url("/v2/"), expect=(200,))
    finally:
        server.close()


@pytest.mark.parametrize("value", ["0", "0s", "nan", "inf", "-5s", "soon"])
def test_a_timeout_that_is_no_deadline_is_a_usage_error(value, capsys):
    from ocipush.cli import main

    assert main(["oci:/nonexistent", "127.0.0.1:1/r:v1", "--timeout", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ocipush: ") and "--timeout" in err and len(err.splitlines()) == 1, err


def test_a_proxy_from_the_environment_is_bounded_too(monkeypatch):
    """httpx builds its own transports for HTTP(S)_PROXY: they get the same deadlines."""
    proxy = MisbehavingRegistry("*", "", silence)  # says nothing, whatever it is asked
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, f"http://{proxy.host}")
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    try:
        with (
            RegistryClient("registry.test:5000", ClientOptions(deadline=0.5), loopback=True) as client,
            pytest.raises(RegistryError, match=r"cannot reach registry registry\.test:5000: .*within 0\.5s"),
        ):
            client.connect()
    finally:
        proxy.close()
    assert time.monotonic() - started < 5


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=20_000), status=st.integers(100, 599), reason=st.text(max_size=50))
def test_any_error_body_is_described_in_one_printable_line(body, status, reason):
    from ocipush.registry.client import describe_error

    response = httpx.Response(status, request=httpx.Request("GET", "http://registry.test/v2/"),
                              extensions={"reason_phrase": reason.encode("utf-8", "replace")})
    text = describe_error(response, body)
    assert text.isprintable() and len(text) < 500, text


def test_the_newest_location_of_an_upload_is_known_as_soon_as_its_answer_is():
    """abort() DELETEs an upload where its last answer said it goes on, even when the thread
    that got that answer has not stored it yet: the old location is refused by the CNCF
    registry once it holds more bytes (404 BLOB_UPLOAD_INVALID)."""
    server = MisbehavingRegistry("-", "", silence)  # PATCH answers 202, Location …/u1
    try:
        with RegistryClient(server.host, ClientOptions(deadline=5), loopback=True) as client:
            client.base_url = f"http://{server.host}"
            old = client.url("/v2/r/blobs/uploads/u0?_state=a")
            client.request("PATCH", old, expect=(202,), content=b"x")
            assert client.moved_to(old) == client.url("/v2/r/blobs/uploads/u1")
            assert client.moved_to(client.url("/v2/r/blobs/uploads/other")) == client.url("/v2/r/blobs/uploads/other")
    finally:
        server.close()
