"""``[docker://]HOST/REPO[:TAG|@DIGEST]``: a registry, through the chunked uploader."""

from __future__ import annotations

from ..chunks import HostLimits
from ..content import BlobContent, UploadJournal, UploadOutcome
from ..digest import Digest
from ..errors import UploadError
from ..events import Notes
from ..reference import Reference
from ..registry.client import ClientOptions, RegistryClient, redact
from ..registry.retry import RetryPolicy
from ..registry.upload import BlobUploader

__all__ = ["RegistryDestination"]


class RegistryDestination:
    """A repository on a registry: blobs through the chunked uploader, manifests by PUT."""

    def __init__(
        self, reference: Reference, options: ClientOptions, retry: RetryPolicy, chunk_size: int | None, events: Notes
    ) -> None:
        self.reference = reference
        self.location = reference.name
        self.client = RegistryClient(reference.api_host, options, loopback=reference.is_loopback, retry=retry)
        redact_secrets = self.client.auth.redact  # notes quote servers, which may echo a secret
        self.client.on_retry = lambda error: events.note(redact_secrets(f"retrying: {error}"))
        self.uploader = BlobUploader(self.client, reference.repository, HostLimits(chunk_size))
        self.uploader.on_note = lambda message: events.note(redact_secrets(message))

    def __enter__(self) -> RegistryDestination:
        try:
            self.client.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def chunk_size_learnt(self) -> int | None:
        return self.uploader.limits.learnt

    def exists(self, digest: Digest, size: int | None = None) -> bool:
        return self.uploader.exists(digest, size)

    def mount(self, digest: Digest, location: str) -> bool:
        registry, _, repository = location.partition("/")
        if registry != self.reference.registry or location == self.location:
            return False
        return self.uploader.mount(digest, repository)

    def upload(self, blob: BlobContent, journal: UploadJournal | None = None) -> UploadOutcome:
        """The blob through the chunked uploader; ``journal`` resumes and records its upload."""
        return self.uploader.upload(blob, journal)

    def put_manifest(self, reference: str, data: bytes, media_type: str, digest: Digest) -> None:
        url = self.client.url(f"/v2/{self.reference.repository}/manifests/{reference}")
        response = self.client.idempotent(
            "PUT", url, expect=(201, 200, 202), content=data, headers={"Content-Type": media_type}
        )
        got = response.headers.get("Docker-Content-Digest")
        if got and got != str(digest):
            computed = self.client.auth.redact(got)
            raise UploadError(f"PUT {redact(url)}: registry computed {computed} for manifest {digest}")

    def commit(self, media_type: str, digest: Digest, size: int) -> None:
        """Nothing left: the root manifest's PUT, under the tag, was the commit."""

    def abort(self) -> None:
        self.uploader.abort()

    def close(self) -> None:
        self.client.close()
