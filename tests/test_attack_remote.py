"""A hostile SOURCE registry (``docker://``): ``python -m ocipush``'s ``main`` in process,
copying from a registry that breaks exactly one thing per row (tests/hostileregistry.py's
plausible registry, here also serving manifests and ranges) into a plain destination,
with credentials for the source only (unless a row says otherwise) and a recording server
as a third origin.

Each row asserts: the exit code (0 only with the whole image at the destination, every blob
digest-checked, the tag on the source's manifest; 3 for what the source served, 5 when it
refused credentials, 4 for the destination); one ``ocipush:`` line, printable, naming what
``mention`` says; nothing tagged after a failure; the row's wall time; the password nowhere
in the output; no ``Authorization`` at a destination that asks for none nor at the
recorder; and the row's own ``check`` (bounded resumes, a request that shows the row
tested something, a mount confirmed).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from ocipush.cli import main
from tests.hostileregistry import (
    PASSWORD,
    USER,
    Cut,
    Endless,
    Hang,
    HostileRegistry,
    Recorder,
    Reply,
    Request,
    Rule,
    Trickle,
    basic,
)
from tests.imagegen import ImageInfo, LayerSpec, make_layout

SRC = "hostile/src"
DEST = "copy/app"
FLAGS = ("--src-creds", f"{USER}:{PASSWORD}", "--timeout", "2s", "--retry", "1", "--retry-delay", "10ms",
         "--no-cache")
SECRETS = (PASSWORD, basic().removeprefix("Basic "))
WALL_LIMIT = 15.0
QUICK = ("--timeout", "1s")  # rows that wait for a deadline (twice: --retry 1)
LAYER = 40_000

MANIFEST = r"/manifests/"
BLOB_GET = r"/blobs/sha256:"


class HostileSource(HostileRegistry):
    """The plausible registry of tests/hostileregistry.py, also serving manifests (by tag
    and digest, ``Content-Type`` and ``Docker-Content-Digest`` as distribution does) and
    blob ranges (``206`` with ``Content-Range``)."""

    def _api(self, request: Request, name: str, kind: str, rest: str) -> Reply:
        if kind == "manifests" and request.method in ("GET", "HEAD"):
            data = self.manifests.get((name, rest))
            if data is None:
                return Reply(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            media_type = json.loads(data).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
            return Reply(200, {"Content-Type": media_type, "Docker-Content-Digest": _digest(data)}, data)
        if kind == "blobs" and request.method == "GET" and request.header("range") and rest in self.blobs:
            data = self.blobs[rest]
            start = int(request.header("range").removeprefix("bytes=").split("-")[0])
            return Reply(206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, data[start:])
        return super()._api(request, name, kind, rest)

    def seed(self, image: ImageInfo, tag: str = "v1") -> None:
        for blob in (image.config, *image.layers):
            self.blobs[blob.digest] = blob.path.read_bytes()
        data = image.manifest.path.read_bytes()
        self.manifests[(SRC, tag)] = self.manifests[(SRC, _digest(data))] = data


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Ctx:
    source: HostileSource
    dest: HostileRegistry
    recorder: Recorder
    image: ImageInfo

    @property
    def layer(self) -> str:
        return self.image.layers[0].digest

    @property
    def layer_bytes(self) -> bytes:
        return self.image.layers[0].path.read_bytes()

    @property
    def manifest(self) -> bytes:
        return self.image.manifest.path.read_bytes()


@dataclass(frozen=True)
class Row:
    id: str
    rules: Callable[[Ctx], list[Rule]]
    exit: frozenset[int]
    mention: str | None = None
    source_auth: str | None = "basic"
    recorder: str | Reply | Callable[[ImageInfo], Reply] = "store"
    check: Callable[[Ctx], None] | None = None
    args: tuple[str, ...] = ()
    dest_rules: Callable[[Ctx], list[Rule]] = lambda ctx: []
    dest_auth: str | None = None
    same_registry: bool = False  # the destination is the source's registry (another repository)
    env: Callable[[Recorder], dict[str, str]] = lambda recorder: {}
    flags: tuple[str, ...] = FLAGS


def row(id: str, rules: Callable[[Ctx], list[Rule]], exit: int | set[int], **kw) -> Row:
    return Row(id, rules, frozenset({exit} if isinstance(exit, int) else exit), **kw)


def on(method: str, target: str, then, times: int | None = None) -> Rule:
    return Rule(method, target, then, times)


def _gets(ctx: Ctx, target: str) -> list[Request]:
    return ctx.source.requests("GET", target)


def _bounded_gets(most: int) -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        gets = _gets(ctx, re.escape(ctx.layer))
        assert len(gets) <= most, f"{len(gets)} GETs of the layer: the resumes are not bounded"

    return check


def _mounted_not_copied(ctx: Ctx) -> None:
    assert ctx.source.requests("POST", rf"^/v2/{DEST}/blobs/uploads/\?mount={ctx.layer}"), "no mount asked"
    assert not _gets(ctx, re.escape(ctx.layer)), "a mounted blob was downloaded"
    assert not ctx.source.requests("PATCH"), "a mounted blob was uploaded"


def _uploaded(ctx: Ctx) -> None:
    assert ctx.source.requests("PUT", rf"digest={re.escape(ctx.layer)}"), "the unconfirmed mount was not uploaded"


def _one_mount(ctx: Ctx) -> None:
    # Config and layer: the registry's refusal of the first mount holds for the second.
    mounts = ctx.source.requests("POST", r"[?&]mount=")
    assert len(mounts) == 1, f"{len(mounts)} mounts asked after the registry refused one"


def _recorder_hit(method: str) -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        assert ctx.recorder.requests(method), f"the recorder never got a {method}: the row tested nothing"

    return check


def _partial(ctx: Ctx, request: Request, n: int) -> Reply:
    """The layer from the byte the request asks for, ``n`` bytes of it, then the connection
    closed under a Content-Length that promised the rest."""
    data = ctx.layer_bytes
    given = request.header("range")
    start = int(given.removeprefix("bytes=").split("-")[0]) if given else 0
    headers = {"Content-Length": str(len(data) - start)}
    if given:
        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
    return Reply(206 if given else 200, headers, data[start:start + n], framing="close")


def _index_of(ctx: Ctx, entries: int) -> list[Rule]:
    """The tag names an index that lists the image ``entries`` times."""
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(ctx.manifest),
             "size": len(ctx.manifest), "platform": {"os": "linux", "architecture": "amd64"}}
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry] * entries}
    data = json.dumps(doc, separators=(",", ":")).encode()
    return [on("GET", MANIFEST + "v1$", Reply(200, {"Content-Type": doc["mediaType"]}, data))]


ECHOED = json.dumps({"errors": [{"code": "DENIED", "message": f"you are {PASSWORD}"}]}).encode()

ROWS: list = [
    row("baseline", lambda c: [], 0),
    # -- credentials stay with the source's origin ------------------------------------------------
    row("dest-creds-stay-at-the-destination", lambda c: [], 0, source_auth=None, dest_auth="basic",
        flags=("--creds", f"{USER}:{PASSWORD}", *FLAGS[2:]), check=lambda c: _no_authorization(c.source)),
    row("source-wants-creds-the-destination-has", lambda c: [], 5, dest_auth="basic",
        flags=("--creds", f"{USER}:{PASSWORD}", *FLAGS[2:]), mention="--src-creds",
        check=lambda c: _no_authorization(c.source)),
    row("same-registry-mounts", lambda c: [], 0, source_auth=None, same_registry=True, flags=FLAGS[2:],
        check=lambda c: _mounted_not_copied(c)),
    row("same-registry-mount-that-lies-is-uploaded", lambda c: [], 0, source_auth=None, same_registry=True,
        flags=FLAGS[2:], dest_rules=lambda c: [on("POST", r"[?&]mount=", Reply(201)),
                                               on("HEAD", rf"^/v2/{DEST}/blobs/", Reply(404))],
        check=lambda c: _uploaded(c)),
    row("same-registry-mount-refused-is-not-asked-again", lambda c: [], 0, source_auth=None, same_registry=True,
        flags=FLAGS[2:], args=("--jobs", "1"),
        dest_rules=lambda c: [on("POST", r"[?&]mount=", Reply(202, {"Location": f"/v2/{DEST}/blobs/uploads/no"}))],
        check=lambda c: _one_mount(c)),
    row("source-behind-a-proxy-gets-no-plain-basic", lambda c: [], {3, 5},
        recorder=Reply(401, {"WWW-Authenticate": 'Basic realm="proxy"'}),
        env=lambda r: {"HTTP_PROXY": r.url, "HTTPS_PROXY": r.url, "NO_PROXY": ""}, mention="https://",
        check=_recorder_hit("CONNECT")),
    row("manifest-400-echoes-basic", lambda c: [on("GET", MANIFEST, lambda r: Reply(
        400, {"Content-Type": "text/plain"}, f"bad {r.header('authorization')}".encode(),
        reason=f"Bad {r.header('authorization')}"))], 3),
    row("manifest-digest-echoes-basic", lambda c: [on("GET", MANIFEST, lambda r: Reply(
        200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
              "Docker-Content-Digest": r.header("authorization") or ""}, c.manifest))], 3,
        mention="Docker-Content-Digest"),
    row("blob-416-echoes-basic", lambda c: [on("GET", BLOB_GET, lambda r: Reply(
        416, {"Content-Range": r.header("authorization") or ""}, b"") if c.layer in r.path else None)], 3),
    row("blob-redirect-foreign", lambda c: [on("GET", BLOB_GET, lambda r: Reply(
        307, {"Location": f"{c.recorder.url}/bucket{r.path}?X-Amz-Signature=1"}) if c.layer in r.path else None)],
        0, recorder=lambda image: Reply(200, {}, image.layers[0].path.read_bytes()), check=_recorder_hit("GET")),
    row("blob-redirect-foreign-401", lambda c: [on("GET", BLOB_GET, lambda r: Reply(
        307, {"Location": f"{c.recorder.url}/v2/{SRC}/blobs/x"}))], 5, recorder="challenge",
        check=_recorder_hit("GET"), mention="asked for credentials"),
    row("manifest-redirect-foreign-401", lambda c: [on("GET", MANIFEST, lambda r: Reply(
        307, {"Location": f"{c.recorder.url}{r.path}"}))], 5, recorder="challenge", check=_recorder_hit("GET")),
    row("bearer-realm-plain-http-not-loopback", lambda c: [], {3, 5}, source_auth="bearer-foreign-realm",
        mention=r"(?i)plain http"),
    # -- unbounded answers -------------------------------------------------------------------------
    row("manifest-content-type-index-body-manifest", lambda c: [on("GET", MANIFEST + "v1$", Reply(
        200, {"Content-Type": "application/vnd.oci.image.index.v1+json"}, c.manifest))], 3),
    row("manifest-content-type-schema1", lambda c: [on("GET", MANIFEST + "v1$", Reply(200, {
        "Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
        b'{"schemaVersion": 1, "name": "x", "tag": "v1", "fsLayers": []}'))], 3, mention="media type"),
    row("dest-echoes-the-source-password", lambda c: [], 4, dest_rules=lambda c: [on(
        "POST", r"/blobs/uploads/$", Reply(400, {"Content-Type": "application/json"}, ECHOED))],
        mention="you are <redacted>"),
    row("manifest-endless", lambda c: [on("GET", MANIFEST, Reply(200, {"Content-Type": "application/json"},
                                                                  Endless(b" " * 65536)))], 3,
        mention=r"exceeds 4194304 bytes"),
    row("manifest-trickle", lambda c: [on("GET", MANIFEST, Reply(200, {}, Trickle(every=0.2)))], 3, args=QUICK),
    row("manifest-hang", lambda c: [on("GET", MANIFEST, Hang())], 3, args=QUICK),
    row("blob-endless-chunked", lambda c: [on("GET", BLOB_GET + ".*", lambda r: Reply(
        200, {}, Endless(c.layer_bytes + b"x" * 65536)) if c.layer in r.path else None)], {0, 3}),
    row("blob-trickle", lambda c: [on("GET", BLOB_GET, lambda r: Reply(
        200, {"Content-Length": str(len(c.layer_bytes))}, Trickle(every=0.2)) if c.layer in r.path else None)], 3,
        args=QUICK),
    row("blob-hang", lambda c: [on("GET", BLOB_GET, lambda r: Hang() if c.layer in r.path else None)], 3,
        args=QUICK),
    row("blob-content-length-lies", lambda c: [on("GET", BLOB_GET, lambda r: Reply(
        200, {"Content-Length": str(len(c.layer_bytes) + 1)}, c.layer_bytes + b"!") if c.layer in r.path
        else None)], 3, mention="Content-Length"),
    row("blob-more-bytes-than-the-descriptor", lambda c: [on("GET", BLOB_GET, lambda r: Reply(
        200, {}, c.layer_bytes + b"tail", framing="close") if c.layer in r.path else None)], 0),
    row("blob-always-cut", lambda c: [on("GET", BLOB_GET, lambda r: _partial(c, r, 5000) if c.layer in r.path
                                         else None)], 3, check=_bounded_gets(2)),
    row("blob-cut-at-once", lambda c: [on("GET", BLOB_GET, lambda r: Cut() if c.layer in r.path else None)], 3,
        check=_bounded_gets(2)),
    row("blob-redirect-loop", lambda c: [on("GET", BLOB_GET, lambda r: Reply(302, {"Location": r.target}))], 3,
        check=lambda c: _bounded_gets(2 * 21)(c)),
    row("blob-206-wrong-range", lambda c: [on("GET", BLOB_GET, lambda r: Reply(
        206, {"Content-Range": f"bytes 0-9/{LAYER}"}, c.layer_bytes[:10]) if c.layer in r.path else None)], 3,
        mention="Content-Range"),
    row("blob-corrupt", lambda c: [on("GET", BLOB_GET, lambda r: Reply(
        200, {}, c.layer_bytes[:-1] + bytes([c.layer_bytes[-1] ^ 1])) if c.layer in r.path else None)], 3,
        mention="digest"),
    row("blob-404-after-head", lambda c: [on("GET", BLOB_GET, lambda r: Reply(404) if c.layer in r.path
                                             else None)], 3),
    row("head-content-length-lies", lambda c: [on("HEAD", BLOB_GET, lambda r: Reply(
        200, {"Content-Length": "7"}, framing="none") if c.layer in r.path else None)], 3, mention="7 bytes"),
    # -- manifests that do not verify -----------------------------------------------------------------
    row("manifest-claimed-digest-other", lambda c: [on("GET", MANIFEST, Reply(200, {
        "Content-Type": "application/vnd.oci.image.manifest.v1+json", "Docker-Content-Digest": "sha256:" + "0" * 64},
        c.manifest))], 3, mention="Docker-Content-Digest"),
    row("manifest-claimed-digest-garbage", lambda c: [on("GET", MANIFEST, Reply(200, {
        "Content-Type": "application/vnd.oci.image.manifest.v1+json", "Docker-Content-Digest": "sha256:²"},
        c.manifest))], 3, mention="Docker-Content-Digest"),
    row("manifest-not-json", lambda c: [on("GET", MANIFEST, Reply(200, {"Content-Type": "text/html"},
                                                                   b"<html>hi</html>"))], 3),
    row("index-20000-entries", lambda c: _index_of(c, 20_000), 3, mention="more than 10000 manifests",
        check=lambda c: assert_few_gets(c)),
    row("index-child-bytes-differ", lambda c: [*_index_of(c, 1), on("GET", MANIFEST + "sha256:", Reply(
        200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, c.manifest[:-1] + b" "))], 3,
        mention="digest"),
]


def assert_few_gets(ctx: Ctx) -> None:
    assert len(ctx.source.requests("GET", MANIFEST)) <= 2, "the children of a refused index were fetched"


# -- running a row ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> ImageInfo:
    return make_layout(tmp_path_factory.mktemp("attack-remote"), [LayerSpec(LAYER)], ref="v1")


def _row_of(p) -> Row:
    return p.values[0] if hasattr(p, "values") else p


def test_rows_are_distinct():
    assert len({_row_of(r).id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("case", ROWS, ids=[_row_of(r).id for r in ROWS])
def test_hostile_source_row(case: Row, image, user_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    auth = "bearer" if case.source_auth == "bearer-foreign-realm" else case.source_auth
    with HostileSource(auth=auth) as source, HostileRegistry(auth=case.dest_auth) as dest, Recorder(
            case.recorder(image) if callable(case.recorder) else case.recorder) as recorder:
        if case.source_auth == "bearer-foreign-realm":
            source.realm = "http://tokens.hostile.invalid/token"
        source.seed(image)
        if case.same_registry:
            dest = source
        ctx = Ctx(source, dest, recorder, image)
        source.rules = case.rules(ctx) + (case.dest_rules(ctx) if case.same_registry else [])
        if not case.same_registry:
            dest.rules = case.dest_rules(ctx)
        for name, value in case.env(recorder).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        started = time.monotonic()
        code = main([f"docker://{source.host}/{SRC}:v1", f"{dest.host}/{DEST}:v1", *case.flags, *case.args])
        seconds = time.monotonic() - started
        out, err = capsys.readouterr()
        why = f"exit {code} after {seconds:.1f}s: {err[-2000:]}"
        assert not source.errors + dest.errors + recorder.errors, "the test servers failed"
        assert code in case.exit, why
        assert seconds < WALL_LIMIT, why
        _check_lines(case, code, err)
        _check_secrets(ctx, out + err)
        if code == 0:
            _check_copied(ctx)
        else:
            assert (DEST, "v1") not in dest.manifests, "tagged after a failure"
        if case.check is not None:
            case.check(ctx)


def _check_lines(case: Row, code: int, err: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("ocipush: ")]
    if code == 0:
        assert not lines, err
        return
    assert lines and lines == [err.splitlines()[-1]], err
    assert all(c.isprintable() for c in lines[-1]), repr(lines[-1])
    if case.mention:
        assert re.search(case.mention, lines[-1]), f"the error names no {case.mention}: {lines[-1]}"


def _check_secrets(ctx: Ctx, output: str) -> None:
    for secret in SECRETS:
        assert secret not in output, "a secret in the output"
    _no_authorization(ctx.recorder)
    if ctx.dest.auth is None:
        _no_authorization(ctx.dest)


def _no_authorization(server: HostileRegistry | Recorder) -> None:
    for request in server.requests():
        assert request.header("authorization") is None, f"Authorization sent to {request.method} {request.target}"
        assert not any(s in request.raw_text() for s in SECRETS), f"a secret reached {request.target}"


def _check_copied(ctx: Ctx) -> None:
    for blob in (ctx.image.config, *ctx.image.layers):
        assert ctx.dest.blobs.get(blob.digest) == blob.path.read_bytes(), f"exit 0 but {blob.digest} is not whole"
    assert ctx.dest.manifests.get((DEST, "v1")) == ctx.manifest


def test_manifests_kept_in_memory_are_bounded(image, user_config, monkeypatch):
    """A manifest whose 30 "layers" say they are manifests: each is fetched from the
    manifest endpoint (4 MiB allowed each), and the source kept every one in memory
    (28,000 such layers fit a 4 MiB manifest: 100+ GiB).  Now what it keeps is bounded;
    the rest is fetched again when read."""
    from ocipush import remote
    from ocipush.reference import Reference
    from ocipush.registry.client import ClientOptions
    from ocipush.registry.retry import RetryPolicy
    from ocipush.sources import load_image

    monkeypatch.setattr(remote, "MANIFEST_MEMORY", 1 << 20, raising=False)
    blobs = [json.dumps({"schemaVersion": 2, "pad": f"{i}" + "x" * 200_000}).encode() for i in range(30)]
    config = image.config.path.read_bytes()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": image.config.media_type, "digest": image.config.digest,
                                      "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "digest": _digest(b), "size": len(b)} for b in blobs]}).encode()
    with HostileSource(auth=None) as source:
        source.blobs[image.config.digest] = config
        source.manifests[(SRC, "v1")] = manifest
        for b in blobs:
            source.manifests[(SRC, _digest(b))] = b
        remote_source = remote.RemoteSource(Reference.parse(f"{source.host}/{SRC}:v1"), ClientOptions(),
                                            RetryPolicy(attempts=0), None)
        with remote_source:
            loaded = load_image(remote_source)
            kept = sum(len(data) for data in remote_source._manifests.values())
            assert kept <= 1 << 20, f"{kept} bytes of manifests held"
            last = loaded.parsed.layers[-1]
            with remote_source.open_blob(last) as f:
                assert f.read() == blobs[-1]  # not kept, fetched again


def test_redaction_across_clients_takes_the_longest_secret_first():
    """The destination's password is part of the source's: replaced one set after the
    other, the source's tail would be left in the line."""
    from ocipush.registry.auth import RegistryAuth

    source, dest = RegistryAuth("src.example", lambda r: None), RegistryAuth("dst.example", lambda r: None)
    dest._secrets.add("hunter")
    source._secrets.add("hunter2-long")
    dest.redact_also(source)
    source.redact_also(dest)
    for auth in (source, dest):
        assert auth.redact("you sent hunter2-long and hunter") == "you sent <redacted> and <redacted>"
    source._secrets.add("later-token")  # one the source gets after the two were joined
    assert dest.redact("later-token") == "<redacted>"


@pytest.fixture(scope="module")
def big_image(tmp_path_factory) -> ImageInfo:
    return make_layout(tmp_path_factory.mktemp("attack-remote-big"), [LayerSpec(3_500_000)], ref="v1", seed=7)


@pytest.mark.parametrize("every, code", [(1_200_000, 0), (300_000, 3)], ids=["progress", "little-progress"])
def test_resumes_that_make_progress_are_not_counted(big_image, user_config, tmp_path, monkeypatch, capsys, every,
                                                    code):
    """A proxy that cuts every download after ``every`` bytes, with ``--retry 1``: cuts that
    each come after 1 MiB or more of the blob are a broken network the copy gets through
    (as containers/image's reader does), so a 3.5 MB layer arrives in 3 resumes; cuts closer
    together still spend the retries, so the resumes stay bounded."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    layer = big_image.layers[0]
    data = layer.path.read_bytes()

    def cut(request: Request) -> Reply | None:
        if layer.digest not in request.path:
            return None
        given = request.header("range")
        start = int(given.removeprefix("bytes=").split("-")[0]) if given else 0
        headers = {"Content-Length": str(len(data) - start)}
        if given:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return Reply(206 if given else 200, headers, data[start:start + every], framing="close")

    with HostileSource(auth=None) as source, HostileRegistry(auth=None) as dest:
        source.seed(big_image)
        source.rules = [on("GET", BLOB_GET, cut)]
        result = main([f"docker://{source.host}/{SRC}:v1", f"{dest.host}/{DEST}:v1", *FLAGS[2:]])
        gets = source.requests("GET", re.escape(layer.digest))
        assert result == code, capsys.readouterr().err
        if code == 0:
            assert dest.blobs[layer.digest] == data
            assert len(gets) == -(-len(data) // every)
        else:
            assert len(gets) == 2  # the first GET and the one retry
