"""Frozen value types for every JSON document ocipush reads or writes, and their converters.

Descriptors, manifests and indexes; image configs (``rootfs.diff_ids``); docker's
``manifest.json`` entries; a destination layout's ``oci-layout`` and ``index.json``; the
``--json`` summary.  The types model what ocipush reads; the bytes pushed are always the
source's own (a manifest's digest is the hash of its exact bytes), so unknown fields need
no modelling.

Two converters: ``converter`` for OCI documents, lenient as registries and tools are about
them, and ``strict`` for the documents whose every field we check (no ``"5"`` for 5, no
string where a list of names belongs).  Every document is parsed by :func:`load_json`:
one size cap, one wording of "invalid JSON", one guard against nesting deeper than
Python's stack.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from . import mediatypes
from .digest import Digest

__all__ = [
    "MAX_CONFIG_SIZE",
    "BlobSummary",
    "Descriptor",
    "DockerImageEntry",
    "ImageConfig",
    "Index",
    "LayoutIndex",
    "Manifest",
    "OciLayout",
    "Platform",
    "PushSummary",
    "RootFS",
    "converter",
    "failed_fields",
    "first_error",
    "load_json",
    "parse_image_config",
    "parse_manifest",
    "sniff_media_type",
    "strict",
]

MAX_CONFIG_SIZE = 16 << 20  # an image config is read whole to hash and parse; real ones are a few KB


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


@attrs.frozen
class RootFS:
    diff_ids: tuple[Digest, ...]


@attrs.frozen
class ImageConfig:
    """The one part of an image config ocipush reads: what each layer decompresses to."""

    rootfs: RootFS

    @property
    def diff_ids(self) -> tuple[Digest, ...]:
        return self.rootfs.diff_ids


@attrs.frozen
class DockerImageEntry:
    """One entry of a docker archive's ``manifest.json`` (``docker save``, podman, crane)."""

    config: str
    layers: tuple[str, ...]
    repo_tags: tuple[str, ...] | None = None  # null and absent alike: untagged
    layer_sources: dict[Digest, Descriptor] | None = None  # by diff_id


@attrs.frozen
class OciLayout:
    """``oci-layout``: the version of the layout; ocipush reads and writes 1.x."""

    image_layout_version: str = ""


@attrs.frozen
class LayoutIndex:
    """``index.json`` of a layout, checked before a destination adds to it."""

    manifests: tuple[Descriptor, ...] = ()


@attrs.frozen
class BlobSummary:
    digest: Digest
    size: int
    media_type: str
    action: str
    pushed_digest: Digest
    pushed_size: int
    requests: int  # chunks the registry accepted
    retries: int  # requests sent again after a transient failure, plus restarts
    requests_by_method: dict[str, int] = attrs.field(factory=dict)  # every request sent, whatever its answer
    restarts: int = 0  # new uploads of the blob after the first
    refused: int = 0  # requests answered 413
    pushed_media_type: str = ""  # as pushed: a recompressed layer's new type, a converted config's
    resumed_at: int | None = None  # an upload an earlier run left went on from this many bytes
    compression: str | None = None  # a pushed layer's: gzip, zstd, zstd:chunked; None otherwise


@attrs.frozen
class PushSummary:
    """``--json``: the keys are the interface CI scripts read; keep them and their order."""

    reference: str
    digest: Digest | None
    dry_run: bool
    seconds: float
    blobs: tuple[BlobSummary, ...]
    chunk_size_learnt: int | None = None  # what unannounced 413s taught; None without any
    notes: tuple[str, ...] = ()  # every note of the push, in order


# JSON's names where they are not the attribute's: OCI's camelCase, docker's CamelCase.
_OCI_NAMES = {
    "media_type": "mediaType",
    "artifact_type": "artifactType",
    "os_version": "os.version",
    "image_layout_version": "imageLayoutVersion",
}
_DOCKER_NAMES = {"config": "Config", "layers": "Layers", "repo_tags": "RepoTags", "layer_sources": "LayerSources"}

converter = cattrs.Converter(forbid_extra_keys=False)
converter.register_structure_hook(Digest, lambda v, _: Digest.parse(v))
converter.register_unstructure_hook(Digest, str)

_T = TypeVar("_T")


def _register(on: cattrs.Converter, cls: type, names: dict[str, str]) -> None:
    over = {f.name: override(rename=names[f.name]) for f in attrs.fields(cls) if f.name in names}
    structure: Any = make_dict_structure_fn  # cattrs types **overrides too narrowly for a dict of them
    unstructure: Any = make_dict_unstructure_fn
    on.register_structure_hook(cls, structure(cls, on, **over))
    on.register_unstructure_hook(cls, unstructure(cls, on, _cattrs_omit_if_default=True, **over))


for _cls in (Platform, Descriptor, Manifest, Index):
    _register(converter, _cls, _OCI_NAMES)


def _exact(kind: type[_T]) -> Callable[[object, type], _T]:
    def structure(value: object, _: type) -> _T:
        if type(value) is not kind:  # no int("12"), no True for 1, no 1.5, no str(5)
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value  # narrowed to _T by the test above

    return structure


def _is_list_tuple(t: object) -> bool:
    """``tuple[X, ...]``: a JSON list, never a string or an object iterated by accident."""
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _list_tuple(value: object, t: type) -> tuple[object, ...]:
    if type(value) is not list:
        raise TypeError(f"expected a list, got {type(value).__name__}")
    item = get_args(t)[0]
    return tuple(strict.structure(v, item) for v in value)


strict = converter.copy()
strict.register_structure_hook(str, _exact(str))
strict.register_structure_hook(int, _exact(int))
strict.register_structure_hook(bool, _exact(bool))
strict.register_structure_hook(Digest, lambda v, _: Digest.parse(_exact(str)(v, str)))
strict.register_structure_hook_func(_is_list_tuple, _list_tuple)
for _strict_cls in (RootFS, ImageConfig, OciLayout, LayoutIndex):
    _register(strict, _strict_cls, _OCI_NAMES)
_register(strict, DockerImageEntry, _DOCKER_NAMES)


def load_json(
    data: bytes | str,
    what: str = "",
    *,
    limit: int | None = None,
    error: Callable[[str], Exception] = ValueError,
    allow_nan: bool = True,
) -> object:
    """The JSON document in ``data``, or ``error`` with one line naming ``what``.

    Every document ocipush reads comes through here, so all say "invalid JSON" alike,
    and one nested deeper than Python's stack (``[[[[…``, hostile or broken) is an error,
    not a RecursionError traceback.  ``allow_nan=False`` refuses the ``NaN`` and
    ``Infinity`` Python's json takes but JSON does not have (a token service's answer).
    """
    prefix = f"{what}: " if what else ""
    if limit is not None and len(data) > limit:
        raise error(f"{prefix}larger than {limit} bytes")
    try:
        return json.loads(data) if allow_nan else json.loads(data, parse_constant=_no_constant)
    except ValueError as e:  # a syntax error, bad UTF-8, NaN, an integer of over 4300 digits
        raise error(f"{prefix}invalid JSON: {e}") from None
    except RecursionError:
        raise error(f"{prefix}invalid JSON: nested too deeply") from None


class _NotJSON(ValueError):
    """A constant Python's json takes (``NaN``, ``Infinity``) where JSON has none."""


def _no_constant(name: str) -> object:
    raise _NotJSON(f"{name} is not JSON")


def first_error(e: BaseException) -> str:
    """One line out of cattrs' grouped errors: the first field at fault and why."""
    if isinstance(e, cattrs.ClassValidationError):
        notes = cattrs.transform_error(e)
        return notes[0] if notes else str(e)
    return str(e)


def failed_fields(e: BaseException) -> list[str]:
    """The attributes a cattrs ClassValidationError is about, outermost first."""
    if not isinstance(e, cattrs.ClassValidationError):
        return []
    names = []
    for inner in e.exceptions:
        names += [n.name for n in getattr(inner, "__notes__", []) if isinstance(n, cattrs.AttributeValidationNote)]
    return names


def parse_image_config(data: bytes, what: str) -> ImageConfig:
    """An image config's ``rootfs.diff_ids``; ValueError with one line naming ``what``."""
    doc = load_json(data, what)
    if not isinstance(doc, dict) or not isinstance(doc.get("rootfs"), dict) or "diff_ids" not in doc["rootfs"]:
        raise ValueError(f"{what}: not an image config (no rootfs.diff_ids)")
    try:
        return strict.structure(doc, ImageConfig)
    except Exception as e:  # cattrs groups every field error; one line is what users read
        raise ValueError(f"{what}: rootfs.diff_ids: {_innermost(e)}") from None


def _innermost(e: BaseException) -> str:
    while isinstance(e, cattrs.BaseValidationError) and e.exceptions:
        e = e.exceptions[0]
    return str(e)


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
    doc = load_json(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    media_type = sniff_media_type(doc, declared)
    if declared and doc.get("mediaType") and doc["mediaType"] != declared:
        raise ValueError(f"mediaType {doc['mediaType']!r} differs from its descriptor's {declared!r}")
    cls: type[Manifest | Index]
    if mediatypes.is_index(media_type):
        cls = Index
    elif mediatypes.is_manifest(media_type):
        cls = Manifest
    else:
        raise ValueError(f"unsupported manifest media type {media_type!r}")
    try:
        return converter.structure({**doc, "mediaType": media_type}, cls)
    except Exception as e:  # cattrs groups every field error; one line is what users read
        raise ValueError(f"malformed {media_type}: {first_error(e)}") from None
