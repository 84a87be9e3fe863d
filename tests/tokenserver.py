"""The real registry's auth backends for tests, and in-process HTTP servers.

- ``htpasswd_auth``: the ``auth: htpasswd`` section, with a bcrypt file made by ``htpasswd``.
- ``Server``: answers every request with ``handle(ServerRequest) -> ServerReply`` from a
  thread on a free loopback port, and keeps the requests it saw.
- ``TokenServer``: the token service of the distribution registry's ``auth: token`` —
  Basic logins, anonymous pulls and OAuth2 refresh tokens in, JWTs out.  The JWTs are
  signed (RS256, by the ``openssl`` CLI) with a test key whose certificate goes in the
  registry's ``rootcertbundle``, so a real registry verifies real tokens.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.pki import der, make_signing_key, openssl
from tests.services import find_tool

# distribution accepts a token until 60 s after its `exp` (clock skew); a token meant to
# die in N seconds carries exp = now + N - 60.
REGISTRY_LEEWAY = 60


def htpasswd_auth(workdir: Path, users: Mapping[str, str]) -> dict:
    """The ``auth`` section for ``start_registry(extra_config=...)``: Basic for ``users``."""
    path = workdir / "htpasswd"
    lines = [
        # -B: bcrypt, the only kind the registry takes; -C 4: its cheapest cost
        subprocess.run([find_tool("htpasswd"), "-nbB", "-C", "4", user, password],
                       capture_output=True, text=True, check=True).stdout.strip()
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")
    return {"auth": {"htpasswd": {"realm": "ocipush-test", "path": str(path)}}}


@dataclass(frozen=True)
class ServerRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # keys lower-cased
    body: bytes

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


@dataclass(frozen=True)
class ServerReply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def json(cls, status: int, doc: object) -> ServerReply:
        return cls(status, {"Content-Type": "application/json"}, json.dumps(doc).encode())


class Server(ThreadingHTTPServer):
    """``with Server(handle) as s:`` serves on ``s.url`` until the block ends."""

    daemon_threads = True

    def __init__(self, handle: Callable[[ServerRequest], ServerReply]):
        self.handle = handle
        self.seen: list[ServerRequest] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        request = ServerRequest(
            self.command, url.path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()},
            self.rfile.read(length),
        )
        self.server.seen.append(request)
        reply = self.server.handle(request)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:  # quiet: pytest shows failures
        pass


@dataclass(frozen=True)
class TokenRequest:
    method: str
    user: str | None  # None: anonymous
    grant: str  # "basic", "anonymous" or "refresh_token"
    scopes: tuple[str, ...]


class TokenServer(Server):
    """Issues tokens for ``users`` (name → password) and ``refresh_tokens`` (token → name).

    ``valid_for``: seconds the registry accepts a token; ``expires_in``: what the answer
    claims (None: left out), so a test can make tokens die before the client expects.
    Anonymous callers get ``pull`` only; a known user gets whatever was asked for.
    """

    service = "ocipush-test-registry"
    issuer = "ocipush-test-issuer"

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] = {},
        refresh_tokens: Mapping[str, str] = {},
        valid_for: float = 300,
        expires_in: int | None = 300,
        token_field: str = "token",
    ):
        self.users = dict(users)
        self.refresh_tokens = dict(refresh_tokens)
        self.valid_for = valid_for
        self.expires_in = expires_in
        self.token_field = token_field
        self.signer = make_signing_key(workdir)
        self._x5c = base64.b64encode(der(self.signer.cert)).decode()
        self.requests: list[TokenRequest] = []
        self.issued: list[str] = []
        # For each issued token, the time.time() it was issued and the whole second from
        # which the registry refuses it: a test waits for these, not for a guessed duration.
        self.issued_at: list[float] = []
        self.refused_from: list[int] = []
        super().__init__(self._answer)
        self.realm = f"{self.url}/token"

    def registry_config(self) -> dict:
        """The ``auth`` section for ``start_registry(extra_config=...)``."""
        return {"auth": {"token": {
            "realm": self.realm, "service": self.service, "issuer": self.issuer,
            "rootcertbundle": str(self.signer.cert),
        }}}

    def _answer(self, request: ServerRequest) -> ServerReply:
        if request.path != "/token":
            return ServerReply(404)
        if request.method == "POST":
            form = request.form()
            user = self.refresh_tokens.get(form.get("refresh_token", ""))
            if form.get("grant_type") != "refresh_token" or user is None:
                return ServerReply.json(400, {"error": "invalid_grant"})
            self.requests.append(TokenRequest("POST", user, "refresh_token", tuple(form.get("scope", "").split())))
            return self._grant(user, tuple(form.get("scope", "").split()), "access_token")
        scopes = tuple(request.query.get("scope", []))
        user = _basic_user(request.headers.get("authorization", ""), self.users)
        if user == "":
            return ServerReply.json(401, {"details": "incorrect username or password"})
        self.requests.append(TokenRequest("GET", user, "basic" if user else "anonymous", scopes))
        return self._grant(user, scopes, self.token_field)

    def _grant(self, user: str | None, scopes: tuple[str, ...], token_field: str) -> ServerReply:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            allowed = [a for a in actions.split(",") if user or a == "pull"]
            access.append({"type": kind, "name": name, "actions": allowed})
        token = self._jwt(user or "", access)
        self.issued.append(token)
        doc: dict[str, object] = {token_field: token}
        if self.expires_in is not None:
            doc["expires_in"] = self.expires_in
        return ServerReply.json(200, doc)

    def _jwt(self, subject: str, access: list[dict]) -> str:
        now = time.time()
        self.issued_at.append(now)
        self.refused_from.append(math.ceil(now + self.valid_for))
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer, "sub": subject, "aud": self.service, "jti": uuid.uuid4().hex,
            "iat": int(now), "nbf": int(now) - 1,
            "exp": math.ceil(now + self.valid_for) - REGISTRY_LEEWAY,
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = openssl("dgst", "-sha256", "-sign", self.signer.key, input=signing_input.encode())
        return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _basic_user(header: str, users: Mapping[str, str]) -> str | None:
    """The user a Basic header proves, None without one, "" when it proves nothing."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    try:
        user, _, password = base64.b64decode(value).decode().partition(":")
    except ValueError:
        return ""
    return user if scheme.lower() == "basic" and users.get(user) == password else ""
