"""What a push will do, decided before any byte moves: pure, no I/O.

The registry accepts a manifest only once every blob it names is there, and an index only
once its children are; the tag is written last, by the last request, so a failed push
never moves it.
"""

from __future__ import annotations

import attrs

from .digest import Digest
from .errors import UsageError
from .models import Descriptor
from .reference import Reference
from .sources.base import ImageNode

__all__ = ["ManifestPush", "PushPlan", "make_plan"]


@attrs.frozen
class ManifestPush:
    node: ImageNode
    reference: str  # a tag, or the digest for children and digest destinations

    @property
    def digest(self) -> Digest:
        return self.node.descriptor.digest


@attrs.frozen
class PushPlan:
    destination: Reference
    blobs: tuple[Descriptor, ...]  # every distinct blob, each uploaded once
    manifests: tuple[ManifestPush, ...]  # children first; the root last

    @property
    def root(self) -> Descriptor:
        return self.manifests[-1].node.descriptor

    @property
    def total_bytes(self) -> int:
        return sum(b.size for b in self.blobs)


def make_plan(image: ImageNode, destination: Reference) -> PushPlan:
    root_digest = image.descriptor.digest
    if destination.digest is not None and destination.digest != root_digest:
        raise UsageError(
            f"destination {destination} names digest {destination.digest}, "
            f"but the source image is {root_digest}"
        )
    manifests: dict[Digest, ManifestPush] = {}
    for node in image.walk():
        if node is not image:
            manifests.setdefault(node.descriptor.digest, ManifestPush(node, str(node.descriptor.digest)))
    # The root goes last even if a child has the same digest (a degenerate index of itself).
    manifests.pop(root_digest, None)
    root_ref = destination.tag or str(root_digest)
    return PushPlan(
        destination=destination,
        blobs=tuple(image.blobs()),
        manifests=(*manifests.values(), ManifestPush(image, root_ref)),
    )
