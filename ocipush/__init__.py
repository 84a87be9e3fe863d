"""ocipush: push container images from files to OCI registries, in chunks that fit a
request-body limit, optionally recompressed to zstd on the way.

    from ocipush import push, PushOptions, Compression
    result = push("oci:./layout:v1", "registry.example.com/team/img:v1",
                  PushOptions(chunk_size=50_000_000, compression=Compression("zstd")))
    print(result.reference)   # registry.example.com/team/img@sha256:…
"""

from .__version__ import __version__ as __version__
from .cache import BlobCache
from .compression import Compression
from .digest import Digest
from .errors import (
    AuthenticationError,
    BlobVerificationError,
    LocalIOError,
    OcipushError,
    RegistryError,
    SourceError,
    UploadError,
    UsageError,
)
from .models import Descriptor, Index, Manifest, Platform
from .push import BlobResult, PushOptions, PushResult, push
from .reference import LayoutReference, Reference
from .registry.auth import Credentials
from .registry.retry import RetryPolicy
from .report import LineReporter, ProgressReporter, Reporter
from .sources import open_source

__all__ = [
    "AuthenticationError",
    "BlobCache",
    "BlobResult",
    "BlobVerificationError",
    "Compression",
    "Credentials",
    "Descriptor",
    "Digest",
    "Index",
    "LayoutReference",
    "LineReporter",
    "LocalIOError",
    "Manifest",
    "OcipushError",
    "Platform",
    "ProgressReporter",
    "PushOptions",
    "PushResult",
    "Reference",
    "RegistryError",
    "Reporter",
    "RetryPolicy",
    "SourceError",
    "UploadError",
    "UsageError",
    "open_source",
    "push",
]
