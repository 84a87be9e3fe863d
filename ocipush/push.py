"""The one orchestrator: read the source, plan, upload the blobs, push the manifests.

Stages, in order:
1. read      — walk the source from its root, verifying every manifest it reads, and the
               image configs (their diff_ids check recompressed layers);
2. plan      — distinct blobs, what to compress, manifests children-first (``plan``);
3. connect   — find the registry's scheme, meet its auth challenge;
4. blobs     — ``--jobs`` uploads at once, each digest once, compressed on the way where
               the plan says; the first failure stops the rest;
5. manifests — rewritten for new layer digests (``rewrite``), pushed only after every
               blob is confirmed; the root (and its tag) last.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path

import attrs

from . import mediatypes
from .cache import BlobCache, CachedBlob, CacheKey, compressor_of
from .compression import Compression, check_level
from .content import FileContent, Position, UploadJournal, UploadOutcome
from .destinations import Destination, open_destination, prepare_docker_archive
from .destinations.registry import RegistryDestination
from .digest import Digest
from .errors import SourceError, UsageError
from .events import Events, Silent
from .models import MAX_CONFIG_SIZE, Descriptor, Manifest, parse_image_config
from .plan import BlobJob, PushPlan, make_plan
from .reference import DestinationRef, LayoutReference, parse_destination
from .registry.auth import Credentials
from .registry.client import ClientOptions
from .registry.retry import RetryPolicy
from .remote import RemoteSource, open_any_source
from .resume import BlobIdentity, UploadRecords
from .rewrite import Rewritten, rewrite
from .select import select_platforms
from .sources import Source, load_image
from .sources.base import ImageNode, read_verified
from .transcode import TranscodedContent

__all__ = ["BlobResult", "PushOptions", "PushResult", "push"]



@attrs.frozen
class PushOptions:
    chunk_size: int | None = None  # upper bound for request bodies; None: the registry's limit
    jobs: int = 3
    tls_verify: bool | None = None  # None: verify, unless registries.conf marks the registry insecure
    credentials: Credentials | None = None  # None: looked up in the auth files
    anonymous: bool = False  # --dest-no-creds: send the registry no credentials, look none up
    authfile: Path | None = None  # the only auth file to read, when given
    cert_dir: Path | None = None  # CAs and client certificates, instead of certs.d/HOST
    retry: RetryPolicy = RetryPolicy()
    timeout: float = 120.0  # seconds a request may wait on the registry between bytes
    deadline: float = 300.0  # seconds a request without a body may take in all (--timeout)
    compression: Compression = Compression()
    cache: BlobCache | None = None  # None: no blob cache
    manifest_format: str | None = None  # "oci" or "v2s2": convert manifests; None: keep
    dry_run: bool = False  # read, plan and ask the registry (HEAD only); change nothing
    platforms: tuple[str, ...] = ()  # --platform OS/ARCH[/VARIANT]: push only these images (select.py)
    source_client: ClientOptions | None = None  # a docker:// source's TLS and credentials; None: defaults
    resume: UploadRecords | None = None  # the record of open uploads (resume.py); None: none kept


@attrs.frozen
class BlobResult:
    source: Descriptor  # as in the source
    pushed: Descriptor  # as on the registry (differs when compressed on the way)
    action: str  # uploaded, skipped, mounted
    requests: int = 0  # chunks the registry accepted
    retries: int = 0  # requests sent again after a transient failure, plus restarts
    sent: Mapping[str, int] = attrs.field(factory=dict)  # every request sent for the blob, by method
    restarts: int = 0  # new uploads after the first
    refused: int = 0  # requests answered 413
    resumed_at: int | None = None  # bytes an upload an earlier run left held when this one went on with it


@attrs.frozen
class PushResult:
    reference: DestinationRef  # the destination by digest: what was pushed, exactly
    digest: Digest | None  # None only for a dry run whose layers would be compressed
    blobs: tuple[BlobResult, ...]
    seconds: float
    dry_run: bool = False
    notes: tuple[str, ...] = ()  # every note said during the push, in order
    chunk_size_learnt: int | None = None  # what unannounced 413s taught, None without any


class _Cancelled(Exception):
    """Raised inside an upload's byte stream when another upload has failed."""


def push(
    source: Source | str,
    destination: DestinationRef | str,
    options: PushOptions = PushOptions(),
    reporter: Events | None = None,
) -> PushResult:
    """Push ``source`` to ``destination``, telling ``reporter`` (a ``report.Reporter``, or
    any ``events.Events``) what happens; nothing is said without one."""
    started = time.monotonic()
    events = _NoteLog(reporter or Silent())
    if isinstance(destination, str):
        destination = parse_destination(destination)
    if isinstance(source, str):
        source_client = options.source_client or ClientOptions(timeout=options.timeout, deadline=options.deadline)
        # events: a registry source's notes, the progress of a spooled stdin
        with open_any_source(source, source_client, options.retry, events) as opened:
            return _push(opened, destination, options, events, started)
    return _push(source, destination, options, events, started)


class _NoteLog:
    """The reporter, keeping the notes for the result (``--json``)."""

    def __init__(self, inner: Events):
        self.inner = inner
        self.notes: list[str] = []
        self._lock = threading.Lock()

    def note(self, message: str) -> None:
        with self._lock:
            self.notes.append(message)
        self.inner.note(message)

    def note_at_end(self, topic: str, message: str) -> None:
        with self._lock:
            self.notes.append(message)
        self.inner.note_at_end(topic, message)

    def blob_state(self, desc: Descriptor, state: str) -> None:
        self.inner.blob_state(desc, state)

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        self.inner.blob_position(desc, offset)

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None:
        self.inner.blob_finished(desc, action, detail)

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None:
        self.inner.manifest_pushed(desc, reference)


def _share_redaction(source: Source, target: Destination) -> None:
    """Registry to registry: each client's error lines lose the other's secrets too."""
    if isinstance(source, RemoteSource) and isinstance(target, RegistryDestination):
        target.client.auth.redact_also(source.client.auth)
        source.client.auth.redact_also(target.client.auth)


def _push(
    source: Source, destination: DestinationRef, options: PushOptions, reporter: _NoteLog, started: float
) -> PushResult:
    if options.manifest_format == "v2s2" and options.compression.format in ("zstd", "zstd:chunked"):
        raise UsageError(f"--format v2s2 cannot carry {options.compression.format} layers "
                         "(Docker schema 2 has no zstd type)")
    image = load_image(source)  # 1. read
    image = select_platforms(image, options.platforms, lambda d: read_verified(source, d, MAX_CONFIG_SIZE))
    if isinstance(destination, LayoutReference) and destination.transport == "docker-archive":
        compression, said = prepare_docker_archive(image.parsed, options.compression)  # one image; no zstd for docker
        options = attrs.evolve(options, compression=compression)
        for note in said:
            reporter.note(note)
    for note in source.notes:
        reporter.note(note)
    plan = make_plan(image, destination, options.compression, _diff_ids(source, image))  # 2. plan
    if options.manifest_format == "v2s2":
        _refuse_kept_zstd(plan)

    client_options = ClientOptions(
        tls_verify=options.tls_verify,
        credentials=options.credentials,
        anonymous=options.anonymous,
        authfile=options.authfile,
        cert_dir=options.cert_dir,
        timeout=options.timeout,
        deadline=options.deadline,
    )
    with open_destination(
        destination, client_options, options.retry, options.chunk_size, reporter, dry_run=options.dry_run
    ) as target:
        # 3. connected (or the layout directory is ready)
        _share_redaction(source, target)
        if options.dry_run:
            planned = _dry_run(plan, destination, target, options, started, reporter.note)
            return attrs.evolve(planned, notes=tuple(reporter.notes))
        blobs = _Blobs(source, plan, target, options, reporter).run()  # 4. blobs
        learnt = target.chunk_size_learnt
        if learnt is not None:  # once, now that no upload can learn more
            reporter.note_at_end("chunk-size", f"{target.location}: the registry refused larger request bodies (413) "
                                 f"without announcing a limit; chunks of {learnt} bytes passed: give --chunk-size "
                                 f"{learnt} to skip the refusals")
        new = {b.source.digest: b.pushed for b in blobs if b.pushed.digest != b.source.digest}
        # An OCI layout holds OCI manifests (skopeo reads no other kind there, and writes
        # none): Docker ones are converted unless the user asked for v2s2.
        fmt = options.manifest_format or ("oci" if isinstance(destination, LayoutReference) else None)
        manifests = rewrite(image, new, fmt)  # 5. manifests
        blobs = _as_named(blobs, manifests)
        root = manifests[-1].descriptor
        if destination.digest is not None and destination.digest != root.digest:
            raise UsageError(
                f"destination {destination} names a digest, but the pushed manifest would be {root.digest}"
            )
        for m in manifests:
            ref = str(m.descriptor.digest)
            if m is manifests[-1] and destination.tag:
                ref = destination.tag
            target.put_manifest(ref, m.data, m.descriptor.media_type, m.descriptor.digest)
            reporter.manifest_pushed(m.descriptor, ref)
        target.commit(root.media_type, root.digest, root.size)

    seconds = time.monotonic() - started
    return PushResult(destination.with_digest(root.digest), root.digest, blobs, seconds, notes=tuple(reporter.notes),
                      chunk_size_learnt=learnt)


def _refuse_kept_zstd(plan: PushPlan) -> None:
    """``--format v2s2`` with a zstd (or zstd:chunked) source layer kept as it is: refused
    before any blob is uploaded, and by ``--dry-run`` too (which never reaches stage 5,
    where ``rewrite`` refuses the manifest only after every blob was sent)."""
    kept = {job.source.digest for job in plan.jobs if not job.transforms}
    for node in plan.image.walk():
        if not isinstance(node.parsed, Manifest):
            continue
        for layer in node.parsed.layers:
            if layer.media_type == mediatypes.OCI_LAYER_ZSTD and layer.digest in kept:
                raise UsageError(f"manifest {node.descriptor.digest}: layer {layer.digest} is zstd, which a Docker "
                                 "schema 2 manifest cannot carry (--format v2s2); add --compression-format gzip")


def _dry_run(
    plan: PushPlan,
    destination: DestinationRef,
    target: Destination,
    options: PushOptions,
    started: float,
    note: Callable[[str], None],
) -> PushResult:
    """What stage 4 would do, found with HEAD requests alone."""
    blobs = []
    for job in plan.jobs:
        desc, action = job.source, "would upload"
        if job.target is not None:  # job.transforms
            level = check_level(job.target, options.compression.level)
            key = _cache_key(options.cache, job, level)
            cached = options.cache.lookup(key, note) if key and options.cache else None
            found = cached is not None and target.exists(cached.digest, cached.size)
            action = "would skip" if found else f"would compress to {job.target} and upload"
        elif target.exists(desc.digest, desc.size):
            action = "would skip"
        recorded = _recorded(options.resume, target, job, options, note) if action != "would skip" else None
        if recorded is not None:
            action += f" (resuming an earlier run's upload, recorded at {recorded} bytes)"
        blobs.append(BlobResult(desc, desc, action, resumed_at=recorded))
    changes = options.manifest_format or any(j.transforms for j in plan.jobs)
    digest = None if changes else plan.image.descriptor.digest  # unknown until rewritten
    reference = destination.with_digest(digest) if digest else destination
    return PushResult(reference, digest, tuple(blobs), time.monotonic() - started, dry_run=True)


def _diff_ids(source: Source, image: ImageNode) -> dict[Digest, list[Digest]]:
    """Each image config's rootfs.diff_ids: what every layer must decompress to."""
    found: dict[Digest, list[Digest]] = {}
    for node in image.walk():
        if not isinstance(node.parsed, Manifest) or node.parsed.config.media_type not in mediatypes.IMAGE_CONFIG_TYPES:
            continue
        config = node.parsed.config
        if config.digest in found:
            continue
        data = read_verified(source, config, MAX_CONFIG_SIZE)
        try:
            found[config.digest] = list(parse_image_config(data, source.describe_blob(config)).diff_ids)
        except ValueError as e:
            raise SourceError(str(e)) from None
    return found


class _Blobs:
    """Stage 4: every job of the plan, ``--jobs`` at a time; the first failure stops all."""

    def __init__(self, source: Source, plan: PushPlan, target: Destination, options: PushOptions, reporter: Events):
        self.source = source
        self.plan = plan
        self.target = target
        self.options = options
        self.reporter = reporter
        self.stop = threading.Event()
        self.mount_refused = False  # the registry declined a same-registry mount: not asked again

    def run(self) -> tuple[BlobResult, ...]:
        pool = ThreadPoolExecutor(max_workers=max(1, self.options.jobs), thread_name_prefix="upload")
        futures = [pool.submit(self._one, job) for job in self.plan.jobs]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.done() and f.exception() for f in futures):
                self._stop(futures)
            pool.shutdown(wait=True)  # the others cancel their uploads as they stop
        except BaseException:
            # A signal (SIGINT, SIGTERM): the destination stops the requests (those in flight
            # may end first: their bodies must not stop short, hence abort before _stop),
            # then cancels the open uploads from here, without waiting for threads that may
            # be stuck on a registry that does not answer.
            self.target.abort()
            self._stop(futures)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        errors = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]
        if errors:
            # The first real error, not a _Cancelled raised in a sibling because of it.
            raise next((e for e in errors if not isinstance(e, _Cancelled)), errors[0])
        return tuple(f.result() for f in futures)

    def _stop(self, futures: list[Future[BlobResult]]) -> None:
        self.stop.set()
        for f in futures:
            f.cancel()

    def _one(self, job: BlobJob) -> BlobResult:
        desc = job.source
        self.reporter.blob_state(desc, "checking")
        result = self._transform(job) if job.transforms else self._as_is(job)
        detail = f"in {result.requests} requests" if result.action == "uploaded" and result.requests > 1 else ""
        if job.transforms:
            detail = f"as {job.target} {result.pushed.digest.short} {detail}".rstrip()
        if result.resumed_at is not None:
            detail = f"{detail} resumed at {result.resumed_at} bytes".strip()
        if result.retries:
            detail += f" ({result.retries} retried)"
        self.reporter.blob_finished(desc, result.action, detail.strip())
        return result

    def _position(self, desc: Descriptor, state: str) -> Position:
        started = False

        def on_position(offset: int) -> None:
            nonlocal started
            if self.stop.is_set():
                raise _Cancelled()
            if not started:
                started = True
                self.reporter.blob_state(desc, state)
            self.reporter.blob_position(desc, offset)

        return on_position

    def _as_is(self, job: BlobJob) -> BlobResult:
        desc = job.source
        if self._mounted(desc):
            return BlobResult(desc, desc, "mounted")
        what = self.source.describe_blob(desc)
        content = FileContent(lambda: self.source.open_blob(desc), desc.digest, desc.size, what)
        content.on_position = self._position(desc, "uploading")
        outcome = self.target.upload(content, self._journal(job))
        return _result(desc, desc, outcome)

    def _mounted(self, desc: Descriptor) -> bool:
        """A docker:// source on the destination's registry: the blob is linked across
        repositories (the registry's mount, confirmed by a HEAD) instead of copied.
        A refusal (or a mount the registry does not confirm) holds for the rest of the push:
        the next blobs are uploaded without asking again (one POST and one DELETE each)."""
        source = self.source
        if not isinstance(source, RemoteSource) or source.location == self.target.location or self.mount_refused:
            return False
        if self.target.mount(desc.digest, source.location) and self.target.exists(desc.digest, desc.size):
            return True
        self.mount_refused = True
        return False

    def _journal(self, job: BlobJob) -> UploadJournal | None:
        """The record of this blob's upload to the destination, when resuming is on."""
        records = self.options.resume
        if records is None or not _resumable(self.target):
            return None
        level = check_level(job.target, self.options.compression.level) if job.target else None
        return records.journal(self.target.location, _identity(job, level), self.reporter.note)

    def _transform(self, job: BlobJob) -> BlobResult:
        desc, target = job.source, job.target
        assert target is not None
        level = check_level(target, self.options.compression.level)
        new_type = mediatypes.layer_type(target)
        key = _cache_key(self.options.cache, job, level)
        reused = self._reuse(key) if key else None
        if reused:
            action, cached = reused
            pushed = attrs.evolve(desc, media_type=new_type, digest=cached.digest, size=cached.size,
                                  annotations=_layer_annotations(desc, cached.annotations))
            return BlobResult(desc, pushed, action)
        content = TranscodedContent(
            lambda: self.source.open_blob(desc), desc.digest, desc.size, self.source.describe_blob(desc),
            diff_id=job.diff_id, target=target, level=level,
        )
        # Compressing until the first chunk is made; uploading once its first bytes go out.
        self.reporter.blob_state(desc, "compressing")
        content.on_position = self._position(desc, "uploading")
        outcome = self.target.upload(content, self._journal(job))
        assert content.size is not None
        if content.fallback:
            self.reporter.note(f"{content.what}: written as plain zstd, not zstd:chunked: {content.fallback}")
        if key and self.options.cache:
            self.options.cache.store(key, outcome.digest, content.size, self.target.location, self.reporter.note,
                                     annotations=content.annotations)
        pushed = attrs.evolve(desc, media_type=new_type, digest=outcome.digest, size=content.size,
                              annotations=_layer_annotations(desc, content.annotations))
        return _result(desc, pushed, outcome)

    def _reuse(self, key: CacheKey) -> tuple[str, CachedBlob] | None:
        """What the cache remembers for ``key``, once the registry confirmed it: "skipped"
        when its HEAD shows the digest at the recorded size, "mounted" when a mount from a
        remembered repository is confirmed by a HEAD afterwards.  None: compress it."""
        cache, note = self.options.cache, self.reporter.note
        assert cache is not None
        cached = cache.lookup(key, note)
        if cached is None:
            return None
        if self.target.exists(cached.digest, cached.size):
            return "skipped", cached
        for location in cached.locations:
            if not self.target.mount(cached.digest, location):
                continue
            if self.target.exists(cached.digest, cached.size):
                cache.store(key, cached.digest, cached.size, self.target.location, note)
                return "mounted", cached
            # serverless-registry describes a mounted blob by its link file (85 bytes, a
            # digest of the link's path). An upload gives the repository a copy of its own,
            # which the next push's HEAD confirms: no mount from there again, no loop.
            note(f"blob {cached.digest.short}: the registry does not confirm the blob mounted from "
                 f"{location} (its HEAD contradicts the cache's size or digest); uploading it")
            cache.forget(key, location, note)
            return None
        return None


def _as_named(blobs: tuple[BlobResult, ...], manifests: list[Rewritten]) -> tuple[BlobResult, ...]:
    """Each blob's ``pushed`` media type as the pushed manifests name it: ``--format``
    renames configs and layers, and a schema 2 manifest names a recompressed layer with
    its Docker type (``--json``'s ``pushed_media_type``)."""
    named: dict[Digest, str] = {}
    for m in manifests:
        if mediatypes.is_manifest(m.descriptor.media_type):
            doc = json.loads(m.data)
            for entry in [doc.get("config") or {}, *(doc.get("layers") or [])]:
                if isinstance(entry, dict) and isinstance(entry.get("mediaType"), str) and entry.get("digest"):
                    named.setdefault(Digest.parse(entry["digest"]), entry["mediaType"])
    return tuple(
        attrs.evolve(b, pushed=attrs.evolve(b.pushed, media_type=named[b.pushed.digest]))
        if named.get(b.pushed.digest, b.pushed.media_type) != b.pushed.media_type else b
        for b in blobs
    )


def _layer_annotations(source: Descriptor, chunked: Mapping[str, str]) -> dict[str, str] | None:
    """The pushed layer's annotations: the source's, less any zstd:chunked ones (they
    describe the source blob), plus the new blob's zstd:chunked ones."""
    kept = {k: v for k, v in (source.annotations or {}).items() if k not in mediatypes.ZSTD_CHUNKED_KEYS}
    kept.update(chunked)
    return kept or None


def _result(source: Descriptor, pushed: Descriptor, outcome: UploadOutcome) -> BlobResult:
    return BlobResult(source, pushed, outcome.action, outcome.requests, outcome.retries, outcome.sent,
                      outcome.restarts, outcome.refused, outcome.resumed_at)


def _resumable(target: Destination) -> bool:
    """Only a registry has uploads to resume (a layout's location is ``oci:PATH``)."""
    return not target.location.startswith(("oci:", "oci-archive:"))


def _identity(job: BlobJob, level: int | None) -> BlobIdentity:
    """What the upload of ``job`` is: the source as it is, or its recompression (whose
    bytes depend on the format, level, diff_id and compressor version)."""
    if job.target is None:
        return BlobIdentity(job.source.digest)
    return BlobIdentity(job.source.digest, job.target, level, job.diff_id, compressor_of(job.target))


def _recorded(records: UploadRecords | None, target: Destination, job: BlobJob, options: PushOptions,
              note: Callable[[str], None]) -> int | None:
    """``--dry-run``: the offset recorded for the blob's upload an earlier run left, if any."""
    if records is None or not _resumable(target):
        return None
    level = check_level(job.target, options.compression.level) if job.target else None
    point = records.lookup(target.location, _identity(job, level), note)
    return point.offset if point is not None else None


def _cache_key(cache: BlobCache | None, job: BlobJob, level: int) -> CacheKey | None:
    """The job's cache key; None without a cache, or without a diff_id (a config that names
    none): an entry is only trusted for the uncompressed content it was verified against."""
    if cache is None or job.diff_id is None or job.target is None:
        return None
    return CacheKey(job.source.digest, job.target, level, job.diff_id)
