"""``oci-archive:PATH[:REF]`` — an OCI image layout in a tar, read in place.

Written by ``skopeo copy … oci-archive:``, ``podman save --format oci-archive`` (gzip
layers), buildkit ``--output type=oci`` (every platform, and attestation manifests),
and docker 25+ ``docker save`` (whose tar is an OCI layout as well as a docker archive).
REF selects an ``index.json`` entry as for ``oci:``.

buildkit's attestation manifests (platform ``unknown/unknown``, annotation
``vnd.docker.reference.type=attestation-manifest``, ``application/vnd.in-toto+json``
layers) are ordinary manifests of the index: they are pushed as they are, byte for
byte, so their references to the image manifests stay true.
"""

from __future__ import annotations

from ..reference import SourceSpec
from .oci_layout import OCILayout
from .tarindex import open_tar

__all__ = ["open_oci_archive"]


def open_oci_archive(spec: SourceSpec) -> OCILayout:
    return OCILayout(open_tar(spec.path), spec.ref, name=str(spec))
