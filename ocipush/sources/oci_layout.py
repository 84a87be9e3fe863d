"""``oci:PATH[:REF]`` — an OCI image layout directory.

REF is an ``org.opencontainers.image.ref.name`` annotation (``io.containerd.image.name``
is accepted too, as containerd and docker 25+ write it), ``@sha256:…`` for an entry by
digest, or ``@N`` for the N-th entry of ``index.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

from ..digest import Digest
from ..errors import SourceError
from ..models import Descriptor, Index, converter
from .base import MAX_MANIFEST_SIZE

__all__ = ["OCILayout"]

_CONTAINERD_NAME = "io.containerd.image.name"


class OCILayout:
    def __init__(self, path: str | os.PathLike, ref: str | None = None, *, name: str | None = None):
        self.path = Path(path)
        self.ref = ref or None
        self.name = name or f"oci:{self.path}" + (f":{ref}" if ref else "")
        self._root_dir = self.path.resolve()

    # -- selection ------------------------------------------------------------------

    def root(self) -> Descriptor:
        self._check_layout_file()
        entries = self._index().manifests
        if not entries:
            raise SourceError(f"{self.path / 'index.json'}: lists no images")
        if self.ref is None:
            if len(entries) == 1:
                return entries[0]
            raise SourceError(
                f"{self.path / 'index.json'} lists {len(entries)} images; "
                f"choose one as oci:{self.path}:REF, REF one of: {self._choices(entries)}"
            )
        return self._select(entries, self.ref)

    def _select(self, entries: list[Descriptor], ref: str) -> Descriptor:
        if ref.startswith("@"):
            key = ref[1:]
            if key.isdigit():
                if int(key) < len(entries):
                    return entries[int(key)]
            else:
                try:
                    digest = Digest.parse(key)
                except ValueError as e:
                    raise SourceError(f"{self.name}: {e}") from None
                for d in entries:
                    if d.digest == digest:
                        return d
        else:
            by_name = [d for d in entries if d.ref_name == ref]
            by_name = by_name or [d for d in entries if (d.annotations or {}).get(_CONTAINERD_NAME) == ref]
            if len(by_name) > 1:
                # Several platforms under one name: an ambiguity the user must resolve.
                raise SourceError(
                    f"{self.path / 'index.json'}: {len(by_name)} entries are named {ref!r}; "
                    f"choose one by digest: {', '.join('@' + str(d.digest) for d in by_name)}"
                )
            if by_name:
                return by_name[0]
        raise SourceError(
            f"{self.path / 'index.json'} has no image {ref!r}; choose one of: {self._choices(entries)}"
        )

    @staticmethod
    def _choices(entries: list[Descriptor]) -> str:
        return ", ".join(d.ref_name or f"@{d.digest}" for d in entries)

    # -- files ----------------------------------------------------------------------

    def _read_json(self, name: str, limit: int = MAX_MANIFEST_SIZE):
        file = self.path / name
        try:
            if file.stat().st_size > limit:
                raise SourceError(f"{file}: larger than {limit} bytes")
            with file.open("rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            if not self.path.is_dir():
                raise SourceError(f"{self.path}: no such directory") from None
            raise SourceError(f"{file}: missing: {self.path} is not an OCI image layout") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SourceError(f"{file}: invalid JSON: {e}") from None
        except OSError as e:
            raise SourceError(f"{file}: {e.strerror}") from None

    def _check_layout_file(self) -> None:
        doc = self._read_json("oci-layout")
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise SourceError(
                f"{self.path / 'oci-layout'}: unsupported imageLayoutVersion {version!r} (need 1.x)"
            )

    def _index(self) -> Index:
        doc = self._read_json("index.json")
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise SourceError(f"{self.path / 'index.json'}: not an image index (no manifests list)")
        try:
            return converter.structure({"mediaType": "", **doc}, Index)
        except Exception as e:
            raise SourceError(f"{self.path / 'index.json'}: malformed entry: {e}") from None

    def blob_path(self, desc: Descriptor) -> Path:
        return self.path / "blobs" / desc.digest.algorithm / desc.digest.hex

    def describe_blob(self, desc: Descriptor) -> str:
        return f"blob {desc.digest} ({self.blob_path(desc)})"

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        path = self.blob_path(desc)
        # A symlink is fine if it stays inside the layout (some tools dedupe that way);
        # one pointing outside could make us upload any file on the machine.
        real = path.resolve()
        if not real.is_relative_to(self._root_dir):
            raise SourceError(f"{self.describe_blob(desc)}: link points outside the layout")
        try:
            f = real.open("rb")
        except FileNotFoundError:
            raise SourceError(f"{self.describe_blob(desc)}: missing from the layout") from None
        except OSError as e:
            raise SourceError(f"{self.describe_blob(desc)}: {e.strerror}") from None
        size = os.fstat(f.fileno()).st_size
        if size != desc.size:
            f.close()
            raise SourceError(
                f"{self.describe_blob(desc)}: {size} bytes on disk, descriptor says {desc.size}"
            )
        return f
