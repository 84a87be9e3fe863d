"""Reading from a registry: manifests by tag or digest, blobs as resumable streams.

The other direction of ``upload.py``, for ``docker://`` sources.  Everything a source
registry sends is untrusted, as for a destination:

- a manifest is read up to ``headers.BODY_LIMITS["manifest"]`` (4 MiB, distribution's own
  limit) under the request's deadline; its ``Content-Type`` must be a manifest or index type
  (parameters dropped), else its ``mediaType`` field decides; the caller verifies its digest;
- a blob is a ``BlobReader``: a file-like object over ``GET /v2/<repo>/blobs/<digest>``
  (redirects to blob storage followed; credentials stay with the registry's origin, by the
  auth flow and ``transport.guard_origin``), read block by block, never buffered whole.
  It reads exactly the descriptor's size and no more; each read is bounded by the deadline
  of the GET that opened it (``ClientOptions.deadline_for`` the bytes it has left) and by a
  byte budget of that size.  ``seek`` to another offset, or a connection that breaks midway,
  opens a new GET with ``Range: bytes=N-``; the ``206`` must say ``Content-Range: bytes
  N-END/TOTAL`` for exactly the bytes asked.  A ``200`` to a range request means the
  registry serves no ranges: the first N bytes are read and dropped.  A broken read is
  retried ``RetryPolicy.attempts`` times in a row (a break after ``MIN_PROGRESS`` bytes of
  progress since the last one starts the count again), and every retry is told to
  ``client.on_retry``; past them, the last error is raised.

Verification (size, digest) is the caller's: ``content.FileContent`` hashes the bytes as
they pass.  Errors are ``RegistryError``s naming the request; the ``remote`` module says
they came from the source.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator

import attrs
import httpx

from ..digest import Digest
from ..errors import RegistryError
from ..mediatypes import INDEX_TYPES, MANIFEST_TYPES
from .client import RegistryClient, redact
from .connect import failure_reason
from .headers import BODY_LIMITS, content_digest, strict_int, what_of
from .retry import is_transient
from .transport import READ_BUDGET, RequestScope, within

__all__ = ["MANIFEST_ACCEPT", "MIN_PROGRESS", "BlobReader", "PulledManifest", "Puller"]

# Every manifest and index type we read, the one we prefer (OCI) first.
MANIFEST_ACCEPT = ", ".join(sorted(MANIFEST_TYPES | INDEX_TYPES, key=lambda t: ("oci" not in t, t)))
# A download that breaks after this much progress since the last break gets its retries
# back (containers/image's reader does the same): a long blob over a link that drops every
# few minutes gets through; a server that cuts sooner than this spends them, so the number
# of GETs stays below attempts × (size / MIN_PROGRESS + 1).
MIN_PROGRESS = 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,18})-([0-9]{1,18})/([0-9]{1,18}|\*)")


@attrs.frozen
class PulledManifest:
    """A manifest as the registry served it: its exact bytes, its media type, and the
    digest the registry claimed (``Docker-Content-Digest``; None when it sent none)."""

    data: bytes
    media_type: str
    claimed: Digest | None


class Puller:
    """Reads one repository of a registry through a connected client; thread-safe."""

    def __init__(self, client: RegistryClient, repository: str):
        self.client = client
        self.repository = repository

    def manifest(self, reference: str) -> PulledManifest:
        """``GET /v2/<repo>/manifests/<tag or digest>``: RegistryError (status 404 when
        the registry has no such manifest) or the manifest, unverified."""
        url = self.client.url(f"/v2/{self.repository}/manifests/{reference}")
        limit = BODY_LIMITS["manifest"]
        response, body = self.client.retry.run(
            lambda: self.client.fetch("GET", url, expect=(200,), limit=limit, follow_redirects=True,
                                      headers={"Accept": MANIFEST_ACCEPT}),
            on_retry=self.client.on_retry,
        )
        claimed = content_digest(response.headers.get("Docker-Content-Digest"),
                                 what_of(response, "Docker-Content-Digest"))
        return PulledManifest(body, _media_type(response, body), claimed)

    def blob_size(self, digest: Digest) -> int | None:
        """``HEAD`` of the blob: its ``Content-Length``, None when the registry does not
        have it (404); other failures raise."""
        response = self.client.idempotent("HEAD", self.blob_url(digest), expect=(200, 404), follow_redirects=True)
        if response.status_code == 404:
            return None
        return strict_int(response.headers.get("Content-Length"), what_of(response, "Content-Length"))

    def blob_url(self, digest: Digest) -> str:
        return self.client.url(f"/v2/{self.repository}/blobs/{digest}")


def _media_type(response: httpx.Response, body: bytes) -> str:
    """The manifest's type: its ``Content-Type`` when that is a manifest type, else (a
    registry that says ``application/json``) the document's own ``mediaType``."""
    given = str(response.headers.get("Content-Type") or "").partition(";")[0].strip()
    if given in MANIFEST_TYPES | INDEX_TYPES:
        return given
    try:
        declared = json.loads(body).get("mediaType")
    except Exception:  # not JSON, not an object: the parser says so, with the type given
        declared = None
    return str(declared) if isinstance(declared, str) and declared in MANIFEST_TYPES | INDEX_TYPES else given


class BlobReader(io.RawIOBase):
    """A blob of known ``size`` over HTTP: ``read``, ``readinto`` and ``seek`` as a file's,
    each GET opened when a read needs it (see the module docstring)."""

    def __init__(self, client: RegistryClient, url: str, size: int):
        super().__init__()
        self.client = client
        self.url = url
        self.size = size
        self.requests = 0  # GETs sent, resumes included
        self.ranged = 0  # of which with a Range
        self._pos = 0  # the offset the next read returns
        self._response: httpx.Response | None = None
        self._blocks: Iterator[bytes] | None = None
        self._scope: RequestScope | None = None
        self._left = b""  # bytes of the current answer not yet returned
        self._at = 0  # the offset of _left's first byte (the answer's position)
        self._budget = client.retry.budget()
        self._delivered = 0  # bytes read returned, seeks aside: the progress a resume is judged by
        self._delivered_at_failure = 0

    # -- file protocol ------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence})")
        target = bases[whence] + offset
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        if target != self._pos:
            self._pos = target
            if self._response is not None and not self._at <= target <= self._at + len(self._left):
                self._drop()  # the next read opens a GET from the new offset
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        n = len(data)
        memoryview(buffer).cast("B")[:n] = data
        return n

    def read(self, n: int | None = -1) -> bytes:
        if self._pos >= self.size:
            return b""
        want = self.size - self._pos if n is None or n < 0 else min(n, self.size - self._pos)
        if want == 0:
            return b""
        while True:
            try:
                return self._read(want)
            except httpx.HTTPError as e:
                error = RegistryError(f"GET {redact(self.url)} at byte {self._pos}: {failure_reason(e)[:200]}")
            except RegistryError as e:  # the GET that resumes was refused
                if not is_transient(e):
                    self._drop()
                    raise
                error = e
            self._drop()
            if self._delivered - self._delivered_at_failure >= MIN_PROGRESS:
                self._budget = self.client.retry.budget()  # a broken network, not a broken server
            self._delivered_at_failure = self._delivered
            if not self._budget.spend(error, self.client.on_retry):
                raise error from None

    def close(self) -> None:
        self._drop()
        super().close()

    # -- the answers --------------------------------------------------------------------

    def _read(self, want: int) -> bytes:
        if self._response is None:
            self._open()
        assert self._blocks is not None and self._scope is not None
        skip = self._pos - self._at  # a 200 to a range request: bytes before _pos to drop
        while len(self._left) < skip + 1:
            skip -= len(self._left)
            self._at += len(self._left)
            with within(self._scope):
                self._left = next(self._blocks, b"")
            if not self._left:
                raise httpx.RemoteProtocolError(f"the answer ended at byte {self._at} of {self.size}")
        start = self._pos - self._at
        data = self._left[start : start + want]
        self._left = self._left[start + len(data) :]
        self._pos += len(data)
        self._at = self._pos
        self._delivered += len(data)
        return data

    def _open(self) -> None:
        """A GET from ``_pos``: a Range request unless from 0."""
        headers = {"Range": f"bytes={self._pos}-"} if self._pos else {}
        response = self.client.open("GET", self.url, expect=(200, 206), headers=headers, follow_redirects=True)
        self.requests += 1
        self.ranged += 1 if headers else 0
        try:
            start = self._check(response)
        except BaseException:
            response.close()
            raise
        remaining = self.size - start
        seconds = self.client.options.deadline_for(remaining)
        self._response = response
        self._scope = RequestScope(time.monotonic() + seconds, seconds, READ_BUDGET + remaining)
        self._blocks = response.iter_raw()
        self._left, self._at = b"", start

    def _check(self, response: httpx.Response) -> int:
        """The offset the answer starts at: ``_pos`` for a 206 that says so, 0 for a 200.
        An answer that contradicts the request is not retried (its status is kept)."""
        length = response.headers.get("Content-Length")
        if response.status_code == 200:
            start = 0
        else:
            what = what_of(response, "Content-Range")
            value = response.headers.get("Content-Range", "")
            m = _CONTENT_RANGE.fullmatch(value.strip())
            if m is None:
                raise RegistryError(f"{what}: {value[:60]!r} is not bytes START-END/TOTAL", status=206)
            first, last, total = int(m[1]), int(m[2]), m[3]
            if first != self._pos or last != self.size - 1 or (total != "*" and int(total) != self.size):
                raise RegistryError(f"{what}: {value[:60]!r} is not the bytes {self._pos}-{self.size - 1} "
                                    f"of {self.size} asked for", status=206)
            start = first
        if length is not None and length.strip() != str(self.size - start):
            raise RegistryError(f"{what_of(response, 'Content-Length')}: {length[:30]!r}, "
                                f"but the descriptor leaves {self.size - start} bytes from byte {start}",
                                status=response.status_code)
        return start

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
        self._response = self._blocks = self._scope = None
        self._left = b""

