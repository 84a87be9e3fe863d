"""``docker://HOST/REPO[:TAG|@DIGEST]`` as a source: an image read from a registry.

A module above both ``sources`` (what a source is) and ``registry`` (how to speak HTTP),
which never import each other: this adapter makes a repository on a registry look like
any other ``sources.Source``, so the walk, the verification, the plan, recompression and
the upload stay the same.

- The source has its own ``RegistryClient``: its own TLS choice, credentials
  (``--src-creds``, ``--src-authfile``, the same auth files and helpers as a destination)
  and token scopes (``pull`` only), bound to the source's origin: nothing of the
  destination's goes to the source, and nothing of the source's to the destination.
- Manifests come whole (bounded at 4 MiB) and are kept in memory by digest, up to
  ``MANIFEST_MEMORY`` in all (past it, fetched again when read); the root by
  tag or digest, verified against the digest asked for, or against the one the registry
  claims (``Docker-Content-Digest``), else taken as the sha256 of the bytes served.
- Blobs are streams (``registry.pull.BlobReader``): nothing is written to disk, and a
  broken download resumes with a ``Range`` request.  Each blob is looked at once with a
  ``HEAD`` (``load_image`` checks every blob is there before any upload); ``FileContent``
  hashes the bytes on their way to the destination.  ``load_image`` asks one blob after
  the other, which for an index of a hundred platforms is hundreds of round trips in a
  row: so the HEADs of a manifest's blobs are sent as soon as the manifest is read (and
  matches its digest), ``HEAD_JOBS`` at a time, and each answer waits for its question.
  A failed HEAD is said when, and only if, its blob is asked for: the same line as
  without the look-ahead, for the first blob that fails in ``load_image``'s order.  Image configs are the exception to
  "never held": a push reads each twice (its ``diff_ids`` and platform before the plan,
  then to upload it), so one read whole from its first byte to its last is kept, once its
  digest is checked, and served from memory after — up to ``BLOB_MEMORY`` in all, past
  which they are fetched again.
- Errors say which side failed: ``source registry HOST: …``, exit 3 (bad source) for what
  the registry answered or failed to, exit 5 when it refused the credentials.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import BinaryIO, cast

from .digest import Digest
from .errors import AuthenticationError, OcipushError, RegistryError, SourceError, SourceUnavailable
from .events import Notes
from .mediatypes import DOCKER_CONFIG, OCI_CONFIG, is_foreign_layer, is_index, is_manifest
from .models import MAX_CONFIG_SIZE, Descriptor, Manifest, parse_manifest
from .reference import Reference, SourceSpec, parse_source
from .registry.client import ClientOptions, RegistryClient
from .registry.pull import BlobReader, Puller
from .registry.retry import RetryPolicy, is_transient
from .sources import Source, open_source

__all__ = ["BLOB_MEMORY", "HEAD_JOBS", "MANIFEST_MEMORY", "RemoteSource", "open_any_source", "source_error"]

# The manifests a source keeps once fetched (read again by the walk, the plan and the
# upload), in bytes: past it, one is fetched again when read.  A "layer" whose media type
# says manifest is read from the manifest endpoint too, so a 4 MiB manifest could name
# 28,000 of them at 4 MiB each.
MANIFEST_MEMORY = 64 * 1024 * 1024
# The image configs a source keeps once read (each at most models.MAX_CONFIG_SIZE), in
# bytes, those being read included: real configs are a few KB, so this holds thousands.
BLOB_MEMORY = 16 * 1024 * 1024
_KEPT_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})  # the blobs read before the upload
# HEADs of blobs in flight at once, ahead of load_image's questions: a few connections of
# the client's pool (32), as a browser would open; the registry sees a short burst.
HEAD_JOBS = 8


def open_any_source(
    spec: str | SourceSpec, options: ClientOptions, retry: RetryPolicy, events: Notes | None = None
) -> Source:
    """Any source the command line names: ``docker://`` here, the others by ``sources``."""
    if isinstance(spec, str):
        spec = parse_source(spec)
    if spec.transport == "docker":
        assert spec.reference is not None
        return RemoteSource(spec.reference, options, retry, events, name=str(spec))
    return open_source(spec, events)


def source_error(host: str, error: RegistryError) -> OcipushError:
    """A failure of the source registry, said so: exit 5 when it refused the credentials,
    else 3 (the image could not be read)."""
    text = str(error)
    message = f"source registry {text}" if text.startswith(f"{host}:") else f"source registry {host}: {text}"
    if isinstance(error, AuthenticationError):
        return AuthenticationError(message, status=error.status)
    return SourceUnavailable(message) if is_transient(error) else SourceError(message)


class RemoteSource(Source):
    """A repository of a registry as a source; connected when made, closed by ``close``."""

    def __init__(
        self,
        reference: Reference,
        options: ClientOptions,
        retry: RetryPolicy,
        events: Notes | None = None,
        *,
        name: str = "",
    ):
        self.reference = reference
        self.name = name or f"docker://{reference}"
        self.notes: list[str] = []
        self.host = reference.api_host
        self.client = RegistryClient(self.host, options, loopback=reference.is_loopback, retry=retry,
                                     actions="pull", creds_flag="--src-creds")
        if events is not None:
            say = events.note
            self.client.on_retry = lambda error: say(self.client.auth.redact(f"retrying source: {error}"))
        self.puller = Puller(self.client, reference.repository)
        self._manifests: dict[Digest, bytes] = {}  # at most MANIFEST_MEMORY bytes of them
        self._kept = 0  # their bytes
        self._sizes: dict[Digest, int] = {}  # blobs a HEAD found, and their size
        self._blobs: dict[Digest, bytes] = {}  # configs read whole, verified
        self._blob_bytes = 0  # theirs, and those of configs being read (at most BLOB_MEMORY)
        self._heads: dict[Digest, Future[int | None]] = {}  # HEADs sent ahead, not yet asked for
        self._looked: set[Digest] = set()  # manifests whose blobs were sent for
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        try:
            with self._errors():
                self.client.connect()
        except BaseException:
            self.client.close()
            raise

    @property
    def location(self) -> str:
        """``registry/repository``: where a destination on the same registry mounts from."""
        return self.reference.name

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except RegistryError as e:
            raise source_error(self.host, e) from None

    def root(self) -> Descriptor:
        ref = self.reference
        with self._errors():
            pulled = self.puller.manifest(str(ref.digest) if ref.digest else str(ref.tag))
        data = pulled.data
        expected = ref.digest or pulled.claimed
        if expected is not None:
            got = Digest.of(data, expected.algorithm)
            if got != expected:
                whose = "asked for" if ref.digest else "the registry claimed (Docker-Content-Digest)"
                raise SourceError(f"{self.name}: source registry {self.host} served a manifest of digest {got}, "
                                  f"not {expected} {whose}")
        digest = expected or Digest.of(data)
        self._keep(digest, data)
        return Descriptor(pulled.media_type, digest, len(data))

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        if is_manifest(desc.media_type) or is_index(desc.media_type):
            data = self._manifest(desc)
            if is_manifest(desc.media_type):
                self._look_ahead(desc, data)
            return io.BytesIO(data)  # verified by the reader (read_verified)
        with self._lock:
            kept = self._blobs.get(desc.digest)
        if kept is not None and len(kept) == desc.size:
            return io.BytesIO(kept)
        self._check_present(desc)
        keep = desc.media_type in _KEPT_TYPES and desc.size <= MAX_CONFIG_SIZE and self._reserve(desc.size)
        return cast(BinaryIO, _Blob(self, desc, keep))

    def _reserve(self, size: int) -> bool:
        """Room for a config being read, so that reads in parallel stay within BLOB_MEMORY too."""
        with self._lock:
            if self._blob_bytes + size > BLOB_MEMORY:
                return False
            self._blob_bytes += size
            return True

    def _release(self, size: int) -> None:
        with self._lock:
            self._blob_bytes -= size

    def _keep_blob(self, desc: Descriptor, data: bytes) -> None:
        """A config read whole: kept if it is what its digest says (else the reader, which
        hashes it too, says it is not), in the room reserved for it."""
        verified = Digest.of(data, desc.digest.algorithm) == desc.digest
        with self._lock:
            if verified and desc.digest not in self._blobs:
                self._blobs[desc.digest] = data
            else:
                self._blob_bytes -= len(data)

    def _manifest(self, desc: Descriptor) -> bytes:
        with self._lock:
            known = self._manifests.get(desc.digest)
        if known is not None:
            return known
        with self._errors():
            data = self.puller.manifest(str(desc.digest)).data
        self._keep(desc.digest, data)
        return data

    def _keep(self, digest: Digest, data: bytes) -> None:
        with self._lock:
            if digest not in self._manifests and self._kept + len(data) <= MANIFEST_MEMORY:
                self._manifests[digest] = data
                self._kept += len(data)

    def _look_ahead(self, desc: Descriptor, data: bytes) -> None:
        """Send the HEADs of the manifest's blobs (foreign layers aside, as ``load_image``
        does), unless it is not the manifest asked for: the reader will say so."""
        with self._lock:
            if desc.digest in self._looked:
                return
            self._looked.add(desc.digest)
        if Digest.of(data, desc.digest.algorithm) != desc.digest:
            return
        try:
            parsed = parse_manifest(data, desc.media_type)
        except ValueError:
            return  # said by the reader
        if not isinstance(parsed, Manifest):
            return
        with self._lock:
            for blob in parsed.blobs:
                d = blob.digest
                if is_foreign_layer(blob.media_type) or d in self._sizes or d in self._heads or d in self._blobs:
                    continue
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(HEAD_JOBS, thread_name_prefix="ocipush-source-head")
                self._heads[d] = self._pool.submit(self.puller.blob_size, d)

    def _check_present(self, desc: Descriptor) -> None:
        """The blob is there, of the descriptor's size: one HEAD per blob and run."""
        with self._lock:
            size = self._sizes.get(desc.digest)
            ahead = self._heads.pop(desc.digest, None)
        if size is None:
            with self._errors():
                found = self._head(desc.digest, ahead)
            if found is None:
                raise SourceError(f"{self.describe_blob(desc)}: missing (the source registry answered 404)")
            size = found
            with self._lock:
                self._sizes[desc.digest] = size
        if size != desc.size:
            raise SourceError(f"{self.describe_blob(desc)}: the source registry has {size} bytes, "
                              f"the descriptor says {desc.size}")

    def _head(self, digest: Digest, ahead: Future[int | None] | None) -> int | None:
        """The answer to the HEAD sent ahead, else (none sent, or cancelled by ``close``)
        to one sent now."""
        if ahead is not None:
            with contextlib.suppress(CancelledError):
                return ahead.result()
        return self.puller.blob_size(digest)

    def describe_blob(self, desc: Descriptor) -> str:
        return f"source registry {self.host}: {self.reference.repository}@{desc.digest}"

    def close(self) -> None:
        """Cut the downloads still open (an interrupted push leaves upload threads reading
        them), then close the connections."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)  # HEADs in flight end with the interrupt
        self.client.interrupt(grace=0)
        self.client.close()


class _Blob(BlobReader):
    """A blob of the source, its registry's errors said as the source's.  With ``keep`` (a
    config, room reserved for it), a copy of what is read in order from byte 0: handed to
    the source when whole; dropped, and its room with it, at a gap or on close."""

    def __init__(self, source: RemoteSource, desc: Descriptor, keep: bool = False):
        super().__init__(source.client, source.puller.blob_url(desc.digest), desc.size)
        self._source = source
        self._desc = desc
        self._copy: bytearray | None = bytearray() if keep else None

    def read(self, n: int | None = -1) -> bytes:
        at = self.tell()
        try:
            data = super().read(n)
        except RegistryError as e:
            raise source_error(self._source.host, e) from None
        if self._copy is not None:
            self._capture(at, data)
        return data

    def _capture(self, at: int, data: bytes) -> None:
        copy = self._copy
        assert copy is not None
        if at > len(copy):  # a seek past what was read: the copy would have a hole
            self._drop_copy()
            return
        copy += data[len(copy) - at :]
        if len(copy) == self.size:
            self._copy = None
            self._source._keep_blob(self._desc, bytes(copy))

    def _drop_copy(self) -> None:
        if self._copy is not None:
            self._copy = None
            self._source._release(self.size)

    def close(self) -> None:
        self._drop_copy()
        super().close()

