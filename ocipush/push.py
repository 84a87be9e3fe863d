"""The one orchestrator: read the source, plan, upload the blobs, push the manifests.

Stages, in order:
1. read     — walk the source from its root, verifying every manifest it reads;
2. plan     — distinct blobs, manifests children-first, the tag last (``plan.make_plan``);
3. connect  — find the registry's scheme, meet its auth challenge;
4. blobs    — ``--jobs`` uploads at once, each digest once; the first failure stops the rest;
5. manifests — only after every blob is confirmed; the root (and its tag) last.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import attrs

from .content import FileContent
from .digest import Digest
from .errors import UploadError
from .models import Descriptor
from .plan import ManifestPush, PushPlan, make_plan
from .reference import Reference
from .registry.auth import Credentials
from .registry.client import ClientOptions, RegistryClient, redact
from .registry.retry import RetryPolicy
from .registry.upload import BlobUploader, HostLimits, UploadOutcome
from .report import Reporter
from .sources import Source, load_image, open_source

__all__ = ["BlobResult", "PushOptions", "PushResult", "push"]


@attrs.frozen
class PushOptions:
    chunk_size: int | None = None  # upper bound for request bodies; None: the registry's limit
    jobs: int = 3
    tls_verify: bool = True
    credentials: Credentials | None = None
    retry: RetryPolicy = RetryPolicy()


@attrs.frozen
class BlobResult:
    descriptor: Descriptor
    outcome: UploadOutcome


@attrs.frozen
class PushResult:
    reference: Reference  # the destination by digest: what was pushed, exactly
    digest: Digest
    blobs: tuple[BlobResult, ...]
    seconds: float


class _Cancelled(Exception):
    """Raised inside an upload's byte stream when another upload has failed."""


def push(
    source: Source | str,
    destination: Reference | str,
    options: PushOptions = PushOptions(),
    reporter: Reporter | None = None,
) -> PushResult:
    started = time.monotonic()
    reporter = reporter or Reporter()
    if isinstance(source, str):
        source = open_source(source)
    if isinstance(destination, str):
        destination = Reference.parse(destination)

    image = load_image(source)  # 1. read
    plan = make_plan(image, destination)  # 2. plan

    client_options = ClientOptions(tls_verify=options.tls_verify, credentials=options.credentials)
    with RegistryClient(
        destination.api_host, client_options, loopback=destination.is_loopback, retry=options.retry
    ) as client:
        client.connect()  # 3. connect
        client.on_retry = lambda error: reporter.note(f"retrying: {error}")
        uploader = BlobUploader(client, destination.repository, HostLimits(options.chunk_size))
        uploader.on_note = reporter.note
        blobs = _upload_blobs(source, plan, uploader, options.jobs, reporter)  # 4. blobs
        for step in plan.manifests:  # 5. manifests
            _push_manifest(client, destination.repository, step)
            reporter.manifest_pushed(step.node.descriptor, step.reference)

    digest = plan.root.digest
    return PushResult(destination.with_digest(digest), digest, blobs, time.monotonic() - started)


def _upload_blobs(
    source: Source, plan: PushPlan, uploader: BlobUploader, jobs: int, reporter: Reporter
) -> tuple[BlobResult, ...]:
    stop = threading.Event()

    def upload(desc: Descriptor) -> BlobResult:
        def on_position(offset: int) -> None:
            if stop.is_set():
                raise _Cancelled()
            reporter.blob_position(desc, offset)

        reporter.blob_started(desc)
        content = FileContent(lambda: source.open_blob(desc), desc.digest, desc.size, source.describe_blob(desc))
        content.on_position = on_position
        outcome = uploader.upload(content)
        detail = ""
        if outcome.action == "uploaded" and outcome.requests > 1:
            detail = f"in {outcome.requests} requests"
        if outcome.retries:
            detail += f" ({outcome.retries} retried)"
        reporter.blob_finished(desc, outcome.action, detail.strip())
        return BlobResult(desc, outcome)

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="upload") as pool:
        futures = [pool.submit(upload, desc) for desc in plan.blobs]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C: let running uploads cancel themselves
            stop.set()
            for f in futures:
                f.cancel()
            raise
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception()]
        if failed:
            stop.set()
            for f in futures:
                f.cancel()
            wait(futures)
            # The first real error, not a _Cancelled raised in a sibling because of it.
            errors = [f.exception() for f in futures if f.done() and not f.cancelled() and f.exception()]
            raise next((e for e in errors if not isinstance(e, _Cancelled)), errors[0])
    return tuple(f.result() for f in futures)


def _push_manifest(client: RegistryClient, repository: str, step: ManifestPush) -> None:
    desc = step.node.descriptor
    url = client.url(f"/v2/{repository}/manifests/{step.reference}")
    response = client.idempotent(
        "PUT", url, expect=(201, 200, 202), content=step.node.data, headers={"Content-Type": desc.media_type}
    )
    got = response.headers.get("Docker-Content-Digest")
    if got and got != str(desc.digest):
        raise UploadError(f"PUT {redact(url)}: registry computed {got} for manifest {desc.digest}")
