"""Where a push goes: a registry repository, or an OCI layout on disk.

A destination offers what the orchestrator's blob and manifest stages need, and nothing
about how: check, mount, upload a blob; put a manifest; commit (local layouts write their
``index.json`` there, last, so a failed push never names a half-written image).
"""

from __future__ import annotations

from typing import Protocol

from ..content import BlobContent, UploadJournal, UploadOutcome
from ..digest import Digest

__all__ = ["Destination"]


class Destination(Protocol):
    location: str  # "registry/repository" or "oci:PATH": where the blob cache says blobs live

    @property
    def chunk_size_learnt(self) -> int | None:
        """The request body size unannounced 413s taught during the push; None without any."""

    def exists(self, digest: Digest, size: int | None = None) -> bool:
        """The destination holds the blob, of ``size`` bytes when given; a contradiction
        (another size, another digest) is "not there"."""

    def mount(self, digest: Digest, location: str) -> bool:
        """Link a blob that ``location`` (a cache hint) holds; False when not possible."""

    def upload(self, blob: BlobContent, journal: UploadJournal | None = None) -> UploadOutcome:
        """Store the blob; ``journal`` (a registry's record of open uploads, ``resume.py``)
        resumes an upload an earlier run left; destinations without uploads ignore it."""

    def put_manifest(self, reference: str, data: bytes, media_type: str, digest: Digest) -> None: ...

    def commit(self, media_type: str, digest: Digest, size: int) -> None:
        """Every blob and manifest is in place: publish the root under the tag."""

    def abort(self) -> None:
        """Ctrl-C: undo what is half done now, from any thread; start nothing new."""

    def close(self) -> None: ...
