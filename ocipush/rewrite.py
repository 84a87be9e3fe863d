"""Rewrite manifests and indexes after layers were recompressed: pure, no I/O.

A manifest none of whose blobs changed keeps its exact bytes (and digest).  Otherwise:
- each changed layer gets its new media type, digest and size; other fields stay;
- a Docker schema 2 manifest whose layers became zstd becomes an OCI manifest (schema 2
  has no zstd layer type), its config media type following;
- a ``subject`` naming a rewritten manifest is pointed at the new one;
- an index gets its children's new digests, sizes and media types (a Docker manifest
  list whose children became OCI becomes an OCI index), and the annotation
  ``vnd.docker.reference.digest`` (buildkit's link from an attestation to its image) is
  updated the same way.

Attestations keep their content: the in-toto statement inside still names the digest
that was built; the index links it to the image as pushed (see docs/compression.md).
Rewritten documents are serialised compactly, so the same input gives the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from . import mediatypes
from .digest import Digest
from .errors import UsageError
from .models import Descriptor
from .sources.base import ImageNode

__all__ = ["Rewritten", "rewrite"]

_ATTESTATION_LINK = "vnd.docker.reference.digest"
# New layers are described with OCI types; a schema 2 manifest keeps its own where it has one.
_DOCKER_EQUIVALENT = {
    mediatypes.OCI_LAYER_GZIP: mediatypes.DOCKER_LAYER,
    mediatypes.OCI_LAYER: mediatypes.DOCKER_LAYER_TAR,
}


@attrs.frozen
class Rewritten:
    descriptor: Descriptor  # as it will be pushed
    data: bytes
    original: ImageNode


def rewrite(image: ImageNode, blobs: dict[Digest, Descriptor], manifest_format: str | None = None) -> list[Rewritten]:
    """Every manifest of ``image``, children first, with ``blobs`` (old digest → new
    descriptor) applied, converted to ``manifest_format`` ("oci", "v2s2") when given.
    The last entry is the root."""
    done: dict[Digest, Rewritten] = {}
    for node in image.walk():
        if node.descriptor.digest not in done:
            done[node.descriptor.digest] = _rewrite_node(node, blobs, done, manifest_format)
    return list(done.values())


def _rewrite_node(
    node: ImageNode, blobs: dict[Digest, Descriptor], done: dict[Digest, Rewritten], manifest_format: str | None
) -> Rewritten:
    doc: dict[str, Any] = json.loads(node.data)
    media_type = node.descriptor.media_type
    changed = False
    if manifest_format and _format_of(media_type) != manifest_format:
        media_type = _convert(doc, media_type, manifest_format, node)
        changed = True
    if node.is_index:
        entries = doc.get("manifests", [])
        for entry in entries:
            child = done.get(Digest.parse(entry["digest"]))
            if child and child.descriptor.digest != child.original.descriptor.digest:
                _apply(entry, child.descriptor)
                changed = True
            link = (entry.get("annotations") or {}).get(_ATTESTATION_LINK)
            target = done.get(Digest.parse(link)) if link else None
            if target and target.descriptor.digest != target.original.descriptor.digest:
                entry["annotations"][_ATTESTATION_LINK] = str(target.descriptor.digest)
                changed = True
        if changed and media_type == mediatypes.DOCKER_MANIFEST_LIST and any(
            e.get("mediaType") == mediatypes.OCI_MANIFEST for e in entries
        ):
            media_type = _set_type(doc, mediatypes.OCI_INDEX)
    else:
        docker = media_type == mediatypes.DOCKER_MANIFEST
        for layer in doc.get("layers", []):
            new = blobs.get(Digest.parse(layer["digest"]))
            if new and new.digest != Digest.parse(layer["digest"]):
                if docker and new.media_type in _DOCKER_EQUIVALENT:
                    new = attrs.evolve(new, media_type=_DOCKER_EQUIVALENT[new.media_type])
                _apply(layer, new)
                _apply_chunked_annotations(layer, new)
                changed = True
        if changed and media_type == mediatypes.DOCKER_MANIFEST and any(
            layer.get("mediaType") == mediatypes.OCI_LAYER_ZSTD for layer in doc["layers"]
        ):
            if manifest_format == "v2s2":
                raise UsageError(
                    f"manifest {node.descriptor.digest}: zstd layers cannot be in a Docker schema 2 manifest"
                )
            media_type = _to_oci_manifest(doc)
    subject = doc.get("subject")
    if subject:
        target = done.get(Digest.parse(subject["digest"]))
        if target and target.descriptor.digest != target.original.descriptor.digest:
            _apply(subject, target.descriptor)
            changed = True
    if not changed:
        return Rewritten(node.descriptor, node.data, node)
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    descriptor = attrs.evolve(node.descriptor, media_type=media_type, digest=Digest.of(data), size=len(data))
    return Rewritten(descriptor, data, node)


def _format_of(media_type: str) -> str:
    return "v2s2" if media_type in (mediatypes.DOCKER_MANIFEST, mediatypes.DOCKER_MANIFEST_LIST) else "oci"


def _convert(doc: dict[str, Any], media_type: str, manifest_format: str, node: ImageNode) -> str:
    """``--format``: the same image in the other family of media types."""
    if mediatypes.is_index(media_type):
        if manifest_format == "v2s2":
            _replace(doc, _to_manifest_list(doc))
            return mediatypes.DOCKER_MANIFEST_LIST
        doc["mediaType"] = mediatypes.OCI_INDEX  # schema 2 requires the field; OCI allows it
        return mediatypes.OCI_INDEX
    if manifest_format == "oci":
        return _to_oci_manifest(doc)
    config = doc["config"]
    if config.get("mediaType") not in (mediatypes.OCI_CONFIG, mediatypes.DOCKER_CONFIG):
        raise UsageError(
            f"manifest {node.descriptor.digest}: config {config.get('mediaType')!r} is not an image config; "
            "Docker schema 2 cannot carry it (use --format oci)"
        )
    layers = [_schema2_descriptor(layer, _to_docker_layer(layer.get("mediaType", ""), node)) for layer in doc["layers"]]
    _replace(doc, {
        "schemaVersion": 2,
        "mediaType": mediatypes.DOCKER_MANIFEST,
        "config": _schema2_descriptor(config, mediatypes.DOCKER_CONFIG),
        "layers": layers,
    })
    return mediatypes.DOCKER_MANIFEST


# What Docker schema 2 defines, in the order containers/image's Go structs write it
# (skopeo copy --format v2s2 gives the same bytes): annotations, artifactType, subject
# and the OCI fields schema 2 lacks are dropped, as skopeo drops them.
_PLATFORM_KEYS = ("architecture", "os", "os.version", "os.features", "variant", "features")


def _replace(doc: dict[str, Any], new: dict[str, Any]) -> None:
    doc.clear()
    doc.update(new)


def _schema2_descriptor(entry: dict[str, Any], media_type: str) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": media_type, "size": entry["size"], "digest": entry["digest"]}
    if entry.get("urls"):
        out["urls"] = entry["urls"]
    return out


def _to_manifest_list(doc: dict[str, Any]) -> dict[str, Any]:
    entries = []
    for entry in doc.get("manifests", []):
        out = _schema2_descriptor(entry, entry.get("mediaType", ""))
        platform = entry.get("platform") or {}
        out["platform"] = {k: platform.get(k, "") for k in _PLATFORM_KEYS[:2]} | {
            k: platform[k] for k in _PLATFORM_KEYS[2:] if platform.get(k)
        }
        entries.append(out)
    return {"schemaVersion": 2, "mediaType": mediatypes.DOCKER_MANIFEST_LIST, "manifests": entries}


def _to_docker_layer(media_type: str, node: ImageNode) -> str:
    if media_type in _DOCKER_EQUIVALENT or media_type in _DOCKER_EQUIVALENT.values():
        return _DOCKER_EQUIVALENT.get(media_type, media_type)
    if mediatypes.is_foreign_layer(media_type):
        return mediatypes.DOCKER_FOREIGN_LAYER
    if media_type == mediatypes.OCI_LAYER_ZSTD:
        return media_type  # recompressed below, or refused there
    raise UsageError(
        f"manifest {node.descriptor.digest}: layer type {media_type!r} has no Docker schema 2 equivalent "
        "(use --format oci)"
    )


def _apply(entry: dict[str, Any], new: Descriptor) -> None:
    entry["mediaType"] = new.media_type
    entry["digest"] = str(new.digest)
    entry["size"] = new.size


def _apply_chunked_annotations(entry: dict[str, Any], new: Descriptor) -> None:
    """A recompressed layer loses the source's zstd:chunked annotations (they describe
    the old blob) and gets the new blob's, if it is zstd:chunked; other annotations stay."""
    kept = {k: v for k, v in (entry.get("annotations") or {}).items() if k not in mediatypes.ZSTD_CHUNKED_KEYS}
    kept.update({k: v for k, v in (new.annotations or {}).items() if k in mediatypes.ZSTD_CHUNKED_KEYS})
    if kept:
        entry["annotations"] = kept
    else:
        entry.pop("annotations", None)


def _set_type(doc: dict[str, Any], media_type: str) -> str:
    if "mediaType" in doc:
        doc["mediaType"] = media_type
    return media_type


def _to_oci_manifest(doc: dict[str, Any]) -> str:
    doc["mediaType"] = mediatypes.OCI_MANIFEST
    if doc["config"].get("mediaType") == mediatypes.DOCKER_CONFIG:
        doc["config"]["mediaType"] = mediatypes.OCI_CONFIG
    for layer in doc["layers"]:
        if layer.get("mediaType") == mediatypes.DOCKER_LAYER:
            layer["mediaType"] = mediatypes.OCI_LAYER_GZIP
        elif layer.get("mediaType") == mediatypes.DOCKER_LAYER_TAR:
            layer["mediaType"] = mediatypes.OCI_LAYER
    return mediatypes.OCI_MANIFEST
