"""``docker-archive:PATH[:REPO:TAG]`` as a destination: a tar that ``docker load`` (20.10
and later) and ``podman load`` both load.

What is written is what ``docker save`` 25 writes for its ``manifest.json`` reader, without
the OCI layout beside it (podman load tries an OCI archive first and would then take the
OCI ref name, not ``RepoTags``, as the image's name)::

    manifest.json       [{"Config":"blobs/sha256/<config>","RepoTags":["repo:tag"],"Layers":["blobs/sha256/<layer>",…]}]
    repositories        {"repo":{"tag":"<top layer>"}}   (only when tagged; read by pre-1.10 loaders)
    blobs/sha256/<hex>  the config and every layer

docker's loader (moby ``image/tarexport/load.go``) reads only ``manifest.json``: the
config at ``Config``, each ``Layers`` file through ``archive.DecompressStream`` (plain,
gzip, bzip2, xz; zstd only since docker 23.0), checked against the config's diff_ids, and
tags the image with every ``RepoTags`` entry (``RepoTags`` is ``null`` without a tag, as
docker writes it). containers/image (podman, skopeo) reads the same file.

The image is built as ``oci-archive:`` builds its layout (blobs verified, written under
temporary names, in a working directory beside PATH) and the archive is written under a
temporary name and renamed over PATH at the commit: a failed or interrupted push leaves
no archive and no half archive.  The files honour the umask.

Only one image fits: an index is refused before anything is read further (choose one
with ``--platform``).  zstd layers are recompressed to gzip (their diff_ids verified on
the way) unless ``--compression-format zstd`` asks to keep them, since docker before 23.0
fails on them; uncompressed layers are gzip-compressed as for every destination.
"""

from __future__ import annotations

import json
import os

from .. import mediatypes
from ..compression import Compression
from ..digest import Digest
from ..errors import UsageError
from ..models import Descriptor, Index, Manifest, parse_manifest
from ..sources.base import shown_names
from .layout import ArchiveDestination

__all__ = ["DockerArchiveDestination", "prepare_docker_archive"]

_ZSTD_NOTE = (
    "docker-archive: zstd layers are recompressed to gzip, since docker before 23.0 cannot load zstd "
    "(give --compression-format zstd to keep them)"
)
_KEPT_ZSTD_NOTE = (
    "docker-archive: layers are written as zstd, as asked: docker before 23.0 cannot load them "
    "(podman and docker 23.0+ can)"
)
_CHUNKED_NOTE = (
    "docker-archive: layers are written as zstd:chunked, as asked, but without their zstd:chunked annotations "
    "(manifest.json has no place for them): podman loads them as plain zstd"
)


def prepare_docker_archive(root: Manifest | Index, compression: Compression) -> tuple[Compression, list[str]]:
    """The compression to push the image whose root is ``root`` into a docker archive
    with, and what to tell the user; UsageError when it is an index (an archive entry
    holds one image)."""
    if isinstance(root, Index):
        held = shown_names([_platform(child) for child in root.manifests]) or "nothing"
        raise UsageError(
            f"docker-archive: holds one image, and the source is an index of {len(root.manifests)} "
            f"manifests ({held}); choose one with --platform OS/ARCH"
        )
    if root.config.media_type not in mediatypes.IMAGE_CONFIG_TYPES:
        raise UsageError(f"docker-archive: the source is not a container image (config {root.config.media_type!r}); "
                         "docker load takes images only")
    zstd = any(mediatypes.layer_compression(d.media_type) == (True, "zstd") for d in root.layers)
    if compression.format == "zstd":
        return compression, [_KEPT_ZSTD_NOTE]
    if compression.format == "zstd:chunked":  # zstd all the same: old dockers cannot load it either
        return compression, [_KEPT_ZSTD_NOTE, _CHUNKED_NOTE]
    if compression.format is None and zstd:
        return Compression("gzip", compression.level), [_ZSTD_NOTE]
    return compression, []


def _platform(desc: Descriptor) -> str:
    return str(desc.platform) if desc.platform else f"{desc.digest.short} without a platform"


class DockerArchiveDestination(ArchiveDestination):
    def __init__(self, path: str | os.PathLike[str], tag: str | None, *, dry_run: bool = False):
        super().__init__(path, tag, dry_run=dry_run)  # tag: the whole REPO:TAG, normalised
        self.location = f"docker-archive:{self.archive}"
        self._manifests: dict[Digest, bytes] = {}

    def __enter__(self) -> DockerArchiveDestination:
        super().__enter__()
        return self

    def put_manifest(self, reference: str, data: bytes, media_type: str, digest: Digest) -> None:
        super().put_manifest(reference, data, media_type, digest)
        self._manifests[digest] = data

    def commit(self, media_type: str, digest: Digest, size: int) -> None:
        data = self._manifests.get(digest)
        if data is None or not mediatypes.is_manifest(media_type):
            raise UsageError(f"{self.location}: holds one image, not a {media_type}; choose one with --platform")
        manifest = parse_manifest(data, media_type)  # ours, just written: valid
        assert isinstance(manifest, Manifest)
        foreign = [d for d in manifest.layers if mediatypes.is_foreign_layer(d.media_type)]
        if foreign:
            raise UsageError(f"{self.location}: layer {foreign[0].digest} is a foreign layer (its content is not "
                             "in the image); a docker archive cannot hold it")
        blobs = [self._blob(manifest.config.digest), *(self._blob(d.digest) for d in manifest.layers)]
        names = [p.relative_to(self.path).as_posix() for p in blobs]
        entry = {"Config": names[0], "RepoTags": [self.tag] if self.tag else None, "Layers": names[1:]}
        files = [self.path / "manifest.json"]
        self._write_file(files[0], json.dumps([entry], separators=(",", ":")).encode())
        if self.tag:
            repo, _, tag = self.tag.rpartition(":")
            top = manifest.layers[-1].digest.hex if manifest.layers else manifest.config.digest.hex
            files.append(self.path / "repositories")
            self._write_file(files[1], json.dumps({repo: {tag: top}}, separators=(",", ":")).encode())
        folders = sorted({p.parent for p in blobs} | {p.parent.parent for p in blobs})
        self._write_archive([*files, *folders, *dict.fromkeys(blobs)])
