"""``oci:PATH[:REF]`` — an OCI image layout, in a directory or (``oci-archive:``) in a tar.

REF is an ``org.opencontainers.image.ref.name`` annotation (``io.containerd.image.name``
is accepted too, as containerd and docker 25+ write it), ``@sha256:…`` for an entry by
digest, or ``@N`` for the N-th entry of ``index.json``.

The layout is read through a FileStore, so the same code serves a directory and the
members of an archive.
"""

from __future__ import annotations

from typing import BinaryIO

from ..digest import Digest
from ..errors import SourceError
from ..models import Descriptor, Index, converter
from ..reference import SourceSpec
from .base import MAX_MANIFEST_SIZE, Source, parse_position, shown
from .store import DirStore, FileStore, blob_name, open_sized, read_json

__all__ = ["OCILayout", "open_oci_layout", "read_index"]

_CONTAINERD_NAME = "io.containerd.image.name"


def read_index(store: FileStore) -> Index:
    """The layout's ``index.json``; FileNotFoundError when there is none."""
    doc = read_json(store, "index.json", MAX_MANIFEST_SIZE)
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
        raise SourceError(f"{store.describe('index.json')}: not an image index (no manifests list)")
    try:
        return converter.structure({"mediaType": "", **doc}, Index)
    except Exception as e:
        raise SourceError(f"{store.describe('index.json')}: malformed entry: {e}") from None


def open_oci_layout(spec: SourceSpec) -> OCILayout:
    return OCILayout(DirStore(spec.path), spec.ref, name=str(spec))


class OCILayout(Source):
    def __init__(self, store: FileStore, ref: str | None = None, *, name: str):
        self.store = store
        self.ref = ref or None
        self.name = name
        self.notes: list[str] = []

    def close(self) -> None:
        self.store.close()

    # -- selection ------------------------------------------------------------------

    def root(self) -> Descriptor:
        self._check_layout_file()
        try:
            entries = read_index(self.store).manifests
        except FileNotFoundError:
            raise self._missing("index.json") from None
        index_json = self.store.describe("index.json")
        if not entries:
            raise SourceError(f"{index_json}: lists no images")
        if self.ref is None:
            if len(entries) == 1:
                return entries[0]
            raise SourceError(
                f"{index_json} lists {len(entries)} images; "
                f"choose one as {self.name}:REF, REF one of: {self._choices(entries)}"
            )
        return self._select(entries, self.ref)

    def _select(self, entries: list[Descriptor], ref: str) -> Descriptor:
        index_json = self.store.describe("index.json")
        if ref.startswith("@"):
            key = ref[1:]
            position = parse_position(key)
            if position is not None:
                if position < len(entries):
                    return entries[position]
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
                    f"{index_json}: {len(by_name)} entries are named {ref!r}; "
                    f"choose one by digest: {', '.join('@' + str(d.digest) for d in by_name)}"
                )
            if by_name:
                return by_name[0]
        raise SourceError(f"{index_json} has no image {shown(ref)}; choose one of: {self._choices(entries)}")

    @staticmethod
    def _choices(entries: list[Descriptor]) -> str:
        return ", ".join(d.ref_name or f"@{d.digest}" for d in entries)

    # -- files ----------------------------------------------------------------------

    def _missing(self, name: str) -> SourceError:
        return SourceError(f"{self.store.describe(name)}: missing: {self.store.label} is not an OCI image layout")

    def _check_layout_file(self) -> None:
        try:
            doc = read_json(self.store, "oci-layout", MAX_MANIFEST_SIZE)
        except FileNotFoundError:
            raise self._missing("oci-layout") from None
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
        if not isinstance(version, str) or not version.startswith("1."):
            raise SourceError(
                f"{self.store.describe('oci-layout')}: unsupported imageLayoutVersion {version!r} (need 1.x)"
            )

    def describe_blob(self, desc: Descriptor) -> str:
        return f"blob {desc.digest} ({self.store.describe(blob_name(desc.digest))})"

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        return open_sized(self.store, blob_name(desc.digest), desc.size, self.describe_blob(desc))
