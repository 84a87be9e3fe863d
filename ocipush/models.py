"""Frozen value types for descriptors, manifests and indexes, and the one converter.

The types model what ocipush reads; the bytes pushed are always the source's own (a
manifest's digest is the hash of its exact bytes), so unknown fields need no modelling.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from . import mediatypes
from .digest import Digest

__all__ = [
    "Descriptor",
    "Index",
    "Manifest",
    "Platform",
    "converter",
    "parse_manifest",
    "sniff_media_type",
]


@attrs.frozen
class Platform:
    architecture: str
    os: str
    variant: str | None = None
    os_version: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@attrs.frozen
class Descriptor:
    media_type: str
    digest: Digest
    size: int = attrs.field(validator=attrs.validators.ge(0))
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    urls: list[str] | None = None
    artifact_type: str | None = None

    @property
    def ref_name(self) -> str | None:
        return (self.annotations or {}).get("org.opencontainers.image.ref.name")


@attrs.frozen
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    subject: Descriptor | None = None

    @property
    def blobs(self) -> list[Descriptor]:
        return [self.config, *self.layers]


@attrs.frozen
class Index:
    media_type: str
    manifests: list[Descriptor]
    subject: Descriptor | None = None


converter = cattrs.Converter(forbid_extra_keys=False)
converter.register_structure_hook(Digest, lambda v, _: Digest.parse(v))
converter.register_unstructure_hook(Digest, str)

_RENAMES = {
    "media_type": "mediaType",
    "artifact_type": "artifactType",
    "os_version": "os.version",
}
for _cls in (Platform, Descriptor, Manifest, Index):
    _over = {
        f.name: override(rename=_RENAMES[f.name])
        for f in attrs.fields(_cls)
        if f.name in _RENAMES
    }
    converter.register_structure_hook(_cls, make_dict_structure_fn(_cls, converter, **_over))
    converter.register_unstructure_hook(
        _cls, make_dict_unstructure_fn(_cls, converter, _cattrs_omit_if_default=True, **_over)
    )


def sniff_media_type(doc: dict[str, Any], declared: str | None = None) -> str:
    """The media type of a manifest document: its own field, the descriptor's, or its shape.

    OCI manifests may omit ``mediaType``; an object with ``manifests`` is an index, one
    with ``config`` and ``layers`` an image manifest.
    """
    own = doc.get("mediaType")
    if isinstance(own, str) and own:
        return own
    if declared:
        return declared
    if "manifests" in doc:
        return mediatypes.OCI_INDEX
    if "config" in doc and "layers" in doc:
        return mediatypes.OCI_MANIFEST
    return ""


def parse_manifest(data: bytes, declared: str | None = None) -> Manifest | Index:
    """Parse manifest or index bytes; raises ``ValueError`` with a reason for anything else."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"invalid JSON: {e}") from None
    except RecursionError:  # a document nested deeper than Python's stack: hostile or broken
        raise ValueError("invalid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    media_type = sniff_media_type(doc, declared)
    if declared and doc.get("mediaType") and doc["mediaType"] != declared:
        raise ValueError(f"mediaType {doc['mediaType']!r} differs from its descriptor's {declared!r}")
    if mediatypes.is_index(media_type):
        cls: type = Index
    elif mediatypes.is_manifest(media_type):
        cls = Manifest
    else:
        raise ValueError(f"unsupported manifest media type {media_type!r}")
    try:
        return converter.structure({**doc, "mediaType": media_type}, cls)
    except Exception as e:  # cattrs groups every field error; one line is what users read
        raise ValueError(f"malformed {media_type}: {_first_error(e)}") from None


def _first_error(e: BaseException) -> str:
    if isinstance(e, cattrs.ClassValidationError):
        notes = cattrs.transform_error(e)
        return notes[0] if notes else str(e)
    return str(e)
