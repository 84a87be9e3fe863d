"""A registry that misbehaves on purpose, and a recording server to play the foreign origin.

``HostileRegistry`` (on tests/rawhttp.py's raw-socket server, so it can stream forever,
trickle, send any bytes as a header value or status, hang or cut) plays a plausible
registry for everything a row does not break: ping 200/401, HEAD 404, POST 202 with
Location, PATCH 202 with Range, PUT 201 (digest-checked), manifest PUT 201, Basic or
Bearer auth with its own token endpoint.  So each row breaks exactly one thing,
declared as ``Rule``s: method + target pattern → a ``Reply`` (its body may be ``Endless``
or ``Trickle``), ``Hang``, ``Cut``, ``Raw``, or a function of the request that returns
one (or None: the plausible registry answers).

``Recorder`` is a second server on another port: it logs every request (method, target,
headers, body prefix) and answers as told — as a presigned-URL upload store
(``"store"``), with a 401 Bearer challenge whose realm is itself (``"challenge"``), or
with a fixed behaviour.  Tests point upload Locations, redirects and token realms at it
and check that no credential ever reached it.  Shares no code with ocipush.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.rawhttp import Behaviour, Cut, Endless, Hang, Raw, RawServer, Reply, Request, Trickle

__all__ = [
    "PASSWORD",
    "TOKEN",
    "USER",
    "Cut",
    "Endless",
    "Hang",
    "HostileRegistry",
    "Raw",
    "Recorder",
    "Reply",
    "Request",
    "Rule",
    "Trickle",
    "basic",
    "sha256_digest",
]

USER = "user"
PASSWORD = "SECRET-PASSWORD"
TOKEN = "HOSTILE-TOKEN-0123456789"  # what the registry's own token endpoint hands out


def basic(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


Action = Behaviour | Callable[[Request], "Behaviour | None"]


@dataclass
class Rule:
    """``method`` (or "*") and a regex searched in the request target → ``then``.
    ``times``: how often the rule fires (None: always).  A callable ``then`` may return
    None to let the plausible registry answer."""

    method: str
    target: str
    then: Action
    times: int | None = None
    fired: int = 0

    def matches(self, request: Request) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        return self.method in ("*", request.method) and re.search(self.target, request.target) is not None


# -- the plausible registry -------------------------------------------------------------

_API = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>blobs/uploads|blobs|manifests)(?:/(?P<rest>[^/]*))?$")


def _json(status: int, doc: object, headers: dict | None = None) -> Reply:
    return Reply(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(doc).encode())


def _error(status: int, code: str, message: str, headers: dict | None = None) -> Reply:
    return _json(status, {"errors": [{"code": code, "message": message}]}, headers)


@dataclass
class _Upload:
    name: str
    data: bytearray = field(default_factory=bytearray)


class HostileRegistry(RawServer):
    """``with HostileRegistry(rules, auth="basic"|"bearer"|None) as registry:``.

    Rules are tried in order for every request; the first that matches answers.  The
    rest is a plausible registry that stores blobs (digest-checked) and manifests.
    ``token`` / ``token_doc``: what its token endpoint (``/token``) answers to the right
    Basic credentials; ``realm`` overrides the realm its Bearer challenge names.
    """

    def __init__(self, rules: list[Rule] | tuple[Rule, ...] = (), *, auth: str | None = "basic",
                 token_doc: dict | None = None, realm: str | None = None):
        super().__init__()
        self.rules = list(rules)
        self.auth = auth
        self.token_doc = token_doc if token_doc is not None else {"token": TOKEN, "expires_in": 300}
        self.realm = realm or f"{self.url}/token"
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.uploads: dict[str, _Upload] = {}

    def challenge(self) -> str:
        if self.auth == "bearer":
            return f'Bearer realm="{self.realm}",service="hostile"'
        return 'Basic realm="hostile"'

    def answer(self, request: Request) -> Behaviour:
        for rule in self.rules:
            with self._lock:
                if not rule.matches(request):
                    continue
                rule.fired += 1
            then = rule.then(request) if callable(rule.then) else rule.then
            if then is not None:
                return then
        return self.plausible(request)

    # -- what a well-behaved registry would say -------------------------------------------

    def authorized(self, request: Request) -> bool:
        given = request.header("authorization")
        if self.auth == "basic":
            return given == basic()
        if self.auth == "bearer":
            return given == f"Bearer {self.token_doc.get('token', TOKEN)}"
        return True

    def plausible(self, request: Request) -> Reply:
        if request.path == "/token":
            if request.header("authorization") != basic():
                return _error(401, "UNAUTHORIZED", "bad credentials")
            return _json(200, self.token_doc)
        if not request.path.startswith("/v2/"):
            return _error(404, "NOT_FOUND", "no such endpoint")
        if not self.authorized(request):
            return _error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": self.challenge()})
        if request.path == "/v2/":
            return _json(200, {})
        m = _API.match(request.path)
        if not m:
            return _error(404, "NAME_UNKNOWN", "unknown endpoint")
        return self._api(request, m["name"], m["kind"], m["rest"] or "")

    def _api(self, request: Request, name: str, kind: str, rest: str) -> Reply:
        method = request.method
        if kind == "blobs" and method in ("HEAD", "GET"):
            data = self.blobs.get(rest)
            if data is None:
                return _error(404, "BLOB_UNKNOWN", "blob unknown")
            return Reply(200, {"Content-Length": str(len(data)), "Docker-Content-Digest": rest}, data)
        if kind == "blobs/uploads":
            return self._upload(request, name, rest)
        if kind == "manifests" and method == "PUT":
            digest = sha256_digest(request.body)
            with self._lock:
                self.manifests[(name, rest)] = request.body
                self.manifests[(name, digest)] = request.body
            return Reply(201, {"Docker-Content-Digest": digest, "Location": f"/v2/{name}/manifests/{digest}"})
        return _error(404, "UNSUPPORTED", f"{method} {kind}")

    def _upload(self, request: Request, name: str, rest: str) -> Reply:
        method = request.method
        if method == "POST" and not rest:
            if "mount" in request.query:
                with self._lock:
                    if request.query["mount"] in self.blobs:
                        return Reply(201, {"Docker-Content-Digest": request.query["mount"]})
            handle = uuid.uuid4().hex
            with self._lock:
                self.uploads[handle] = _Upload(name)
            return Reply(202, {"Location": f"/v2/{name}/blobs/uploads/{handle}", "Range": "0-0",
                               "Docker-Upload-UUID": handle})
        with self._lock:
            upload = self.uploads.get(rest)
        if upload is None:
            return _error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown")
        location = f"/v2/{name}/blobs/uploads/{rest}"
        if method == "DELETE":
            with self._lock:
                self.uploads.pop(rest, None)
            return Reply(204)
        if method == "GET":
            return Reply(204, {"Location": location, "Range": f"0-{max(len(upload.data) - 1, 0)}"})
        if method == "PATCH":
            upload.data += request.body
            return Reply(202, {"Location": location, "Range": f"0-{len(upload.data) - 1}"})
        if method == "PUT":
            upload.data += request.body
            digest = request.query.get("digest", "")
            if sha256_digest(bytes(upload.data)) != digest:
                return _error(400, "DIGEST_INVALID", "digest does not match")
            with self._lock:
                self.blobs[digest] = bytes(upload.data)
                self.uploads.pop(rest, None)
            return Reply(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})
        return _error(405, "UNSUPPORTED", method)


# -- the foreign origin ------------------------------------------------------------------


class Recorder(RawServer):
    """Another origin that logs everything it is sent.

    ``answer``: ``"store"`` plays a presigned-URL upload store (PATCH → 202 with the
    Range it holds per path and its own Location; PUT → 201 with the digest asked for,
    when it matches the bytes); ``"challenge"`` answers 401 with
    ``Bearer realm="<itself>/token"`` (and hands out a token to whoever asks it, to
    tempt a client into sending credentials); a ``Reply`` answers every request with it.
    """

    def __init__(self, answer: str | Behaviour = "store"):
        super().__init__()
        self.mode = answer
        self._held: dict[str, bytearray] = {}
        self.committed: dict[str, bytes] = {}
        # Told of every committed blob, as an object store tells the registry behind it.
        self.on_commit: Callable[[str, bytes], None] = lambda digest, data: None

    def answer(self, request: Request) -> Behaviour:
        if not isinstance(self.mode, str):
            return self.mode
        if self.mode == "challenge":
            if request.path == "/token":
                return _json(200, {"token": "FOREIGN-TOKEN", "expires_in": 300})
            challenge = f'Bearer realm="{self.url}/token",service="foreign",scope="repository:x:push"'
            return _error(401, "UNAUTHORIZED", "who are you", {"WWW-Authenticate": challenge})
        return self._store(request)

    def _store(self, request: Request) -> Reply:
        held = self._held.setdefault(request.path, bytearray())
        if request.method == "PATCH":
            held += request.body
            return Reply(202, {"Location": f"{self.url}{request.path}", "Range": f"0-{max(len(held) - 1, 0)}"})
        if request.method == "GET":
            return Reply(204, {"Location": f"{self.url}{request.path}", "Range": f"0-{max(len(held) - 1, 0)}"})
        if request.method == "PUT":
            held += request.body
            digest = request.query.get("digest", "")
            if sha256_digest(bytes(held)) != digest:
                return _error(400, "DIGEST_INVALID", "digest does not match")
            self.committed[digest] = bytes(held)
            self.on_commit(digest, bytes(held))
            return Reply(201, {"Docker-Content-Digest": digest})
        if request.method == "DELETE":
            return Reply(204)
        return _error(404, "NOT_FOUND", "nothing here")
