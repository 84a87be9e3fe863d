"""The exceptions ocipush raises, and the exit code of each.

::

    OcipushError                  exit 1   anything ocipush refuses to do
    ├── UsageError                exit 2   a bad argument: reference, transport, option value
    ├── SourceError               exit 3   the image on disk is missing, malformed or corrupt
    │   └── BlobVerificationError exit 3   a blob's bytes do not match its descriptor
    └── RegistryError             exit 4   the registry refused a request or could not be reached
        ├── AuthenticationError   exit 5   credentials missing or refused
        └── UploadError           exit 4   an upload ended in a state we cannot accept

Every message is one line a user can act on: it names the file, blob, URL or header at
fault.  The CLI prints ``ocipush: <message>`` and exits with ``exit_code``; tracebacks
are for bugs only.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BlobVerificationError",
    "OcipushError",
    "RegistryError",
    "SourceError",
    "UploadError",
    "UsageError",
]


class OcipushError(Exception):
    exit_code = 1


class UsageError(OcipushError):
    exit_code = 2


class SourceError(OcipushError):
    exit_code = 3


class BlobVerificationError(SourceError):
    pass


class RegistryError(OcipushError):
    """The registry answered with an error, or not at all.

    ``status`` is the HTTP status (None when there was no answer), ``codes`` the OCI error
    codes of the body (``BLOB_UPLOAD_INVALID``, …) and ``headers`` the answer's headers, so
    callers decide on retries and resumes without parsing the message.
    """

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        codes: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.codes = codes
        self.headers = headers or {}

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")


class AuthenticationError(RegistryError):
    exit_code = 5


class UploadError(RegistryError):
    pass
