"""What every source offers, and the walk from a root descriptor to every blob.

A source (one module per transport) only has to find its root descriptor and open a
blob by descriptor; the walk, the verification and the size limits are shared here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Protocol, Self

import attrs

from ..content import FileContent
from ..digest import Digest
from ..errors import SourceError
from ..mediatypes import is_foreign_layer, is_index, is_manifest
from ..models import Descriptor, Index, Manifest, parse_manifest

__all__ = [
    "MAX_INDEX_DEPTH",
    "MAX_MANIFESTS",
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_SIZE",
    "ImageNode",
    "ManifestBudget",
    "Source",
    "load_image",
    "parse_position",
    "read_manifest",
    "read_verified",
    "shown",
    "shown_names",
]

# Registries refuse bigger manifests (distribution's default limit), so we refuse to read them.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
# Indexes may nest (an index of indexes), but a deeper tree is a malformed source.
MAX_INDEX_DEPTH = 8
# The whole tree, which ``load_image`` holds in memory: an index may list the same child
# many times, so a few KB at each of 8 levels could name 1000 ** 8 manifests.  The largest
# real indexes list a few hundred (every platform, and an attestation for each).
MAX_MANIFESTS = 10_000
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


class Source(Protocol):
    """An image on disk. ``name`` is how the user wrote it, for messages; ``notes`` are
    what the user should hear about the read (platforms an archive lacks, …).

    ``close()`` deletes temporary files (a decompressed archive, a ``docker save``); use
    the source as a context manager. Sources may subclass this for those defaults.
    """

    name: str
    notes: list[str]

    def root(self) -> Descriptor:
        """The descriptor of the selected image manifest or index."""

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        """A fresh, unverified byte stream of the blob; SourceError when it is missing or
        its stored size differs from the descriptor's."""

    def describe_blob(self, desc: Descriptor) -> str:
        """Where the blob lives, for messages: a file path or an archive member."""

    def close(self) -> None:
        """Release temporary files; streams opened before may not be read after."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@attrs.frozen
class ImageNode:
    """A manifest or index as read from the source: its descriptor, exact bytes, parsed form."""

    descriptor: Descriptor
    data: bytes
    parsed: Manifest | Index
    children: tuple[ImageNode, ...] = ()

    @property
    def is_index(self) -> bool:
        return isinstance(self.parsed, Index)

    def walk(self) -> Iterator[ImageNode]:
        """Every node, children before their parents (the order a registry accepts them)."""
        for child in self.children:
            yield from child.walk()
        yield self

    def blobs(self) -> list[Descriptor]:
        """Every distinct blob of every manifest below this node, in first-seen order;
        foreign layers excluded (registries fetch those from their URLs)."""
        seen: dict[Digest, Descriptor] = {}
        for node in self.walk():
            if isinstance(node.parsed, Manifest):
                for d in node.parsed.blobs:
                    if not is_foreign_layer(d.media_type):
                        seen.setdefault(d.digest, d)
        return list(seen.values())


def parse_position(key: str) -> int | None:
    """``N`` of a ``@N`` selector, or None when ``key`` is not ASCII digits (``str.isdigit``
    takes ``²``, which ``int`` refuses). Digits too many for any catalogue give a position
    past the end, so the caller says "no such image" as for any other."""
    if not (key.isascii() and key.isdigit()):
        return None
    return int(key) if len(key) <= 18 else 10**18


def shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a one-line message, cut to a readable length."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def shown_names(names: list[str], most: int = 12, width: int = 40) -> str:
    """Names a source made up (platforms, tags) listed in a one-line message: the first
    ``most``, each cut to ``width`` characters, and how many more there are."""
    cut = [name if len(name) <= width else f"{name[:width]}…" for name in names[:most]]
    more = len(names) - len(cut)
    return ", ".join(cut) + (f" and {more} more" if more > 0 else "")


def read_verified(source: Source, desc: Descriptor, limit: int) -> bytes:
    what = source.describe_blob(desc)
    if desc.size > limit:
        raise SourceError(f"{what}: {desc.size} bytes is over the {limit}-byte limit for manifests")
    return FileContent(lambda: source.open_blob(desc), desc.digest, desc.size, what).read_all()


def load_image(source: Source) -> ImageNode:
    """Read the root and every manifest below it, verified; check every blob is present."""
    root = _Loader(source).root(source.root())
    for blob in root.blobs():
        source.open_blob(blob).close()  # fail before uploading anything if one is missing
    return root


def read_manifest(source: Source, desc: Descriptor, depth: int) -> tuple[bytes, Manifest | Index]:
    """A manifest or index at nesting ``depth``: its exact bytes, verified, and parsed."""
    if depth > MAX_INDEX_DEPTH:  # indexes may nest, but not forever
        raise SourceError(f"{source.name}: indexes nested deeper than {MAX_INDEX_DEPTH} levels at {desc.digest}")
    if not (is_index(desc.media_type) or is_manifest(desc.media_type)):
        raise SourceError(
            f"{source.describe_blob(desc)}: unsupported manifest media type {desc.media_type!r}"
        )
    data = read_verified(source, desc, MAX_MANIFEST_SIZE)
    try:
        return data, parse_manifest(data, desc.media_type)
    except ValueError as e:
        raise SourceError(f"{source.describe_blob(desc)}: {e}") from None


class ManifestBudget:
    """What a walk down from a root may read: at most ``MAX_MANIFESTS`` manifests of
    ``MAX_MANIFEST_BYTES`` in all.  ``admit`` the descriptors before reading them, so an
    index that lists too many is refused before any of its children is read."""

    def __init__(self, source_name: str):
        self.source_name = source_name
        self.count = 0
        self.bytes = 0

    def admit(self, parent: Descriptor, descs: list[Descriptor]) -> None:
        self.count += len(descs)
        self.bytes += sum(max(d.size, 0) for d in descs)
        if self.count > MAX_MANIFESTS:
            what = f"more than {MAX_MANIFESTS} manifests"
        elif self.bytes > MAX_MANIFEST_BYTES:
            what = f"more than {MAX_MANIFEST_BYTES} bytes of manifests"
        else:
            return
        raise SourceError(f"{self.source_name}: {what} in all below its root (index {parent.digest}); refused")


class _Loader:
    """The walk of ``load_image``: the tree it builds is held in memory, duplicates
    included, so every node counts against the budget."""

    def __init__(self, source: Source):
        self.source = source
        self.budget = ManifestBudget(source.name)

    def root(self, desc: Descriptor) -> ImageNode:
        self.budget.admit(desc, [desc])
        return self._node(desc, depth=0)

    def _node(self, desc: Descriptor, depth: int) -> ImageNode:
        data, parsed = read_manifest(self.source, desc, depth)
        children: tuple[ImageNode, ...] = ()
        if isinstance(parsed, Index):
            self.budget.admit(desc, parsed.manifests)
            children = tuple(self._node(d, depth + 1) for d in parsed.manifests)
        return ImageNode(desc, data, parsed, children)
