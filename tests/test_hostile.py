"""``python -m ocipush`` against a registry that misbehaves on purpose (tests/hostileregistry.py),
with real credentials and a second, recording origin it must never hand them to.

Every row of ``ROWS`` breaks exactly one thing; the rest of the registry behaves.  Each
row runs the CLI as a subprocess (so hangs and memory are measurable) with
``--creds user:SECRET-PASSWORD --timeout 2s --retry 1 --retry-delay 10ms`` and asserts:

- the exit code (4 registry error, 5 authentication; 0 only where the push must succeed,
  and then the registry holds every blob, digest-checked, and the tag names the source's
  manifest — exit 0 with a broken image fails the row; ``uploads=True`` rows, the lying
  HEADs, also need a PATCH per blob: skipping is what the lie asks for);
- stderr ends with one ``ocipush: …`` line, it is the only one, all of it printable, and
  there is no traceback; ``mention`` rows also need the header at fault named in it;
- the run ends within ``WALL_LIMIT`` seconds and its peak RSS (``os.wait4``) stays under
  ``RSS_LIMIT`` (the server's endless bodies run past it: a client that reads them whole
  fails here, not by exhausting the machine);
- the recording server received no ``Authorization`` and nothing carrying the password
  (plain or Basic-encoded) or the registry's token — and, for ``hit`` rows, that it did
  receive the request aimed at it (so the check can fail);
- neither the password nor the token appears in stdout or stderr.

Where the issue allows either a clean refusal or a safe success, a row accepts both:
{4, 5} for a 401 from another origin or a refused realm (an authentication or a registry
error), {0, 4} where a success status comes with an endless body the client need not
read (ping, PATCH, manifest PUT), where h11 cannot parse a HEAD's Content-Length, where
``expires_in`` is out of range (docs/auth.md: negative means the default, huge means a
day), and where a commit's answer names another digest (a HEAD may confirm the blob).

``realm-plain-http-not-loopback`` names a realm that is neither HTTPS nor loopback, which
nothing on this machine can be.  Its error must say why (plain HTTP): a client that sent
the request would fail on DNS instead.  The child also gets ``HTTP_PROXY`` pointing at
the recorder, so a client that honoured proxies from the environment (ocipush's own
transport does not: httpx ignores them beside a custom transport) would be caught there.

The rows run ``WORKERS`` at a time from one module fixture, each with its own pair of
servers, its own home (tests/userconfig.py's ``UserConfig``, set up as the
``user_config`` fixture does) and ``XDG_CACHE_HOME``; the test of a row asserts its
outcome.  A hypothesis test then sends arbitrary values in one header at a time through
the CLI in-process.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ocipush.cli import main
from tests.hostileregistry import (
    PASSWORD,
    TOKEN,
    USER,
    Cut,
    Endless,
    Hang,
    HostileRegistry,
    Raw,
    Recorder,
    Reply,
    Request,
    Rule,
    Trickle,
    _error,
    basic,
    sha256_digest,
)
from tests.imagegen import ImageInfo, LayerSpec, make_layout
from tests.userconfig import UserConfig

REPO = "hostile/app"
COMMON_FLAGS = ("--creds", f"{USER}:{PASSWORD}", "--timeout", "2s", "--retry", "1", "--retry-delay", "10ms")
SECRETS = (PASSWORD, basic().removeprefix("Basic "), TOKEN)
WALL_LIMIT = 20.0  # seconds a row may take
CHILD_LIMIT = 30.0  # then the child is killed (and the row fails on WALL_LIMIT)
RSS_LIMIT = 300 * 1024 * 1024
WORKERS = 6
_ENV_CLEARED = ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy", "SSL_CERT_FILE")

# Request targets, as the rules match them.
PING = r"^/v2/$"
TOKEN_PATH = r"^/token"
HEAD_BLOB = r"/blobs/sha256:"
POST_UPLOAD = r"/blobs/uploads/$"
PATCH_UPLOAD = r"/blobs/uploads/[^?]"
COMMIT = r"/blobs/uploads/.*digest="
MANIFEST = r"/manifests/"


@dataclass
class Ctx:
    """What a row's rules may refer to: both servers and the image being pushed."""

    registry: HostileRegistry
    recorder: Recorder
    image: ImageInfo

    @property
    def sizes(self) -> dict[str, int]:
        return {b.digest: b.size for b in (self.image.config, *self.image.layers)}

    def amend(self, headers: dict | None = None, **changes) -> Callable[[Request], Reply]:
        """The plausible answer, with ``headers`` set (None drops one) and ``changes``."""

        def answer(request: Request) -> Reply:
            reply = self.registry.plausible(request)
            merged = {k: v for k, v in reply.header_items() if k.lower() not in {h.lower() for h in headers or {}}}
            merged.update({k: v for k, v in (headers or {}).items() if v is not None})
            return dataclasses.replace(reply, headers=tuple(merged.items()), **changes)

        return answer

    def foreign_location(self, path: str) -> Callable[[Request], Reply]:
        """POST's plausible answer, its Location moved to the recorder (``path`` + a fresh id)."""

        def answer(request: Request) -> Reply:
            location = f"{self.recorder.url}{path}{uuid.uuid4().hex}?X-Amz-Signature=0a1b2c"
            return self.amend({"Location": location})(request)

        return answer

    def lying_head(self, **fields: Callable[[str, int], str | None]) -> Callable[[Request], Reply | None]:
        """HEAD 200 for a blob the registry does not hold, its headers from ``fields``
        (name → f(digest, true size)); once the blob is stored, the truth."""

        def answer(request: Request) -> Reply | None:
            digest = request.path.rsplit("/", 1)[-1]
            if digest in self.registry.blobs or digest not in self.sizes:
                return None
            values = {k.replace("_", "-"): f(digest, self.sizes[digest]) for k, f in fields.items()}
            return Reply(200, {k: v for k, v in values.items() if v is not None}, framing="none")

        return answer

    def same_origin_store(self, request: Request) -> Reply:
        """Uploads under ``/store/`` on the registry's own origin, outside ``/v2/``: the
        spec calls a Location opaque, so they get credentials like the API."""
        if not self.registry.authorized(request):
            return Reply(401, {"WWW-Authenticate": self.registry.challenge()})
        api = f"/v2/{REPO}/blobs/uploads/"
        inner = dataclasses.replace(request, target=request.target.replace("/store/", api, 1))
        reply = self.registry.plausible(inner)
        headers = [(k, v.replace(api, "/store/") if k == "Location" else v) for k, v in reply.header_items()]
        return dataclasses.replace(reply, headers=tuple(headers))

    def commit_then_cut(self, request: Request) -> Reply | Cut:
        """serverless-registry's lost commit answer: the first commit of each blob takes
        effect and the connection drops; asked again, the upload is gone and it says 500."""
        if request.query.get("digest") in self.registry.blobs:
            return Reply(500, OCI_JSON, b'{"errors": [{"code": "UNKNOWN", "message": "internal error"}]}')
        self.registry.plausible(request)
        return Cut()

    def first_patch_fails(self) -> Callable[[Request], Reply | None]:
        """serverless-registry after a failed first chunk: 500 to the PATCH, nothing
        stored, and its status answer says ``Range: 0--1``."""
        failed: set[str] = set()

        def answer(request: Request) -> Reply | None:
            if request.method == "PATCH" and request.path not in failed:
                failed.add(request.path)
                return Reply(500, {}, b"chunk lost")
            if request.method == "GET" and request.path in failed:
                return Reply(204, {"Location": request.path, "Range": "0--1"})
            return None

        return answer

    def other_digest(self, digest: str) -> str:
        return next(d for d in self.sizes if d != digest)


Rules = Callable[[Ctx], list[Rule]]


@dataclass(frozen=True)
class Row:
    id: str
    rules: Rules
    exit: frozenset[int]
    auth: str | None = "basic"
    recorder: str | Reply = "store"
    token_doc: dict | None = None
    realm: Callable[[Ctx], str] | None = None
    env: Callable[[Ctx], dict[str, str]] = lambda ctx: {}
    args: tuple[str, ...] = ()
    hit: str | None = None  # the recorder must have received a request matching "METHOD target"
    mention: str | None = None  # the error line must match this (it names the header at fault)
    stored_at: str = "registry"  # where a successful push's blobs were uploaded: registry | recorder
    uploads: bool = False  # exit 0 must mean every blob was uploaded (PATCH), none skipped
    check: Callable[[Outcome], None] | None = None  # anything else the row needs to hold


def row(id: str, rules: Rules, exit: int | set[int], **kw) -> Row:
    return Row(id, rules, frozenset({exit} if isinstance(exit, int) else exit), **kw)


def on(method: str, target: str, then, times: int | None = None) -> Rule:
    return Rule(method, target, then, times)


def rules(*made: Callable[[Ctx], Rule]) -> Rules:
    return lambda ctx: [m(ctx) for m in made]


def fixed(method: str, target: str, then, times: int | None = None) -> Callable[[Ctx], Rule]:
    return lambda ctx: on(method, target, then, times)


def html_page(title: str, size: int = 0) -> bytes:
    return f"<html><head><title>{title}</title></head><body>{'x' * size}</body></html>".encode()


DIGITS_5000 = "9" * 5000
OCI_JSON = {"Content-Type": "application/json"}
FOREIGN_V2 = "/v2/hostile/app/blobs/uploads/"
PROXY_REALM = "http://tokens.hostile.invalid/token"  # plain HTTP, not loopback (see the docstring)

ROWS: list[Row] = [
    # -- credentials stay with their origin ---------------------------------------------
    row("location-same-origin-outside-v2", lambda c: [on("POST", POST_UPLOAD, c.same_origin_store),
                                                      on("*", "^/store/", c.same_origin_store)], 0, uploads=True),
    row("location-foreign-v2-path", lambda c: [on("POST", POST_UPLOAD, c.foreign_location(FOREIGN_V2))], 0,
        hit="PATCH " + FOREIGN_V2, stored_at="recorder"),
    row("location-foreign-presigned-path", lambda c: [on("POST", POST_UPLOAD, c.foreign_location("/bucket/"))], 0,
        hit="PATCH /bucket/", stored_at="recorder"),
    row("location-foreign-v2-path-bearer", lambda c: [on("POST", POST_UPLOAD, c.foreign_location(FOREIGN_V2))], 0,
        auth="bearer", hit="PATCH " + FOREIGN_V2, stored_at="recorder"),
    row("location-foreign-401-bearer-realm", lambda c: [on("POST", POST_UPLOAD, c.foreign_location(FOREIGN_V2))],
        {4, 5}, recorder="challenge", hit="PATCH " + FOREIGN_V2),
    row("location-foreign-401-bearer-realm-bearer", lambda c: [on("POST", POST_UPLOAD,
        c.foreign_location(FOREIGN_V2))], {4, 5}, auth="bearer", recorder="challenge", hit="PATCH " + FOREIGN_V2),
    row("location-foreign-401-basic", lambda c: [on("POST", POST_UPLOAD, c.foreign_location("/bucket/"))], {4, 5},
        recorder=Reply(401, {"WWW-Authenticate": 'Basic realm="foreign"'}), hit="PATCH /bucket/"),
    row("patch-location-foreign-401", lambda c: [on("PATCH", PATCH_UPLOAD, c.amend(
        {"Location": f"{c.recorder.url}{FOREIGN_V2}moved?sig=1"}))], {4, 5}, auth="bearer",
        recorder="challenge", hit="PUT " + FOREIGN_V2),
    row("head-redirect-foreign", lambda c: [on("HEAD", HEAD_BLOB, lambda r: Reply(
        307, {"Location": f"{c.recorder.url}{r.path}"}))], 0, hit="HEAD /v2/"),
    row("head-redirect-foreign-bearer", lambda c: [on("HEAD", HEAD_BLOB, lambda r: Reply(
        307, {"Location": f"{c.recorder.url}{r.path}"}))], 0, auth="bearer", hit="HEAD /v2/"),
    row("head-redirect-foreign-401", lambda c: [on("HEAD", HEAD_BLOB, lambda r: Reply(
        307, {"Location": f"{c.recorder.url}{r.path}"}))], {4, 5}, auth="bearer", recorder="challenge",
        hit="HEAD /v2/"),
    row("ping-redirect-foreign-401", lambda c: [on("GET", PING, Reply(
        307, {"Location": f"{c.recorder.url}/v2/"}))], {4, 5}, recorder="challenge"),
    row("token-redirect-foreign", lambda c: [on("GET", TOKEN_PATH, lambda r: Reply(
        307, {"Location": f"{c.recorder.url}{r.target}"}))], {4, 5}, auth="bearer", recorder="challenge"),
    row("realm-plain-http-not-loopback", lambda c: [], {4, 5}, auth="bearer", recorder="challenge",
        realm=lambda c: PROXY_REALM, mention=r"(?i)plain http|\bhttps\b",
        env=lambda c: {"HTTP_PROXY": c.recorder.url, "NO_PROXY": "127.0.0.1,localhost"}),
    row("realm-plain-http-other-host-insecure", lambda c: [], {4, 5}, auth="bearer", recorder="challenge",
        realm=lambda c: PROXY_REALM, mention=r"(?i)plain http", args=("--tls-verify=false",),
        env=lambda c: {"HTTP_PROXY": c.recorder.url, "NO_PROXY": "127.0.0.1,localhost"}),
    row("proxy-before-loopback-registry", lambda c: [], {4, 5},
        recorder=Reply(401, {"WWW-Authenticate": 'Basic realm="proxy"'}),
        env=lambda c: {"HTTP_PROXY": c.recorder.url, "HTTPS_PROXY": c.recorder.url}),
    # -- a server that echoes what it was sent: no secret in the error line -----------------
    row("patch-400-echoes-bearer", rules(fixed("PATCH", PATCH_UPLOAD, lambda r: _error(
        400, "DENIED", f"you sent {r.header('authorization')}"))), 4, auth="bearer"),
    row("patch-400-echoes-basic", rules(fixed("PATCH", PATCH_UPLOAD, lambda r: Reply(
        400, {"Content-Type": "text/html"}, html_page(f"Bad {r.header('authorization')}")))), 4),
    row("post-400-echoes-basic-in-reason", rules(fixed("POST", POST_UPLOAD, lambda r: Reply(
        400, {}, b"", reason=f"Bad {r.header('authorization')}"))), 4),
    row("manifest-digest-echoes-bearer", rules(fixed("PUT", MANIFEST, lambda r: Reply(
        201, {"Docker-Content-Digest": r.header("authorization") or ""}))), 4, auth="bearer"),
    row("location-echoes-bearer", rules(fixed("POST", POST_UPLOAD, lambda r: Reply(
        202, {"Location": (r.header("authorization") or "").removeprefix("Bearer ") + " ://"}))), 4, auth="bearer"),
    row("range-echoes-basic", rules(fixed("PATCH", PATCH_UPLOAD, lambda r: Reply(
        202, {"Range": (r.header("authorization") or "").removeprefix("Basic "), "Location": r.target}))), 4),
    row("retry-note-echoes-basic", rules(fixed("POST", POST_UPLOAD, lambda r: Reply(
        503, {}, b"", reason=f"Busy {r.header('authorization')}"), times=1)), 0),
    # -- endless and slow answers ---------------------------------------------------------
    row("endless-ping-200", rules(fixed("GET", PING, Reply(200, OCI_JSON, Endless(b"{" * 65536)))), {0, 4},
        auth=None),
    row("endless-ping-401", lambda c: [on("GET", PING, Reply(401, {"WWW-Authenticate": c.registry.challenge()},
                                                             Endless()))], {0, 4, 5}),
    row("endless-post-500", rules(fixed("POST", POST_UPLOAD, Reply(500, OCI_JSON, Endless(b"[" * 65536)))), 4),
    row("endless-patch-202", lambda c: [on("PATCH", PATCH_UPLOAD, c.amend(body=Endless()))], {0, 4}),
    row("endless-patch-500", rules(fixed("PATCH", PATCH_UPLOAD, Reply(500, {}, Endless()))), 4),
    row("endless-token-200", rules(fixed("GET", TOKEN_PATH, Reply(200, OCI_JSON, Endless(b" " * 65536)))), 4,
        auth="bearer"),
    row("endless-token-401", rules(fixed("GET", TOKEN_PATH, Reply(401, OCI_JSON, Endless()))), {4, 5},
        auth="bearer"),
    row("endless-manifest-201", lambda c: [on("PUT", MANIFEST, c.amend(body=Endless()))], {0, 4}),
    row("endless-manifest-500", rules(fixed("PUT", MANIFEST, Reply(500, {}, Endless(), framing="close"))), 4),
    row("endless-100-continue", rules(fixed("POST", POST_UPLOAD, Raw(b"HTTP/1.1 100 Continue\r\n\r\n" * 1000,
                                                                    repeat=True))), 4),
    row("endless-header-block", rules(fixed("POST", POST_UPLOAD, Raw(b"HTTP/1.1 202 Accepted\r\n" + b"X-A: b\r\n"
                                                                    * 5000, repeat=True))), 4),
    row("trickle-post-500-body", rules(fixed("POST", POST_UPLOAD, Reply(500, {}, Trickle(every=0.2)))), 4),
    row("trickle-post-head", rules(fixed("POST", POST_UPLOAD, Reply(202, {"X-Pad": "p" * 400}, trickle_head=0.1))),
        4),
    row("trickle-token-body", rules(fixed("GET", TOKEN_PATH, Reply(
        200, OCI_JSON, Trickle(b'{"token": "' + b"t" * 400 + b'"}', every=0.1)))), 4, auth="bearer"),
    row("trickle-patch-500-body", rules(fixed("PATCH", PATCH_UPLOAD, Reply(500, {}, Trickle(every=0.2)))), 4),
    row("hang-post", rules(fixed("POST", POST_UPLOAD, Hang())), 4),
    row("hang-patch", rules(fixed("PATCH", PATCH_UPLOAD, Hang())), 4),
    row("hang-token", rules(fixed("GET", TOKEN_PATH, Hang())), 4, auth="bearer"),
    row("hang-manifest", rules(fixed("PUT", MANIFEST, Hang())), 4),
    row("cut-patch", rules(fixed("PATCH", PATCH_UPLOAD, Cut())), 4),
    # -- hostile header values -------------------------------------------------------------
    row("chunk-max-superscript", lambda c: [on("POST", POST_UPLOAD, c.amend({"OCI-Chunk-Max-Length": "²"}))], 4,
        mention="(?i)OCI-Chunk-Max-Length"),
    row("chunk-max-5000-digits", lambda c: [on("POST", POST_UPLOAD, c.amend({"OCI-Chunk-Max-Length": DIGITS_5000}))],
        4, mention="(?i)OCI-Chunk-Max-Length"),
    row("chunk-min-5000-digits", lambda c: [on("POST", POST_UPLOAD, c.amend({"OCI-Chunk-Min-Length": DIGITS_5000}))],
        4, mention="(?i)OCI-Chunk-Min-Length"),
    row("range-superscript", lambda c: [on("PATCH", PATCH_UPLOAD, c.amend({"Range": "0-²"}))], 4,
        mention=r"(?i)\brange\b"),
    row("range-5000-digits", lambda c: [on("PATCH", PATCH_UPLOAD, c.amend({"Range": "0-" + DIGITS_5000}))], 4,
        mention=r"(?i)\brange\b"),
    row("range-arabic-indic-digits", lambda c: [on("PATCH", PATCH_UPLOAD, c.amend({"Range": "٠-١٢٣"}))], 4,
        mention=r"(?i)\brange\b"),
    row("retry-after-superscript", rules(fixed("POST", POST_UPLOAD, Reply(503, {"Retry-After": "²"}))), 4),
    row("retry-after-5000-digits", rules(fixed("POST", POST_UPLOAD, Reply(503, {"Retry-After": DIGITS_5000}))), 4),
    row("head-content-length-superscript", rules(fixed("HEAD", HEAD_BLOB, Reply(
        200, {"Content-Length": "²"}, framing="none"))), {0, 4}),
    row("head-content-length-5000-digits", rules(fixed("HEAD", HEAD_BLOB, Reply(
        200, {"Content-Length": DIGITS_5000}, framing="none"))), {0, 4}),
    row("realm-unparseable", lambda c: [], {4, 5}, auth="bearer", realm=lambda c: "http://[::1/token"),
    row("realm-not-http", lambda c: [], {4, 5}, auth="bearer", realm=lambda c: "file:///etc/passwd"),
    row("expires-in-400-digits", lambda c: [on("GET", TOKEN_PATH, Reply(
        200, OCI_JSON, f'{{"token": "{TOKEN}", "expires_in": 1{"0" * 400}}}'.encode()))], {0, 4}, auth="bearer"),
    row("expires-in-1e400", lambda c: [on("GET", TOKEN_PATH, Reply(
        200, OCI_JSON, f'{{"token": "{TOKEN}", "expires_in": 1e400}}'.encode()))], {0, 4}, auth="bearer"),
    row("expires-in-negative", lambda c: [], {0, 4}, auth="bearer", token_doc={"token": TOKEN, "expires_in": -5},
        mention="(?i)expires_in|token"),
    row("expires-in-string", lambda c: [], 4, auth="bearer", token_doc={"token": TOKEN, "expires_in": "soon"},
        mention="(?i)expires_in|token"),
    row("token-html", rules(fixed("GET", TOKEN_PATH, Reply(200, {}, html_page("Sign in")))), 4, auth="bearer"),
    row("location-unparseable", lambda c: [on("POST", POST_UPLOAD, c.amend({"Location": "http://[::1/up"}))], 4,
        mention="(?i)location"),
    row("location-not-http", lambda c: [on("POST", POST_UPLOAD, c.amend({"Location": "file:///etc/passwd"}))], 4),
    row("location-missing", lambda c: [on("POST", POST_UPLOAD, c.amend({"Location": None}))], 4),
    # -- a HEAD that lies: not there, so the blob is uploaded -------------------------------
    row("lying-head-size", lambda c: [on("HEAD", HEAD_BLOB, c.lying_head(
        Content_Length=lambda d, n: str(n + 1), Docker_Content_Digest=lambda d, n: d))], 0,
        uploads=True),
    row("lying-head-size-no-digest", lambda c: [on("HEAD", HEAD_BLOB, c.lying_head(
        Content_Length=lambda d, n: "1"))], 0, uploads=True),
    row("lying-head-digest-garbage", lambda c: [on("HEAD", HEAD_BLOB, c.lying_head(
        Content_Length=lambda d, n: str(n), Docker_Content_Digest=lambda d, n: "sha256:¹²³"))], {0, 4},
        uploads=True, mention="(?i)docker-content-digest"),
    row("lying-head-digest-other", lambda c: [on("HEAD", HEAD_BLOB, c.lying_head(
        Content_Length=lambda d, n: str(n), Docker_Content_Digest=lambda d, n: c.other_digest(d)))], 0,
        uploads=True),
    row("commit-digest-other", lambda c: [on("PUT", COMMIT, c.amend(
        {"Docker-Content-Digest": "sha256:" + "0" * 64}))], {0, 4}),
    row("manifest-digest-other", lambda c: [on("PUT", MANIFEST, c.amend(
        {"Docker-Content-Digest": "sha256:" + "0" * 64}))], 4),
    row("manifest-digest-garbage", lambda c: [on("PUT", MANIFEST, c.amend({"Docker-Content-Digest": "²" * 70}))],
        4),
    row("head-serverless-mounted-link", lambda c: [on("HEAD", HEAD_BLOB, c.lying_head(
        Content_Length=lambda d, n: "85", Docker_Content_Digest=lambda d, n: sha256_digest(f"link:{d}".encode())))],
        0, uploads=True),
    # -- what serverless-registry does, to be recovered from ----------------------------------
    row("commit-answer-lost-then-500", lambda c: [on("PUT", COMMIT, c.commit_then_cut)], 0),
    row("first-chunk-failed-range-0--1", lambda c: [on("*", PATCH_UPLOAD, c.first_patch_fails())], 0,
        uploads=True, check=lambda o: one_post_per_blob(o)),
    # -- garbage bodies, huge headers, odd statuses -----------------------------------------
    row("error-json-broken", rules(fixed("POST", POST_UPLOAD, Reply(500, OCI_JSON, b'{"errors": "\xc2\xb2", ['))), 4),
    row("error-json-deep", rules(fixed("POST", POST_UPLOAD, Reply(400, OCI_JSON, b"[" * 60_000))), 4),
    row("error-html-huge", rules(fixed("POST", POST_UPLOAD, Reply(502, {}, html_page("Bad Gateway", 2_000_000)))),
        4),
    row("error-escape-sequences", rules(fixed("POST", POST_UPLOAD, Reply(400, OCI_JSON, b'{"errors": [{"code": '
        b'"DENIED", "message": "\\u001b[2J\\u001b]0;pwned\\u0007\\nocipush: fake line"}]}'))), 4),
    row("www-authenticate-huge", rules(fixed("GET", PING, Reply(401, {"WWW-Authenticate": 'Basic realm="'
                                                                      + "r" * 200_000 + '"'}))), {4, 5}),
    row("www-authenticate-binary", rules(fixed("GET", PING, Reply(401, {"WWW-Authenticate": b'Bearer realm="\xff\xfe'
                                                                      b'\x80",service=\xc2\xb2'}))), {4, 5}),
    row("status-999", rules(fixed("POST", POST_UPLOAD, Reply(999))), 4),
    row("status-two-digits", rules(fixed("PATCH", PATCH_UPLOAD, Reply("20"))), 4),
    row("status-not-a-number", rules(fixed("GET", PING, Reply("abc"))), 4),
    row("status-200-for-post", rules(fixed("POST", POST_UPLOAD, Reply(200))), 4),
]


# -- running a row ---------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss: int  # bytes
    registry: HostileRegistry
    recorder: Recorder
    ctx: Ctx = field(repr=False)

    def describe(self) -> str:
        tail = "\n".join(self.stderr.splitlines()[-8:])
        return (f"exit {self.code} after {self.seconds:.1f}s, peak RSS {self.max_rss >> 20} MiB; stderr tail:\n{tail}")


def child_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment the ``user_config`` fixture gives a test, for a child of our own."""
    config = UserConfig(home / "home", home / "run", home / "registries.conf", home / "bin")
    for directory in (config.home, config.runtime_dir, config.bin, home / "cache"):
        directory.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in _ENV_CLEARED}
    env.update(
        HOME=str(config.home),
        XDG_RUNTIME_DIR=str(config.runtime_dir),
        CONTAINERS_REGISTRIES_CONF=str(config.registries_conf),
        PATH=f"{config.bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        XDG_CACHE_HOME=str(home / "cache"),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )
    env.update(extra)
    return env


# Runs argv, kills it after a limit, and writes "<exit code> <ru_maxrss KiB>" to a file.
# Why not wait4 from here: a child started by vfork (subprocess does) inherits the high-water
# RSS of the process it came from, so every child of a pytest that once held 400 MiB
# "peaks" at 400 MiB.  This small launcher's own children start from its own few MiB.
_LAUNCHER = """\
import os, subprocess, sys, threading
limit, report = float(sys.argv[1]), sys.argv[2]
child = subprocess.Popen(sys.argv[3:])
timer = threading.Timer(limit, child.kill)
timer.start()
_, status, usage = os.wait4(child.pid, 0)
timer.cancel()
child.returncode = os.waitstatus_to_exitcode(status)
with open(report, "w") as f:
    f.write(f"{child.returncode} {usage.ru_maxrss}")
"""


def run_child(argv: list[str], env: dict[str, str], workdir: Path) -> tuple[int, str, str, float, int]:
    """Exit code, stdout, stderr, seconds and peak RSS (bytes) of ``argv``, killed after CHILD_LIMIT."""
    out_path, err_path, report = workdir / "stdout", workdir / "stderr", workdir / "rusage"
    launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(CHILD_LIMIT), str(report)]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        process = subprocess.run([*launcher, *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                 cwd=workdir, timeout=CHILD_LIMIT + 15)
    seconds = time.monotonic() - started
    assert process.returncode == 0, f"the launcher failed: {err_path.read_text()}"
    code, max_rss = (int(word) for word in report.read_text().split())

    def read(p: Path) -> str:
        return p.read_bytes().decode("utf-8", "replace")

    return code, read(out_path), read(err_path), seconds, max_rss * 1024


def run_row(case: Row, image: ImageInfo, workdir: Path) -> Outcome:
    recorder = Recorder(case.recorder)
    registry = HostileRegistry(auth=case.auth, token_doc=case.token_doc)
    with recorder, registry:
        ctx = Ctx(registry, recorder, image)
        recorder.on_commit = registry.blobs.__setitem__  # the store behind a presigned upload
        registry.rules = case.rules(ctx)
        if case.realm is not None:
            registry.realm = case.realm(ctx)
        argv = [sys.executable, "-m", "ocipush", f"oci:{image.layout}", f"{registry.host}/{REPO}:v1",
                *COMMON_FLAGS, *case.args]
        code, out, err, seconds, rss = run_child(argv, child_env(workdir, case.env(ctx)), workdir)
    return Outcome(code, out, err, seconds, rss, registry, recorder, ctx)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> ImageInfo:
    return make_layout(tmp_path_factory.mktemp("hostile-image"), [LayerSpec(20_000)], ref="v1")


@pytest.fixture(scope="module")
def outcomes(request, image, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected row, run WORKERS at a time."""
    params = [getattr(item, "callspec", None) for item in request.session.items if item.module is sys.modules[__name__]]
    selected = {p.params["case"].id for p in params if p is not None and "case" in p.params}
    cases = [c for c in ROWS if c.id in selected]
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {c.id: pool.submit(run_row, c, image, tmp_path_factory.mktemp(c.id)) for c in cases}
    return {id: future.result() for id, future in futures.items()}


# -- the checks --------------------------------------------------------------------------------


def test_rows_are_many_and_distinct():
    assert len(ROWS) >= 40
    assert len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("case", ROWS, ids=[r.id for r in ROWS])
def test_hostile_row(case: Row, outcomes, image):
    outcome = outcomes[case.id]
    why = outcome.describe()
    assert not outcome.registry.errors + outcome.recorder.errors, "the test servers failed"
    assert "Traceback" not in outcome.stderr, why
    assert outcome.code in case.exit, why
    assert outcome.seconds < WALL_LIMIT, why
    assert outcome.max_rss < RSS_LIMIT, why
    check_lines(case, outcome)
    check_no_secret_left_home(case, outcome)
    if outcome.code == 0:
        check_pushed(case, outcome, image)
    if case.check is not None:
        case.check(outcome)


def one_post_per_blob(outcome: Outcome) -> None:
    posts = outcome.registry.requests("POST", POST_UPLOAD)
    assert len(posts) == len(outcome.ctx.sizes), f"{len(posts)} POSTs: a blob was restarted, not resumed"


def check_lines(case: Row, outcome: Outcome) -> None:
    lines = outcome.stderr.splitlines()
    if outcome.code == 0:
        assert not [line for line in lines if line.startswith("ocipush: ")], outcome.describe()
        return
    assert lines and lines[-1].startswith("ocipush: "), outcome.describe()
    assert [line for line in lines if line.startswith("ocipush: ")] == lines[-1:], outcome.describe()
    assert all(c.isprintable() for c in lines[-1]), repr(lines[-1])
    if case.mention:
        assert re.search(case.mention, lines[-1]), f"the error names no {case.mention}: {lines[-1]}"


def check_no_secret_left_home(case: Row, outcome: Outcome) -> None:
    for secret in SECRETS:
        assert secret not in outcome.stdout and secret not in outcome.stderr, f"secret in output: {outcome.describe()}"
    received = outcome.recorder.requests()
    for request in received:
        assert request.header("authorization") is None, f"Authorization sent to the foreign origin: {request}"
        text = request.raw_text()
        assert not any(secret in text for secret in SECRETS), f"a secret reached the foreign origin: {request}"
    if case.hit:
        method, target = case.hit.split(" ", 1)
        assert outcome.recorder.requests(method, re.escape(target)), (
            f"the foreign origin never got {case.hit}; it got {[(r.method, r.target) for r in received]}; "
            + outcome.describe())


def check_pushed(case: Row, outcome: Outcome, image: ImageInfo) -> None:
    """Exit 0 only with the whole image where it belongs, digest-checked, and the tag."""
    server = outcome.recorder if case.stored_at == "recorder" else outcome.registry
    for blob in (image.config, *image.layers):
        assert outcome.registry.blobs.get(blob.digest) == blob.path.read_bytes(), (
            f"exit 0 but {blob.digest} is not in the registry; {outcome.describe()}")
        if server is outcome.recorder:
            assert blob.digest in outcome.recorder.committed, f"{blob.digest} did not go to the upload store"
    assert outcome.registry.manifests.get((REPO, "v1")) == image.manifest.path.read_bytes(), outcome.describe()
    if case.uploads:
        patches = server.requests("PATCH")
        assert len(patches) >= len(image.layers) + 1, f"a blob was skipped: only {len(patches)} PATCH requests"


def test_hostile_server_survives_a_client_that_leaves():
    """An endless body and a hang end when the client goes away or the server closes:
    a broken client cannot keep a row's servers (and the suite) alive."""
    import socket as sockets

    rules = [Rule("GET", "^/endless", Reply(200, {}, Endless())), Rule("GET", "^/hang", Hang())]
    registry = HostileRegistry(rules, auth=None).__enter__()
    for target in ("/endless", "/hang", "/hang"):
        with sockets.create_connection(("127.0.0.1", registry.port)) as conn:
            conn.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            if target == "/endless":
                conn.recv(1000)  # some of it, then leave
    with sockets.create_connection(("127.0.0.1", registry.port)) as conn:  # still there when we close
        conn.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        assert registry.wait_for_requests(4)
        started = time.monotonic()
        registry.close()
        assert time.monotonic() - started < 2
        assert conn.recv(10) == b""  # closed on us
    assert [r.target for r in registry.requests()] == ["/endless", "/hang", "/hang", "/hang"]


# -- any header value, through the CLI in-process ----------------------------------------------

HEADER_VALUES = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=40),
    st.text("0123456789", min_size=1, max_size=6000),
    st.text("0123456789-,/ ²١٣bytes=", max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


def header_spot(ctx: Ctx, name: str, value: str) -> Rule:
    """Where the registry sends ``name``, now with ``value``."""
    if name in ("OCI-Chunk-Max-Length", "OCI-Chunk-Min-Length", "Location"):
        return on("POST", POST_UPLOAD, ctx.amend({name: value}))
    if name == "Range":
        return on("PATCH", PATCH_UPLOAD, ctx.amend({name: value}))
    if name == "Docker-Content-Digest":
        return on("PUT", COMMIT, ctx.amend({name: value}))
    if name == "Content-Length":  # a HEAD 200 that may lie about the size
        return on("HEAD", HEAD_BLOB, ctx.lying_head(Content_Length=lambda d, n: value))
    return on("GET", PING, Reply(401, {name: value}))  # WWW-Authenticate


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["OCI-Chunk-Max-Length", "OCI-Chunk-Min-Length", "Location", "Range",
                             "Docker-Content-Digest", "Content-Length", "WWW-Authenticate"]),
       value=HEADER_VALUES)
def test_any_header_value_is_a_clean_error_or_a_whole_image(name, value, image, user_config, tmp_path, capsys,
                                                            monkeypatch):
    """The CLI, in-process, with the registry sending an arbitrary value in one header: it
    exits 0 with the whole image, or 4/5 with one ``ocipush:`` line; nothing else escapes."""
    assume(not (name == "Location" and "//" in value))  # another host: a DNS lookup, not a parse
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    capsys.readouterr()
    with Recorder() as recorder, HostileRegistry(auth="basic") as registry:
        ctx = Ctx(registry, recorder, image)
        registry.rules = [header_spot(ctx, name, value)]
        code = main([f"oci:{image.layout}", f"{registry.host}/{REPO}:v1", *COMMON_FLAGS])
    assert not registry.errors, "the test server failed"
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code in (0, 4, 5), err
    assert not any(secret in out + err for secret in SECRETS)
    if code:
        assert [line for line in lines if line.startswith("ocipush: ")] == lines[-1:], err
        return
    for blob in (image.config, *image.layers):
        assert registry.blobs.get(blob.digest) == blob.path.read_bytes(), f"exit 0, {blob.digest} missing: {err}"
    assert registry.manifests.get((REPO, "v1")) == image.manifest.path.read_bytes()


# -- a signal while the registry says nothing ------------------------------------------------


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_silent_patch_cancels_every_upload(signum, code, image, tmp_path):
    """Every PATCH hangs; the signal comes once both are in.  ocipush must stop them, DELETE
    both uploads and exit ``code`` with one line, long before any deadline would."""
    with HostileRegistry([Rule("PATCH", PATCH_UPLOAD, Hang())]) as registry:
        argv = [sys.executable, "-m", "ocipush", f"oci:{image.layout}", f"{registry.host}/{REPO}:v1",
                "--creds", f"{USER}:{PASSWORD}", "--timeout", "60s", "--retry", "0"]
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   env=child_env(tmp_path, {}), cwd=tmp_path, text=True)
        try:
            assert registry.wait_for("PATCH", count=2), "the PATCH requests never came"
            process.send_signal(signum)
            sent = time.monotonic()
            _, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        seconds = time.monotonic() - sent
        deleted = {r.path for r in registry.requests("DELETE")}
    lines = err.splitlines()
    assert process.returncode == code, err
    assert lines and lines[-1].startswith("ocipush: ") and "Traceback" not in err, err
    assert seconds < 10, f"{seconds:.1f}s from the signal to the exit"
    assert {r.path for r in registry.requests("PATCH")} <= deleted, f"uploads left open; DELETEs: {deleted}"
