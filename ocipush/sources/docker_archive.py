"""``docker-archive:PATH[:REPO:TAG|@N]`` — the tar ``docker save`` and ``podman save`` write.

Every generation has ``manifest.json``, a list of images (``Config``, ``Layers``: member
names; ``RepoTags``), so that is the catalogue REF selects from: a RepoTags entry,
compared as docker normalises names (``busybox:latest`` is
``docker.io/library/busybox:latest``), or ``@N``, the N-th entry. With one image REF
may be left out. What the entry's files are decides the rest:

- **The archive is also an OCI layout holding the image's manifest** — docker 25+
  (uncompressed layers), docker with the containerd image store and buildkit
  ``--output type=docker`` (blobs copied verbatim, usually gzip or zstd). We push the
  manifest the tool wrote, byte for byte: the one whose config and layers are exactly
  the files the entry names. If that manifest is the whole of an ``index.json`` entry
  (an image, or an index whose every child is present, such as buildkit's image plus
  attestation), that entry is pushed. containerd exports a multi-platform index with
  only one platform's blobs: then the image that is present is pushed alone, and
  ``notes`` say what was skipped. docker 25+ lists every layer in ``LayerSources``;
  that makes none of them foreign, and this path never reads it.
- **No manifest in the archive** — legacy ``docker save`` (≤ 24: ``<id>/layer.tar``,
  repeated layers as symlinks), podman/skopeo (``<diff_id>.tar``), crane
  (``<digest>.tar.gz``). We synthesize an OCI image manifest, served from memory: the
  config is the entry's config file, pushed unchanged as
  ``application/vnd.oci.image.config.v1+json``; each layer is the file the entry
  names. An uncompressed layer (told by magic bytes, never by name) is
  ``application/vnd.oci.image.layer.v1.tar`` with digest ``rootfs.diff_ids[i]``, which
  the bytes are checked against as they stream (so opening a big archive reads no
  layer); a gzip or zstd layer is hashed once here for its digest. Foreign layers
  (``LayerSources`` entries with a foreign media type, Windows base layers) keep their
  descriptor and URLs, and the archive need not hold them.

The pusher compresses uncompressed layers on the way to the registry and rewrites
the manifest; this module only describes what is in the archive.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from typing import IO, BinaryIO

import attrs

from ..digest import Digest
from ..errors import SourceError, UsageError
from ..mediatypes import (
    LAYER_TYPES,
    OCI_CONFIG,
    OCI_MANIFEST,
    is_foreign_layer,
    is_index,
    is_manifest,
    layer_type,
)
from ..models import (
    MAX_CONFIG_SIZE,
    Descriptor,
    DockerImageEntry,
    Index,
    Manifest,
    converter,
    failed_fields,
    first_error,
    parse_image_config,
    strict,
)
from ..reference import Reference, SourceSpec
from .base import MAX_MANIFEST_SIZE, Source, parse_position, read_manifest, shown
from .oci_layout import read_index
from .store import blob_name, open_sized, read_bytes, read_json
from .tarindex import TarIndex, normalise_name, open_tar, sniff_compression

__all__ = ["ArchiveImage", "DockerArchive", "open_docker_archive"]



@attrs.frozen
class ArchiveImage:
    """One entry of ``manifest.json``; file names as the index keys them."""

    position: int
    config: str
    layers: tuple[str, ...]
    repo_tags: tuple[str, ...]
    layer_sources: dict[Digest, Descriptor]  # by diff_id

    @property
    def title(self) -> str:
        return self.repo_tags[0] if self.repo_tags else f"image @{self.position}"


def open_docker_archive(spec: SourceSpec) -> DockerArchive:
    """``docker-archive:PATH[:REPO:TAG|@N]``: the archive indexed, the image chosen."""
    return DockerArchive(open_tar(spec.path), spec.ref, name=str(spec))


class DockerArchive(Source):
    """The image REF selects in a docker archive. Owns ``tar``: ``close()`` closes it."""

    def __init__(self, tar: TarIndex, ref: str | None = None, *, name: str):
        self.tar = tar
        self.name = name
        self.notes: list[str] = []
        self._memory: dict[Digest, bytes] = {}  # the synthesized manifest
        self._members: dict[Digest, str] = {}  # blobs that are not at blobs/ALG/HEX
        try:
            self.image = self._select(_read_catalogue(tar), ref)
            self._root = self._from_layout(self.image) or self._synthesize(self.image)
        except BaseException:
            tar.close()
            raise

    def root(self) -> Descriptor:
        return self._root

    def describe_blob(self, desc: Descriptor) -> str:
        if desc.digest in self._memory:
            return f"manifest {desc.digest} (made from {self.tar.describe('manifest.json')})"
        return f"blob {desc.digest} ({self.tar.describe(self._member(desc.digest))})"

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        if desc.digest in self._memory:
            return io.BytesIO(self._memory[desc.digest])
        return open_sized(self.tar, self._member(desc.digest), desc.size, self.describe_blob(desc))

    def close(self) -> None:
        self.tar.close()

    def _member(self, digest: Digest) -> str:
        return self._members.get(digest) or blob_name(digest)

    # -- selection ------------------------------------------------------------------

    def _select(self, images: list[ArchiveImage], ref: str | None) -> ArchiveImage:
        where = self.tar.describe("manifest.json")
        choices = ", ".join(
            f"@{i.position}" + (f" ({', '.join(i.repo_tags)})" if i.repo_tags else "") for i in images
        )
        if ref is None:
            if len(images) == 1:
                return images[0]
            raise SourceError(
                f"{where} lists {len(images)} images; choose one as {self.name}:REPO:TAG or "
                f"{self.name}:@N, one of: {choices}"
            )
        position = parse_position(ref[1:]) if ref.startswith("@") else None
        if position is not None:
            if position < len(images):
                return images[position]
        else:
            wanted = _normalised_tag(ref)
            for image in images:
                if any(_normalised_tag(tag) == wanted for tag in image.repo_tags):
                    return image
        raise SourceError(f"{where} has no image {shown(ref)}; choose one of: {choices}")

    # -- an archive that is also an OCI layout ----------------------------------------

    def _from_layout(self, image: ArchiveImage) -> Descriptor | None:
        """The manifest docker/containerd/buildkit wrote for ``image``, or the index entry
        that is wholly that image; None when the archive holds no such manifest."""
        if not self.tar.has("index.json"):
            return None
        wanted = (image.config, image.layers)
        for top in read_index(self.tar).manifests:
            nodes = list(self._walk(top, depth=0))
            match = next(
                (d for d, m in nodes if isinstance(m, Manifest) and _file_names(m) == wanted), None
            )
            if match is None:
                continue
            absent = [d for d, m in nodes if m is None]
            if not absent:
                return top
            self.notes.append(
                f"{self.tar.label}: pushing the {_what(match)} image alone; its index also lists "
                f"{', '.join(_what(d) for d in absent)}, not in the archive"
            )
            return match
        return None

    def _walk(self, desc: Descriptor, depth: int) -> Iterator[tuple[Descriptor, Manifest | Index | None]]:
        """Every image manifest and index below ``desc``, parsed, or None where the
        archive lacks it or any of its blobs (containerd's other platforms)."""
        if not (is_index(desc.media_type) or is_manifest(desc.media_type)):
            return  # an artifact or unknown type: not the image we look for
        if not self._has_blobs([desc]):
            yield desc, None
            return
        _, parsed = read_manifest(self, desc, depth)
        if isinstance(parsed, Manifest) and not self._has_blobs(parsed.blobs):
            yield desc, None
            return
        yield desc, parsed
        if isinstance(parsed, Index):
            for child in parsed.manifests:
                yield from self._walk(child, depth + 1)

    def _has_blobs(self, descs: list[Descriptor]) -> bool:
        return all(self.tar.has(blob_name(d.digest)) for d in descs if not is_foreign_layer(d.media_type))

    # -- an archive without the manifest: make one ------------------------------------

    def _synthesize(self, image: ArchiveImage) -> Descriptor:
        where = f"{self.tar.describe('manifest.json')}: {image.title}"
        try:
            data = read_bytes(self.tar, image.config, MAX_CONFIG_SIZE)
        except FileNotFoundError:
            raise SourceError(f"{where}: config {image.config!r} is not in the archive") from None
        try:
            diff_ids = parse_image_config(data, self.tar.describe(image.config)).diff_ids
        except ValueError as e:
            raise SourceError(str(e)) from None
        if len(diff_ids) != len(image.layers):
            raise SourceError(
                f"{where}: {len(image.layers)} layers, but its config {image.config} lists "
                f"{len(diff_ids)} diff_ids"
            )
        config = Descriptor(OCI_CONFIG, Digest.of(data), len(data))
        self._members[config.digest] = image.config
        pairs = zip(image.layers, diff_ids, strict=True)
        layers = [self._layer(image, name, diff_id, where) for name, diff_id in pairs]
        doc = {"schemaVersion": 2, **converter.unstructure(Manifest(OCI_MANIFEST, config, layers))}
        manifest = json.dumps(doc, separators=(",", ":")).encode()
        root = Descriptor(OCI_MANIFEST, Digest.of(manifest), len(manifest))
        self._memory[root.digest] = manifest
        return root

    def _layer(self, image: ArchiveImage, name: str, diff_id: Digest, where: str) -> Descriptor:
        foreign = image.layer_sources.get(diff_id)
        if foreign is not None and is_foreign_layer(foreign.media_type):
            return foreign  # registries fetch it from its URLs; the archive need not hold it
        try:
            with self.tar.open(name) as f:
                compression = sniff_compression(f)
                size = f.seek(0, io.SEEK_END)
                # An uncompressed layer is its diff_id, checked while it streams; a
                # compressed one has to be read once for its digest.
                digest = diff_id if compression is None else _sha256(f)
        except FileNotFoundError:
            raise SourceError(f"{where}: layer {name!r} is not in the archive") from None
        if compression not in LAYER_TYPES:
            raise SourceError(
                f"{self.tar.describe(name)}: a {compression}-compressed layer; registries take "
                "uncompressed, gzip or zstd layers only"
            )
        self._members[digest] = name
        return Descriptor(layer_type(compression), digest, size)


def _read_catalogue(tar: TarIndex) -> list[ArchiveImage]:
    where = tar.describe("manifest.json")
    try:
        doc = read_json(tar, "manifest.json", MAX_MANIFEST_SIZE)
    except FileNotFoundError:
        hint = f"; it is an OCI layout: read it as oci-archive:{tar.label}" if tar.has("index.json") else ""
        raise SourceError(f"{tar.label}: no manifest.json, so not a docker archive{hint}") from None
    if not isinstance(doc, list):
        raise SourceError(f"{where}: not a list of images")
    if not doc:
        raise SourceError(f"{where}: lists no images")
    return [_parse_entry(i, item, where) for i, item in enumerate(doc)]


# What each field of a manifest.json entry must be, in the words of the error.
_ENTRY_FIELDS = {
    "config": "Config is not a file name",
    "layers": "Layers is not a list of file names",
    "repo_tags": "RepoTags is not a list of names",
}


def _parse_entry(position: int, item: object, where: str) -> ArchiveImage:
    def bad(why: str) -> SourceError:
        return SourceError(f"{where}: entry {position}: {why}")

    if not isinstance(item, dict):
        raise bad("not an object")
    try:
        entry = strict.structure(item, DockerImageEntry)
    except Exception as e:  # cattrs groups every field error; the first field is what users read
        field = next(iter(failed_fields(e)), "")
        raise bad(_ENTRY_FIELDS.get(field) or f"malformed LayerSources: {first_error(e)}") from None
    return ArchiveImage(
        position,
        normalise_name(entry.config),
        tuple(normalise_name(layer) for layer in entry.layers),
        entry.repo_tags or (),
        entry.layer_sources or {},
    )


def _normalised_tag(tag: str) -> str:
    """``busybox`` → ``docker.io/library/busybox:latest``; a name docker would not
    accept stays as written, so it can still match itself."""
    try:
        return str(Reference.parse(tag))
    except UsageError:
        return tag


def _file_names(manifest: Manifest) -> tuple[str, tuple[str, ...]]:
    return blob_name(manifest.config.digest), tuple(blob_name(d.digest) for d in manifest.layers)


def _what(desc: Descriptor) -> str:
    return str(desc.platform) if desc.platform else desc.digest.short


def _sha256(f: IO[bytes]) -> Digest:
    f.seek(0)
    h = hashlib.sha256()
    while block := f.read(1 << 20):
        h.update(block)
    return Digest("sha256", h.hexdigest())
