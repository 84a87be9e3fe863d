"""Uploading one blob: check, initiate, stream, commit — the chunked protocol of the
OCI distribution spec 1.1, as serverless registries need it.

- check:    ``HEAD /v2/<repo>/blobs/<digest>``; 200 means there is nothing to do.
- initiate: ``POST /v2/<repo>/blobs/uploads/`` → 202, a ``Location`` and the optional
            ``OCI-Chunk-Min-Length`` / ``OCI-Chunk-Max-Length`` limits.
- stream:   one ``PATCH`` per chunk with ``Content-Range: start-end``; each answer's
            ``Range`` must say the registry holds exactly what we sent, and its
            ``Location`` (which may carry state, e.g. ``_state=``) is the next URL.
- commit:   ``PUT <location>&digest=…`` with an empty body (serverless-registry fails
            with 500 when the final PUT carries data) → 201 and ``Docker-Content-Digest``.

The bytes come from a ``BlobContent`` that can give any chunk again; it is verified after
the last chunk and before the commit, so a corrupt source is never committed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol
from urllib.parse import quote

import attrs
import httpx

from ..digest import Digest
from ..errors import UploadError
from .chunks import choose_chunk_size, chunk_ranges, content_range, parse_range
from .client import RegistryClient, redact

__all__ = ["BlobContent", "BlobUploader", "UploadOutcome"]

MIN_HEADER = "OCI-Chunk-Min-Length"
MAX_HEADER = "OCI-Chunk-Max-Length"


class BlobContent(Protocol):
    digest: Digest
    size: int

    def chunk(self, offset: int, length: int, on_bytes: Callable[[int], None] | None = None) -> Iterable[bytes]: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


@attrs.frozen
class UploadOutcome:
    action: str  # "skipped" (the registry had it) or "uploaded"
    requests: int = 0  # PATCH requests sent
    chunk_size: int | None = None


@attrs.define
class _Session:
    location: str
    minimum: int | None
    maximum: int | None


class BlobUploader:
    """Uploads blobs to one repository through a shared client."""

    def __init__(self, client: RegistryClient, repository: str, chunk_size: int | None = None):
        self.client = client
        self.repository = repository
        self.chunk_size = chunk_size  # the user's --chunk-size: an upper bound

    def upload(self, blob: BlobContent, on_bytes: Callable[[int], None] | None = None) -> UploadOutcome:
        if self.exists(blob.digest):
            return UploadOutcome("skipped")
        session = self._initiate()
        try:
            chunk = choose_chunk_size(self.chunk_size, session.minimum, session.maximum)
            patches = self._stream(session, blob, chunk, on_bytes)
            blob.finish()
            self._commit(session, blob.digest)
        except BaseException:
            self._cancel(session)
            raise
        finally:
            blob.close()
        return UploadOutcome("uploaded", patches, chunk)

    # -- the steps ------------------------------------------------------------------

    def exists(self, digest: Digest) -> bool:
        url = self.client.url(f"/v2/{self.repository}/blobs/{digest}")
        response = self.client.request("HEAD", url, expect=(200, 404), follow_redirects=True)
        return response.status_code == 200

    def _initiate(self) -> _Session:
        url = self.client.url(f"/v2/{self.repository}/blobs/uploads/")
        response = self.client.request("POST", url, expect=(202,), headers={"Content-Length": "0"})
        return _Session(
            location=_location(response),
            minimum=_int_header(response, MIN_HEADER),
            maximum=_int_header(response, MAX_HEADER),
        )

    def _stream(self, session: _Session, blob: BlobContent, chunk: int | None, on_bytes) -> int:
        patches = 0
        for offset, length in chunk_ranges(blob.size, chunk):
            response = self.client.request(
                "PATCH",
                session.location,
                expect=(202,),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": content_range(offset, length),
                    "Content-Length": str(length),
                },
                content=blob.chunk(offset, length, on_bytes),
            )
            patches += 1
            held = parse_range(response.headers.get("Range"))
            if held is not None and held != offset + length:
                raise UploadError(
                    f"PATCH {redact(session.location)}: registry holds {held} bytes of "
                    f"{blob.digest} after a chunk ending at {offset + length}",
                    status=response.status_code,
                )
            session.location = _location(response)
        return patches

    def _commit(self, session: _Session, digest: Digest) -> None:
        sep = "&" if "?" in session.location else "?"
        url = f"{session.location}{sep}digest={quote(str(digest), safe=':')}"
        response = self.client.request("PUT", url, expect=(201, 204), headers={"Content-Length": "0"})
        got = response.headers.get("Docker-Content-Digest")
        if got and got != str(digest):
            raise UploadError(f"PUT {redact(url)}: registry stored {got}, expected {digest}")

    def _cancel(self, session: _Session) -> None:
        """Best effort: free the registry's half-finished upload."""
        try:
            self.client.request("DELETE", session.location, expect=(202, 204, 404))
        except Exception:
            pass


def _location(response: httpx.Response) -> str:
    location = response.headers.get("Location")
    if not location:
        raise UploadError(
            f"{response.request.method} {redact(response.request.url)}: "
            f"{response.status_code} without a Location header"
        )
    # Relative locations are resolved against the URL that answered, as the spec says.
    return str(response.request.url.join(location))


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) <= 0:
        raise UploadError(
            f"{response.request.method} {redact(response.request.url)}: "
            f"header {name}: {value!r} is not a positive number of bytes"
        )
    return int(value)
