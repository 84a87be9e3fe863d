"""Named files an image is read from: a directory, or the members of a tar archive.

An OCI layout is the same whether it sits in a directory (``oci:``) or in a tar
(``oci-archive:``, docker 25+ ``docker save``), so the layout logic reads through this
small interface and never touches paths itself.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Protocol

import attrs

from ..digest import Digest
from ..errors import SourceError
from ..localfile import NotRegularFile, open_regular
from ..models import load_json

__all__ = ["DirStore", "FileStore", "blob_name", "open_sized", "parse_json", "read_bytes", "read_json"]


class FileStore(Protocol):
    """Implemented by DirStore (``oci:``) and TarIndex (``oci-archive:``, ``docker-archive:``)."""

    kind: ClassVar[str]  # "layout" or "archive", for "missing from the …"

    @property
    def label(self) -> str:
        """The directory or archive as the user named it."""

    def describe(self, name: str) -> str:
        """The file for messages: ``layout/index.json``, ``img.tar member index.json``."""

    def open(self, name: str) -> BinaryIO:
        """A fresh seekable stream of the file. FileNotFoundError when there is none (what
        that means is for the caller to say); SourceError when it cannot be read or is a
        link leading out of the store."""

    def close(self) -> None:
        """Release what the store holds (a temporary file); stream reads end with it."""


@attrs.frozen
class DirStore:
    path: Path = attrs.field(converter=Path)
    kind: ClassVar[str] = "layout"

    @property
    def label(self) -> str:
        return str(self.path)

    def describe(self, name: str) -> str:
        return str(self.path / name)

    def open(self, name: str) -> BinaryIO:
        file = self.path / name
        # A symlink is fine if it stays inside the layout (some tools dedupe that way);
        # one pointing outside could make us upload any file on the machine.
        real = file.resolve()
        if not real.is_relative_to(self.path.resolve()):
            raise SourceError(f"{file}: link points outside the layout")
        try:
            return open_regular(real)  # a FIFO would block open() forever
        except NotRegularFile as e:
            raise SourceError(f"{file}: {e.kind}, not a regular file") from None
        except FileNotFoundError:
            if not self.path.is_dir():
                raise SourceError(f"{self.path}: no such directory") from None
            raise
        except OSError as e:
            raise SourceError(f"{file}: {e.strerror}") from None

    def close(self) -> None:
        pass  # nothing held: every stream is opened and closed by its reader


def blob_name(digest: Digest) -> str:
    """Where an OCI layout keeps a blob."""
    return f"blobs/{digest.algorithm}/{digest.hex}"


def open_sized(store: FileStore, name: str, size: int, what: str) -> BinaryIO:
    """The file, checked to hold ``size`` bytes; errors name it as ``what``."""
    try:
        f = store.open(name)
    except FileNotFoundError:
        raise SourceError(f"{what}: missing from the {store.kind}") from None
    actual = f.seek(0, io.SEEK_END)
    if actual != size:
        f.close()
        raise SourceError(f"{what}: {actual} bytes on disk, descriptor says {size}")
    f.seek(0)
    return f


def read_bytes(store: FileStore, name: str, limit: int) -> bytes:
    """A small file's bytes (JSON documents); FileNotFoundError propagates."""
    with store.open(name) as f:
        if f.seek(0, io.SEEK_END) > limit:
            raise SourceError(f"{store.describe(name)}: larger than {limit} bytes")
        f.seek(0)
        return f.read()


def read_json(store: FileStore, name: str, limit: int) -> Any:
    return parse_json(read_bytes(store, name, limit), store.describe(name))


def parse_json(data: bytes, what: str) -> Any:
    return load_json(data, what, error=SourceError)
