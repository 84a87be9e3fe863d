"""The exceptions ocipush raises, and the exit code of each.

::

    OcipushError                  exit 1   anything ocipush refuses to do
    ├── UsageError                exit 2   a bad argument: reference, transport, option value
    ├── SourceError               exit 3   the image on disk is missing, malformed or corrupt
    │   ├── BlobVerificationError exit 3   a blob's bytes do not match its descriptor
    │   └── SourceUnavailable     exit 3   a docker:// source failed past its retries (network, 5xx)
    ├── LocalIOError              exit 6   writing a local file failed: TMPDIR, the cache, a local
    │                                      destination (disk full, I/O error, permission denied)
    └── RegistryError             exit 4   the registry refused a request or could not be reached
        ├── AuthenticationError   exit 5   credentials missing or refused
        └── UploadError           exit 4   an upload ended in a state we cannot accept

LocalIOError has a code of its own because neither the user's input nor the registry is at
fault: the machine is (a full ``TMPDIR``, a read-only or failing disk), and CI wants to
tell that apart, to retry on another runner or to page someone about the disk.

Every message is one line a user can act on: it names the file, blob, URL or header at
fault.  The CLI prints ``ocipush: <message>`` and exits with ``exit_code``; tracebacks
are for bugs only.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BlobVerificationError",
    "LocalIOError",
    "OcipushError",
    "RegistryError",
    "SourceError",
    "SourceUnavailable",
    "UploadError",
    "UsageError",
    "local_io_error",
]


class OcipushError(Exception):
    exit_code = 1


class UsageError(OcipushError):
    exit_code = 2


class SourceError(OcipushError):
    exit_code = 3


class BlobVerificationError(SourceError):
    pass


class SourceUnavailable(SourceError):
    """A ``docker://`` source's registry did not answer, or answered a transient failure,
    past its retries: nothing is wrong with the image, so a destination's upload it was
    feeding is kept for the next run to resume (as after the destination's own failure)."""


class LocalIOError(OcipushError):
    """A file ocipush writes on this machine could not be written (or read back).

    ``path`` is the file or directory at fault (``TMPDIR`` for an anonymous spill), ``errno``
    the OS error number. Raised from ``OSError`` by :func:`local_io_error`, so the message
    always has the same shape: ``PATH: WHAT: STRERROR``.
    """

    exit_code = 6

    def __init__(self, message: str, *, path: str, errno: int | None = None):
        super().__init__(message)
        self.path = path
        self.errno = errno


def local_io_error(path: object, what: str, error: OSError) -> LocalIOError:
    """``PATH: WHAT: No space left on device`` from an OSError met while writing ``path``."""
    reason = error.strerror or str(error) or type(error).__name__
    return LocalIOError(f"{path}: {what}: {reason}", path=str(path), errno=error.errno)


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
