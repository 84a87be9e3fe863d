"""Media types of manifests, indexes and layers, OCI and Docker schema 2."""

from __future__ import annotations

import re

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "IMAGE_CONFIG_TYPES",
    "INDEX_TYPES",
    "LAYER_TYPES",
    "MANIFEST_TYPES",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "ZSTD_CHUNKED_KEYS",
    "is_foreign_layer",
    "is_index",
    "is_manifest",
    "is_zstd_chunked",
    "layer_compression",
    "layer_type",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"  # rare, but docker knows it

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
# The configs of container images (an artifact's config is anything else).
IMAGE_CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_foreign_layer(media_type: str) -> bool:
    """Layers that registries do not store: pulled from their ``urls`` instead."""
    return media_type == DOCKER_FOREIGN_LAYER or ".nondistributable." in media_type


# Filesystem layers (tar, compressed or not) → their compression. Anything else — in-toto
# attestations, artifacts, foreign and non-distributable layers — is never touched.
_FS_LAYERS = {
    OCI_LAYER: None,
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    DOCKER_LAYER_TAR: None,
    DOCKER_LAYER: "gzip",
}


def layer_compression(media_type: str) -> tuple[bool, str | None]:
    """(is a filesystem layer we may recompress, its compression)."""
    if media_type in _FS_LAYERS:
        return True, _FS_LAYERS[media_type]
    return False, None


# The compressions a registry takes for a filesystem layer → the layer's OCI media type.
# zstd:chunked is a tar+zstd layer; only its annotations tell it apart.
LAYER_TYPES: dict[str | None, str] = {
    None: OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "zstd:chunked": OCI_LAYER_ZSTD,
}

# The layer annotations of zstd:chunked (containers/storage's, see zstdchunked.py): the
# current keys, then those of containers/storage before 1.45 (podman 4.3), read only.
ZSTD_CHUNKED_KEYS = (
    "io.github.containers.zstd-chunked.manifest-checksum",
    "io.github.containers.zstd-chunked.manifest-position",
    "io.github.containers.zstd-chunked.tarsplit-position",
    "io.containers.zstd-chunked.manifest-checksum",
    "io.containers.zstd-chunked.manifest-position",
)


def is_zstd_chunked(media_type: str, annotations: dict[str, str] | None, size: int | None = None) -> bool:
    """A tar+zstd layer with a zstd:chunked table of contents (either generation of keys).
    The annotations come from the source's manifest: only well-formed ones count (a
    sha256 checksum, a CRFS position inside the blob of ``size`` bytes, when known).
    A layer with garbage ones is plain zstd, recompressed when zstd:chunked is asked for."""
    found = annotations or {}
    if media_type != OCI_LAYER_ZSTD:
        return False
    for prefix in ("io.github.containers", "io.containers"):
        checksum = found.get(f"{prefix}.zstd-chunked.manifest-checksum")
        position = _TOC_POSITION.fullmatch(found.get(f"{prefix}.zstd-chunked.manifest-position") or "")
        inside = position is not None and (size is None or int(position[1]) + int(position[2]) <= size)
        if checksum is not None and _TOC_CHECKSUM.fullmatch(checksum) and inside:
            return True
    return False


_TOC_CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
_TOC_POSITION = re.compile(r"([0-9]{1,19}):([0-9]{1,19}):[0-9]{1,19}:1", re.ASCII)  # offset:length:plain:CRFS


def layer_type(compression: str | None) -> str:
    """The OCI media type of a filesystem layer compressed with ``compression`` (one of
    LAYER_TYPES; rewrite gives schema 2 manifests their own names)."""
    return LAYER_TYPES[compression]
