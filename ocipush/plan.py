"""What a push will do, decided before any byte moves: pure, no I/O.

- Every distinct blob is one ``BlobJob``: upload it as it is, or (re)compress it on the
  way.  Which layers are compressed follows podman's rules: with a target format, every
  filesystem layer not already in it; without one, only uncompressed layers (to gzip).
  Layers that are not filesystem tars (attestations, artifacts, foreign) are never touched.
- The registry accepts a manifest only once every blob it names is there, and an index
  only once its children are: manifests go children first, the root last.  The tag is
  written by the very last request, so a failed push never moves it.
"""

from __future__ import annotations

import attrs

from . import mediatypes
from .compression import Compression, check_level
from .digest import Digest
from .errors import SourceError, UsageError
from .models import Descriptor, Manifest
from .reference import DestinationRef
from .sources.base import ImageNode

__all__ = ["BlobJob", "PushPlan", "make_plan"]


@attrs.frozen
class BlobJob:
    source: Descriptor
    target: str | None = None  # compress to this on the way; None: upload as it is
    diff_id: Digest | None = None  # what the uncompressed tar must hash to

    @property
    def transforms(self) -> bool:
        return self.target is not None


@attrs.frozen
class PushPlan:
    destination: DestinationRef
    image: ImageNode
    jobs: tuple[BlobJob, ...]  # every distinct blob, each uploaded once
    compression: Compression


def make_plan(
    image: ImageNode,
    destination: DestinationRef,
    compression: Compression = Compression(),
    diff_ids: dict[Digest, list[Digest]] | None = None,
) -> PushPlan:
    """``diff_ids`` maps each image config's digest to its ``rootfs.diff_ids``."""
    if destination.digest is not None and destination.digest != image.descriptor.digest:
        raise UsageError(
            f"destination {destination} names digest {destination.digest}, "
            f"but the source image is {image.descriptor.digest}"
        )
    if compression.level is not None:
        check_level(compression.format or "gzip", compression.level)  # fail before any upload
    diff_ids = diff_ids or {}
    jobs: dict[Digest, BlobJob] = {}
    for node in image.walk():
        if not isinstance(node.parsed, Manifest):
            continue
        layer_ids = _layer_diff_ids(node.parsed, diff_ids)
        jobs.setdefault(node.parsed.config.digest, BlobJob(node.parsed.config))
        for layer, diff_id in zip(node.parsed.layers, layer_ids, strict=True):
            if mediatypes.is_foreign_layer(layer.media_type):
                continue
            jobs.setdefault(layer.digest, BlobJob(layer, _target(layer, compression), diff_id))
    if destination.digest is not None and any(j.transforms for j in jobs.values()):
        raise UsageError(f"destination {destination} names a digest, but compressing layers changes it")
    return PushPlan(destination, image, tuple(jobs.values()), compression)


def _target(layer: Descriptor, compression: Compression) -> str | None:
    is_fs, current = mediatypes.layer_compression(layer.media_type)
    if not is_fs:
        return None
    if mediatypes.is_zstd_chunked(layer.media_type, layer.annotations, layer.size):
        current = "zstd:chunked"
    wanted = compression.format or (current or "gzip")
    if wanted == "zstd" and current == "zstd:chunked":
        return None  # a zstd:chunked layer is a zstd layer (podman keeps it too)
    return wanted if wanted != current else None


def _layer_diff_ids(manifest: Manifest, diff_ids: dict[Digest, list[Digest]]) -> list[Digest | None]:
    ids = diff_ids.get(manifest.config.digest)
    if ids is None:
        return [None] * len(manifest.layers)
    if len(ids) != len(manifest.layers):
        raise SourceError(
            f"config {manifest.config.digest}: {len(ids)} diff_ids for {len(manifest.layers)} layers"
        )
    return list(ids)
