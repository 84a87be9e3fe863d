"""ocipush: push container images from files to OCI registries, in chunks that fit a
request-body limit, optionally recompressed to zstd on the way.

    from ocipush import push, PushOptions, Compression
    result = push("oci:./layout:v1", "registry.example.com/team/img:v1",
                  PushOptions(chunk_size=50_000_000, compression=Compression("zstd")))
    print(result.reference)   # registry.example.com/team/img@sha256:…
"""


import importlib as _importlib
import sys as _sys
import types as _types
from typing import TYPE_CHECKING as _TYPE_CHECKING

from .__version__ import __version__ as __version__

if _TYPE_CHECKING:
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

# Where each public name lives.  Imported on first use (PEP 562), not with the package:
# ``python -m ocipush`` imports this package before its ``__main__`` runs, and the
# command must put its signal handlers in place before httpx and the rest are loaded.
_LAZY = {
    "AuthenticationError": ".errors",
    "BlobCache": ".cache",
    "BlobResult": ".push",
    "BlobVerificationError": ".errors",
    "Compression": ".compression",
    "Credentials": ".registry.auth",
    "Descriptor": ".models",
    "Digest": ".digest",
    "Index": ".models",
    "LayoutReference": ".reference",
    "LineReporter": ".report",
    "LocalIOError": ".errors",
    "Manifest": ".models",
    "OcipushError": ".errors",
    "Platform": ".models",
    "ProgressReporter": ".report",
    "PushOptions": ".push",
    "PushResult": ".push",
    "Reference": ".reference",
    "RegistryError": ".errors",
    "Reporter": ".report",
    "RetryPolicy": ".registry.retry",
    "SourceError": ".errors",
    "UploadError": ".errors",
    "UsageError": ".errors",
    "open_source": ".sources",
    "push": ".push",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(_types.ModuleType):
    """``ocipush.push`` is the function, as it always was: importing the submodule
    ``ocipush.push`` sets the package's attribute to the module, which the eager
    ``from .push import push`` used to overwrite and which nothing overwrites now."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "push" and isinstance(value, _types.ModuleType):
            value = value.push
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


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
