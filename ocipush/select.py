"""``--platform OS/ARCH[/VARIANT]``: keep only the matching images of the source, before planning.

Pure selection on the loaded ``ImageNode`` tree (the one read a caller supplies is the
image config of a manifest that carries no platform of its own):

- one image matches → that manifest itself is pushed (the tag points at it, no index);
- several match → a new index of the source index's media type, holding just their
  entries (and the attestations buildkit linked to them), serialised compactly with the
  source's key order, so the same selection gives the same digest;
- none matches → a UsageError (exit 2) listing the platforms the source holds.

Matching follows containers/image and containerd: os and architecture exactly, the variant
only when the user gave one, all normalised first (``aarch64`` is ``arm64``, ``arm64/v8``
is ``arm64``, ``x86_64`` is ``amd64``, ``armhf`` is ``arm/v7``, …). A single-manifest
source is matched by its image config's ``os``/``architecture``/``variant``: a mismatch
is the same UsageError, so a wrong-platform image is never pushed by mistake.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from .digest import Digest
from .errors import SourceError, UsageError
from .mediatypes import IMAGE_CONFIG_TYPES
from .models import Descriptor, Index, Manifest, Platform, load_json, parse_manifest
from .sources.base import ImageNode, shown_names

__all__ = ["normalise", "parse_platform", "select_platforms"]

_PART = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)
_ATTESTATION_LINK = "vnd.docker.reference.digest"


def parse_platform(text: str) -> Platform:
    """``OS/ARCH[/VARIANT]`` as podman takes it, lower-cased; UsageError otherwise."""
    parts = text.lower().split("/")
    if not 2 <= len(parts) <= 3 or not all(_PART.fullmatch(p) for p in parts):
        shown = text if len(text) <= 60 else f"{text[:60]}…"
        raise UsageError(f"--platform {shown!r}: expected OS/ARCH[/VARIANT], such as linux/amd64 or linux/arm64/v8")
    return Platform(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else None)


def normalise(platform: Platform) -> Platform:
    """containerd's ``platforms.Normalize``: the names one platform goes by, made one."""
    os_name, arch, variant = platform.os.lower(), platform.architecture.lower(), (platform.variant or "").lower()
    if arch == "i386":
        arch, variant = "386", ""
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch, variant = "amd64", "" if variant == "v1" else variant
    elif arch in ("aarch64", "arm64"):
        arch, variant = "arm64", "" if variant in ("8", "v8", "v8.0") else variant
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        variant = "v7" if variant in ("", "7") else f"v{variant}" if variant in ("5", "6", "8") else variant
    return Platform(os=os_name, architecture=arch, variant=variant or None)


def _matches(have: Platform, wanted: Platform) -> bool:
    h, w = normalise(have), normalise(wanted)
    if (h.os, h.architecture) != (w.os, w.architecture):
        return False
    return wanted.variant is None or h.variant == w.variant


@attrs.frozen
class _Candidate:
    node: ImageNode  # the image manifest
    entry: dict[str, Any]  # its entry in the index that holds it, as the source wrote it
    platform: Platform | None


def select_platforms(
    image: ImageNode, wanted: tuple[str, ...], read_config: Callable[[Descriptor], bytes]
) -> ImageNode:
    """``image`` narrowed to the platforms ``wanted``; ``image`` itself when none is given.
    ``read_config`` returns a config blob's verified bytes (platform-less manifests)."""
    if not wanted:
        return image
    platforms = [parse_platform(w) for w in wanted]
    if isinstance(image.parsed, Manifest):
        have = _config_platform(image.parsed, read_config)
        for w in platforms:
            if have is None or not _matches(have, w):
                held = str(have) if have else "no platform (its config names no os/architecture)"
                raise UsageError(f"--platform {w}: the source is a single image of {held}, not {w}")
        return image
    candidates = list(_candidates(image, read_config))
    chosen: dict[Digest, _Candidate] = {}
    for w in platforms:
        found = [c for c in candidates if c.platform is not None and _matches(c.platform, w)]
        if not found:
            raise UsageError(f"--platform {w}: no image of that platform in the source; it holds {_held(candidates)}")
        for c in found:
            chosen.setdefault(c.node.descriptor.digest, c)
    if len(chosen) == 1:
        return next(iter(chosen.values())).node
    return _new_index(image, candidates, chosen)


def _candidates(node: ImageNode, read_config: Callable[[Descriptor], bytes]) -> Iterator[_Candidate]:
    """Every image manifest below the index ``node`` with its entry, indexes flattened."""
    doc = json.loads(node.data)
    for entry, child in zip(doc.get("manifests", []), node.children, strict=True):
        if isinstance(child.parsed, Index):
            yield from _candidates(child, read_config)
            continue
        platform = child.descriptor.platform
        if platform is None and not _is_attestation(entry):
            platform = _config_platform(child.parsed, read_config)
        yield _Candidate(child, entry, platform)


def _is_attestation(entry: dict[str, Any]) -> bool:
    return _ATTESTATION_LINK in (entry.get("annotations") or {})


def _held(candidates: list[_Candidate]) -> str:
    names = list(dict.fromkeys(str(c.platform) for c in candidates if c.platform and not _is_attestation(c.entry)))
    others = sum(1 for c in candidates if c.platform is None and not _is_attestation(c.entry))
    held = [shown_names(names)] if names else []
    if others:
        held.append(f"{others} image(s) without a platform")
    return ", ".join(held) if held else "no image with a platform"


def _config_platform(manifest: Manifest, read_config: Callable[[Descriptor], bytes]) -> Platform | None:
    """os/architecture/variant of an image config; None for an artifact or a config without them."""
    if manifest.config.media_type not in IMAGE_CONFIG_TYPES:
        return None
    what = f"config {manifest.config.digest}"
    doc = load_json(read_config(manifest.config), what, error=SourceError)
    if not isinstance(doc, dict):
        raise SourceError(f"{what}: not a JSON object")
    os_name, arch, variant = doc.get("os"), doc.get("architecture"), doc.get("variant")
    if not (isinstance(os_name, str) and isinstance(arch, str) and os_name and arch):
        return None
    return Platform(os=os_name, architecture=arch, variant=variant if isinstance(variant, str) and variant else None)


def _new_index(image: ImageNode, candidates: list[_Candidate], chosen: dict[Digest, _Candidate]) -> ImageNode:
    """An index like ``image`` holding the chosen entries, in the source's order, and the
    attestations that name one of them."""
    kept = [c for c in candidates if c.node.descriptor.digest in chosen
            or (_is_attestation(c.entry) and _linked(c.entry) in chosen)]
    first: dict[Digest, _Candidate] = {}
    for c in kept:
        first.setdefault(c.node.descriptor.digest, c)
    unique = list(first.values())
    if len(unique) == len(candidates) and not any(c.is_index for c in image.children):
        return image  # every image chosen: the source's index, byte for byte
    doc: dict[str, Any] = json.loads(image.data)
    doc["manifests"] = [c.entry for c in unique]
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    media_type = image.descriptor.media_type
    descriptor = attrs.evolve(image.descriptor, digest=Digest.of(data), size=len(data))
    return ImageNode(descriptor, data, parse_manifest(data, media_type), tuple(c.node for c in unique))


def _linked(entry: dict[str, Any]) -> Digest | None:
    try:
        return Digest.parse(entry["annotations"][_ATTESTATION_LINK])
    except (KeyError, TypeError, ValueError):
        return None
