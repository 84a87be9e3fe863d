"""A strict in-process fake OCI registry, for protocol corner cases real registries won't produce on demand.

It follows the OCI distribution spec v1.1 ("the spec" below) where it speaks, and mimics
cloudflare/serverless-registry (R2 multipart underneath) where that is stricter. It shares no code
with `ocipush`, so it can serve as an independent oracle for the client.

Storage is per repository: a blob pushed to `a` is unknown in `b` until mounted there.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, get_args
from urllib.parse import parse_qsl, urlsplit

LocationStyle = Literal["relative", "absolute", "state", "rotating"]

IMAGE_MANIFESTS = frozenset(
    {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
)
INDEXES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)

# Spec: repository name components, the PATCH Content-Range grammar, tags; digests are sha256 only here.
NAME_RE = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
CONTENT_RANGE_RE = re.compile(r"([0-9]+)-([0-9]+)")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
LOGGED_HEADERS = ("content-type", "content-length", "content-range", "transfer-encoding")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # keys lower-cased
    body: bytes


@dataclass(frozen=True)
class Reply:
    """An HTTP response; also what `inject` answers in place of the registry."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Drop:
    """Fault: close the connection without answering. With `after_handling` the request takes effect
    first, so the client loses the response to a PATCH/PUT that did happen."""

    after_handling: bool = False


@dataclass(frozen=True)
class Alter:
    """Fault: handle the request (it takes effect), then answer with `status` instead of the registry's
    and with `headers` set over its headers (a None value removes one). Lies about what happened —
    a 500 to a PUT that committed, a garbage `Range` on a good PATCH — on top of real state."""

    status: int | None = None
    headers: dict[str, str | None] = field(default_factory=dict)
    body: bytes | None = None

    def apply(self, reply: Reply) -> Reply:
        headers = {k: v for k, v in reply.headers.items() if k.lower() not in {n.lower() for n in self.headers}}
        headers.update({k: v for k, v in self.headers.items() if v is not None})
        return Reply(self.status or reply.status, headers, reply.body if self.body is None else self.body)


@dataclass(frozen=True)
class LogRecord:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # only LOGGED_HEADERS that were sent
    body_length: int
    status: int | None  # None: connection dropped by a fault


@dataclass
class _Fault:
    predicate: Callable[[Request], bool]
    action: Reply | Drop | Alter
    remaining: int


@dataclass
class _Upload:
    repo: str
    uuid: str
    handle: str  # last segment of the upload path; changes on every response in "rotating" style
    token: str = ""  # the `_state` query value of the latest Location
    data: bytearray = field(default_factory=bytearray)
    chunks: list[int] = field(default_factory=list)
    closed: bool = False  # a chunk that is only acceptable as the last one was received


class _Rejected(Exception):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply


def nth(method: str, n: int, path: str = "") -> Callable[[Request], bool]:
    """Predicate for `inject`: the n-th (1-based) request with `method` whose path contains `path`."""
    seen = itertools.count(1)
    return lambda req: req.method == method and path in req.path and next(seen) == n


def html(status: int, headers: dict[str, str] | None = None) -> Reply:
    """An HTML error page, as a proxy or load balancer in front of a registry answers."""
    body = f"<html><body><h1>{status}</h1>nginx</body></html>".encode()
    return Reply(status, {"Content-Type": "text/html", **(headers or {})}, body)


def oci_error(
    status: int, code: str, message: str, detail: object = None, headers: dict[str, str] | None = None
) -> Reply:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}).encode()
    return Reply(status, {"Content-Type": "application/json", **(headers or {})}, body)


def _fail(
    status: int, code: str, message: str, detail: object = None, headers: dict[str, str] | None = None
) -> _Rejected:
    return _Rejected(oci_error(status, code, message, detail, headers))


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _range(offset: int, empty: str = "0-0") -> str:
    # Spec: "Range: 0-<end-of-range>", inclusive. With nothing received there is no valid end;
    # distribution, the reference implementation, answers "0-0", serverless-registry "0--1".
    return f"0-{offset - 1}" if offset else empty


class FakeRegistry(ThreadingHTTPServer):
    """Serve on 127.0.0.1:<random port> from a background thread: `with FakeRegistry(...) as fake:`.

    location_style: "relative" path, "absolute" URL, "state" (relative path plus a `_state` token
    that changes with every response carrying a Location, like serverless-registry's `_stateHash`),
    or "rotating" (absolute URL whose upload id segment changes with every such response).
    min_chunk / max_chunk: advertised as OCI-Chunk-Min-Length / OCI-Chunk-Max-Length and enforced.
    equal_chunks: every chunk must be as large as the first, only the last may be smaller (R2 multipart).
    body_limit: larger request bodies get an HTML 413, as from a proxy.
    serverless_final_put: a body on the closing PUT after PATCHes answers 500, like serverless-registry.
    require_basic: (user, password) for HTTP Basic auth on every request.
    serverless_mount_head: HEAD on a blob mounted from another repository answers the link file's
    length (85) and a digest of the link's path, like serverless-registry; an upload makes it real.
    empty_range: the Range of an upload holding nothing: "0-0" (distribution) or "0--1" (serverless-registry).
    gone_status: the answer to a request on an upload that is no longer open: 404 BLOB_UPLOAD_UNKNOWN
    (spec, distribution) or 500 INTERNAL_ERROR (serverless-registry, e.g. to a PUT sent again after it
    committed the blob).
    """

    def __init__(
        self,
        *,
        location_style: LocationStyle = "relative",
        min_chunk: int | None = None,
        max_chunk: int | None = None,
        equal_chunks: bool = True,
        body_limit: int | None = None,
        serverless_final_put: bool = False,
        require_basic: tuple[str, str] | None = None,
        serverless_mount_head: bool = False,
        empty_range: Literal["0-0", "0--1"] = "0-0",
        gone_status: Literal[404, 500] = 404,
    ) -> None:
        if location_style not in get_args(LocationStyle):
            raise ValueError(f"unknown location_style {location_style!r}")
        super().__init__(("127.0.0.1", 0), _Handler)
        self.location_style = location_style
        self.min_chunk, self.max_chunk, self.equal_chunks = min_chunk, max_chunk, equal_chunks
        self.body_limit = body_limit
        self.serverless_final_put = serverless_final_put
        self.require_basic = require_basic
        self.serverless_mount_head = serverless_mount_head
        self.links: set[tuple[str, str]] = set()  # (repo, digest) mounted, not uploaded
        self.empty_range, self.gone_status = empty_range, gone_status
        self.host = f"127.0.0.1:{self.server_address[1]}"
        self.url = f"http://{self.host}"
        self.blobs: dict[str, dict[str, bytes]] = {}  # repo -> digest -> content
        self.manifests: dict[str, dict[str, tuple[str, bytes]]] = {}  # repo -> digest -> (media type, body)
        self.tags: dict[str, dict[str, str]] = {}  # repo -> tag -> digest
        self._uploads: dict[str, _Upload] = {}  # by handle
        self._faults: list[_Fault] = []
        self._records: list[LogRecord] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeRegistry:
        # A short poll interval keeps shutdown() quick: tests start many registries.
        self._thread = threading.Thread(target=self.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up before reading the answer (as ocipush does after a bad header) is not
        # a fault of the fake; anything else is, and is printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    # ---- test API ----------------------------------------------------------------------------

    @property
    def log(self) -> list[LogRecord]:
        with self._lock:
            return list(self._records)

    def inject(self, predicate: Callable[[Request], bool], action: Reply | Drop | Alter, times: int = 1) -> None:
        """Answer the next `times` requests matching `predicate` with `action` instead of handling them.
        Every armed predicate sees every request (so `nth` counts right); the first armed match wins."""
        with self._lock:
            self._faults.append(_Fault(predicate, action, times))

    def add_blob(self, repo: str, data: bytes) -> str:
        digest = sha256_digest(data)
        with self._lock:
            self.blobs.setdefault(repo, {})[digest] = data
        return digest

    # ---- request handling --------------------------------------------------------------------

    def respond(self, req: Request) -> Reply | None:
        """The reply to send, or None to drop the connection. Requests are handled one at a time."""
        with self._lock:
            action = self._take_fault(req)
            if isinstance(action, Reply):
                reply: Reply | None = action
            elif isinstance(action, Drop) and not action.after_handling:
                reply = None
            elif isinstance(action, Alter):
                reply = action.apply(self._handle(req))
            else:
                reply = self._handle(req)
                if action is not None:  # Drop(after_handling=True)
                    reply = None
            headers = {k: v for k, v in req.headers.items() if k in LOGGED_HEADERS}
            status = reply.status if reply is not None else None
            self._records.append(LogRecord(req.method, req.path, req.query, headers, len(req.body), status))
            return reply

    def _take_fault(self, req: Request) -> Reply | Drop | Alter | None:
        matches = [fault for fault in self._faults if fault.predicate(req)]
        if not matches:
            return None
        fault = matches[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            self._faults.remove(fault)
        return fault.action

    def _handle(self, req: Request) -> Reply:
        try:
            # A proxy in front of the registry rejects large bodies before the registry sees them.
            if self.body_limit is not None and len(req.body) > self.body_limit:
                return html(413)
            self._authorize(req)
            return self._route(req)
        except _Rejected as rejected:
            return rejected.reply

    def _authorize(self, req: Request) -> None:
        # Basic only for now; a bearer variant would add a token endpoint and a different challenge here.
        if self.require_basic is None:
            return
        scheme, _, credentials = req.headers.get("authorization", "").partition(" ")
        expected = base64.b64encode(":".join(self.require_basic).encode()).decode()
        if scheme.lower() != "basic" or credentials != expected:
            challenge = {"WWW-Authenticate": 'Basic realm="fake"'}
            raise _fail(401, "UNAUTHORIZED", "authentication required", headers=challenge)

    def _route(self, req: Request) -> Reply:
        for pattern, methods in _ROUTES:
            match = pattern.fullmatch(req.path)
            if match is None:
                continue
            params = match.groupdict()
            if "name" in params and not NAME_RE.fullmatch(params["name"]):
                raise _fail(400, "NAME_INVALID", "invalid repository name", {"name": params["name"]})
            if req.method not in methods:
                raise _fail(405, "UNSUPPORTED", f"{req.method} not supported on {req.path}")
            return getattr(self, methods[req.method])(req, **params)
        raise _fail(404, "NOT_FOUND", f"no endpoint {req.path}")

    def _base(self, req: Request) -> Reply:
        return Reply(200, {"Content-Type": "application/json"}, b"{}")

    # ---- blobs -------------------------------------------------------------------------------

    def _get_blob(self, req: Request, name: str, digest: str) -> Reply:
        data = self.blobs.get(name, {}).get(digest)
        if data is None:
            raise _fail(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})
        if req.method == "HEAD" and self.serverless_mount_head and (name, digest) in self.links:
            link = sha256_digest(f"{name}/blobs/{digest}".encode())  # the link object's, not the blob's
            return Reply(200, {"Content-Length": "85", "Docker-Content-Digest": link})
        return Reply(200, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}, data)

    def _blob_created(self, name: str, digest: str) -> Reply:
        return Reply(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})

    def _start_upload(self, req: Request, name: str) -> Reply:
        mount, source = req.query.get("mount"), req.query.get("from")
        if mount is not None and source is not None and mount in self.blobs.get(source, {}):
            self.blobs.setdefault(name, {})[mount] = self.blobs[source][mount]
            self.links.add((name, mount))
            return self._blob_created(name, mount)
        # Spec: an unmountable blob (or a single-POST `?digest=` we don't support) gets a plain session.
        upload_id = str(uuid.uuid4())
        upload = _Upload(repo=name, uuid=upload_id, handle=upload_id)
        self._uploads[upload.handle] = upload
        headers = self._session_headers(upload)
        # The spec defines no Range on the POST reply (real registries send an ambiguous "0-0"); omit it
        # so that a client relying on it is caught.
        if self.min_chunk is not None:
            headers["OCI-Chunk-Min-Length"] = str(self.min_chunk)
        if self.max_chunk is not None:
            headers["OCI-Chunk-Max-Length"] = str(self.max_chunk)
        return Reply(202, headers)

    def _session(self, req: Request, name: str, handle: str) -> _Upload:
        upload = self._uploads.get(handle)
        if upload is None or upload.repo != name:
            if self.gone_status == 500:
                raise _fail(500, "INTERNAL_ERROR", "internal error")  # serverless-registry: no such state
            raise _fail(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", {"upload": handle})
        # Spec: clients SHOULD use the Location of the previous response; a stale token means they didn't.
        if self.location_style == "state" and req.query.get("_state") != upload.token:
            raise _fail(400, "BLOB_UPLOAD_INVALID", "stale or missing _state: use the latest Location")
        return upload

    def _session_headers(self, upload: _Upload) -> dict[str, str]:
        """Headers of a reply that hands out a Location; the location changes each time (see class doc)."""
        upload.token = secrets.token_hex(8)
        if self.location_style == "rotating":
            del self._uploads[upload.handle]
            upload.handle = str(uuid.uuid4())
            self._uploads[upload.handle] = upload
        path = f"/v2/{upload.repo}/blobs/uploads/{upload.handle}"
        location = {
            "relative": path,
            "absolute": self.url + path,
            "state": f"{path}?_state={upload.token}",
            "rotating": self.url + path,
        }[self.location_style]
        return {"Location": location, "Docker-Upload-UUID": upload.uuid}

    def _progress(self, upload: _Upload, status: int, error: str | None = None) -> Reply:
        headers = {**self._session_headers(upload), "Range": _range(len(upload.data), self.empty_range)}
        if error is None:
            return Reply(status, headers)
        return oci_error(status, "BLOB_UPLOAD_INVALID", error, headers=headers)

    def _upload_status(self, req: Request, name: str, handle: str) -> Reply:
        return self._progress(self._session(req, name, handle), 204)

    def _cancel(self, req: Request, name: str, handle: str) -> Reply:
        del self._uploads[self._session(req, name, handle).handle]
        return Reply(204)

    def _patch(self, req: Request, name: str, handle: str) -> Reply:
        upload = self._session(req, name, handle)
        self._append_chunk(upload, _chunk_start(req), req.body)
        return self._progress(upload, 202)

    def _append_chunk(self, upload: _Upload, start: int, chunk: bytes) -> None:
        violation = self._chunk_violation(upload, start, len(chunk))
        if violation is not None:
            # Spec: an out-of-order chunk gets 416. serverless-registry also answers 416 (with Location
            # and Range, which we copy) to chunks R2 multipart can't take.
            raise _Rejected(self._progress(upload, 416, violation))
        first = upload.chunks[0] if upload.chunks else len(chunk)
        # Spec: only the final chunk may be below OCI-Chunk-Min-Length; R2: only the last part may be smaller.
        upload.closed = (self.min_chunk is not None and len(chunk) < self.min_chunk) or (
            self.equal_chunks and len(chunk) < first
        )
        upload.data += chunk
        upload.chunks.append(len(chunk))

    def _chunk_violation(self, upload: _Upload, start: int, size: int) -> str | None:
        if start != len(upload.data):
            return f"chunk starts at {start}, the upload is at {len(upload.data)}"
        if upload.closed:
            return "a chunk after one that could only be the last"
        if self.max_chunk is not None and size > self.max_chunk:
            return f"chunk of {size} bytes is above OCI-Chunk-Max-Length {self.max_chunk}"
        if self.equal_chunks and upload.chunks and size > upload.chunks[0]:
            return f"chunk of {size} bytes is larger than the first chunk ({upload.chunks[0]})"
        return None

    def _finish(self, req: Request, name: str, handle: str) -> Reply:
        upload = self._session(req, name, handle)
        digest = req.query.get("digest", "")
        if not DIGEST_RE.fullmatch(digest):
            raise _fail(400, "DIGEST_INVALID", "closing PUT needs ?digest=sha256:<hex>", {"digest": digest})
        if req.body and self.serverless_final_put and upload.chunks:
            # serverless-registry ignores a closing PUT's body once PATCHes happened, so the assembled
            # object misses it, R2's digest check fails and the Worker answers 500.
            del self._uploads[upload.handle]
            raise _fail(500, "INTERNAL_ERROR", "internal error")
        if req.body:  # Spec: the final chunk MAY come with the closing PUT.
            self._append_chunk(upload, _chunk_start(req, default=len(upload.data)), req.body)
        received = sha256_digest(bytes(upload.data))
        del self._uploads[upload.handle]  # the session ends here, whatever the outcome
        if received != digest:
            # serverless-registry lets R2 check the digest and turns its failure into a 500.
            status, code = (500, "INTERNAL_ERROR") if self.serverless_final_put else (400, "DIGEST_INVALID")
            raise _fail(status, code, "digest does not match the uploaded content", {"received": received})
        self.blobs.setdefault(name, {})[digest] = bytes(upload.data)
        self.links.discard((name, digest))
        return self._blob_created(name, digest)

    # ---- manifests ---------------------------------------------------------------------------

    def _get_manifest(self, req: Request, name: str, ref: str) -> Reply:
        digest = self.tags.get(name, {}).get(ref, ref)
        stored = self.manifests.get(name, {}).get(digest)
        if stored is None:
            raise _fail(404, "MANIFEST_UNKNOWN", "manifest unknown", {"reference": ref})
        media_type, body = stored
        return Reply(200, {"Content-Type": media_type, "Docker-Content-Digest": digest}, body)

    def _put_manifest(self, req: Request, name: str, ref: str) -> Reply:
        digest = sha256_digest(req.body)
        if ":" in ref and ref != digest:
            raise _fail(400, "DIGEST_INVALID", "reference is not the manifest's digest", {"digest": digest})
        if ":" not in ref and not TAG_RE.fullmatch(ref):
            raise _fail(400, "TAG_INVALID", "invalid tag", {"tag": ref})  # legacy code, as distribution
        media_type, doc = _parse_manifest(req)
        self._check_references(name, media_type, doc)
        self.manifests.setdefault(name, {})[digest] = (media_type, req.body)  # verbatim, per spec
        if ":" not in ref:
            self.tags.setdefault(name, {})[ref] = digest
        return Reply(201, {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest})

    def _check_references(self, name: str, media_type: str, doc: dict) -> None:
        # Spec: a registry MAY reject a manifest whose descriptors (except `subject`) name missing
        # blobs or manifests, and then MUST answer MANIFEST_BLOB_UNKNOWN, for indexes too.
        if media_type in IMAGE_MANIFESTS:
            descriptors, known = [doc.get("config"), *doc.get("layers", [])], self.blobs.get(name, {})
        elif media_type in INDEXES:
            descriptors, known = doc.get("manifests", []), self.manifests.get(name, {})
        else:
            return  # artifact or unknown type: nothing we know how to check
        if not all(isinstance(d, dict) and isinstance(d.get("digest"), str) for d in descriptors):
            raise _fail(400, "MANIFEST_INVALID", "malformed descriptor")
        missing = [d["digest"] for d in descriptors if d["digest"] not in known]
        if missing:
            raise _fail(400, "MANIFEST_BLOB_UNKNOWN", "unknown blobs or manifests", {"missing": missing})


def _parse_manifest(req: Request) -> tuple[str, dict]:
    try:
        doc = json.loads(req.body)
    except ValueError as exc:
        raise _fail(400, "MANIFEST_INVALID", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _fail(400, "MANIFEST_INVALID", "a manifest is a JSON object")
    # Spec: registries SHOULD ignore Content-Type parameters; clients MUST send mediaType verbatim.
    content_type = req.headers.get("content-type", "").split(";")[0].strip()
    media_type = doc.get("mediaType", content_type)
    if not content_type or content_type != media_type:
        raise _fail(400, "MANIFEST_INVALID", f"Content-Type is not the mediaType {media_type!r}")
    return media_type, doc


def _chunk_start(req: Request, default: int | None = None) -> int:
    """Where the chunk in `req` starts, after checking its headers against the spec's PATCH rules.
    `default` is the start of a closing PUT's body sent without Content-Range."""
    if req.headers.get("content-type") != "application/octet-stream":
        raise _fail(400, "BLOB_UPLOAD_INVALID", "a chunk needs Content-Type: application/octet-stream")
    # Spec: Content-Length is the chunk's length; chunked transfer coding without it is refused.
    if req.headers.get("content-length") != str(len(req.body)):
        raise _fail(400, "SIZE_INVALID", "Content-Length is missing or is not the body length")
    if default is not None and "content-range" not in req.headers:
        return default
    match = CONTENT_RANGE_RE.fullmatch(req.headers.get("content-range", ""))
    if match is None:  # e.g. "bytes 0-9/10", HTTP's Content-Range syntax, which the spec does not use
        raise _fail(400, "BLOB_UPLOAD_INVALID", "Content-Range must match ^[0-9]+-[0-9]+$")
    start, end = int(match[1]), int(match[2])
    if end - start + 1 != len(req.body):  # the range is inclusive on both ends
        raise _fail(400, "SIZE_INVALID", "Content-Range length is not the body length")
    return start


_ROUTES: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = (
    (re.compile(r"/v2/"), {"GET": "_base"}),
    (re.compile(r"/v2/(?P<name>.+)/blobs/uploads/"), {"POST": "_start_upload"}),
    (
        re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<handle>[^/]+)"),
        {"GET": "_upload_status", "PATCH": "_patch", "PUT": "_finish", "DELETE": "_cancel"},
    ),
    (re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)"), {"GET": "_get_blob", "HEAD": "_get_blob"}),
    (
        re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)"),
        {"GET": "_get_manifest", "HEAD": "_get_manifest", "PUT": "_put_manifest"},
    ),
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every reply has a Content-Length, every body is read
    timeout = 10  # lets threads of idle keep-alive connections end
    server: FakeRegistry

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _serve(self) -> None:
        url = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        reply = self.server.respond(Request(self.command, url.path, query, headers, self._read_body()))
        if reply is None:
            self.close_connection = True  # the socket closes without a response
            return
        self.send_response(reply.status)
        # A HEAD reply carries the length of the GET body it stands for (RFC 9110 §9.3.2).
        headers = {"Content-Length": str(len(reply.body)), "Docker-Distribution-API-Version": "registry/2.0"}
        for name, value in {**headers, **reply.headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def send_header(self, keyword: str, value: str) -> None:
        try:
            super().send_header(keyword, value)
        except UnicodeEncodeError:  # a hostile value from a test ("0-١٢"): UTF-8 on the wire, as a server may
            self._headers_buffer.append(f"{keyword}: ".encode() + value.encode("utf-8", "replace") + b"\r\n")

    def _read_body(self) -> bytes:
        # RFC 9112 §6.3: Transfer-Encoding chunked wins over Content-Length; neither means no body.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()  # the CRLF ending the chunk data
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailer fields
            pass
        return bytes(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests read `FakeRegistry.log` instead
