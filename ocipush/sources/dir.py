"""``dir:PATH`` — the containers ``dir:`` transport: one image as loose files in a directory.

Written by ``skopeo copy … dir:PATH`` and ``podman save --format docker-dir`` (podman's
``oci-dir`` is an OCI layout: read it as ``oci:``). The layout (containers/image
``directory/``):

- ``version``: ``Directory Transport Version: 1.1`` (1.0 named layers ``<hex>.tar``;
  both names are read). A missing file is taken as 1.0, as skopeo reads it; any other
  text is refused: the directory is not what we think it is.
- ``manifest.json``: the image's manifest, or with ``--all`` an index whose entries are
  ``<hex>.manifest.json``. It has no descriptor: its digest is the sha256 of its bytes,
  its media type its own ``mediaType`` or its shape (an OCI manifest may omit it).
- blobs (configs, layers) as ``<hex>`` files, verified against their descriptors as
  every source's are, by the shared walk.
- ``signature-N`` and ``<hex>.signature-N``: signatures, which a registry push does not
  carry; they are left out, and a note says so.

``podman save --format docker-dir`` writes its layers uncompressed but labels them
``…diff.tar.gzip`` (unless given ``--compress``). Pushed as written, such a layer would
lie about its bytes (and could not be recompressed), so every filesystem layer's first
bytes are checked: a layer whose compression is not the one its media type says gets
the media type of what it is, in a corrected manifest served from memory (and any index
above it is corrected too), and a note says so. The pusher then compresses it, as it
does any uncompressed layer.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, BinaryIO, ClassVar

import attrs

from ..digest import Digest
from ..errors import SourceError
from ..mediatypes import DOCKER_LAYER, DOCKER_LAYER_TAR, is_index, is_manifest, layer_compression, layer_type
from ..models import Descriptor, Index, Manifest, parse_manifest, sniff_media_type
from ..reference import SourceSpec
from .base import MAX_MANIFEST_SIZE, ManifestBudget, Source, read_manifest
from .store import DirStore, open_sized, parse_json, read_bytes
from .tarindex import sniff_compression

__all__ = ["DirImage", "open_dir"]

_VERSION_RE = re.compile(rb"Directory Transport Version: 1\.[01]\n?")
_SIGNATURE_RE = re.compile(r"(?:[0-9a-f]{64}\.)?signature-[0-9]+")
# Schema 2 has names for a plain and a gzip layer (zstd has only the OCI one).
_DOCKER_TYPES: dict[str | None, str] = {None: DOCKER_LAYER_TAR, "gzip": DOCKER_LAYER}


@attrs.frozen
class _Directory(DirStore):
    """A DirStore whose messages say "directory", not "layout"."""

    kind: ClassVar[str] = "directory"


def open_dir(spec: SourceSpec) -> DirImage:
    return DirImage(_Directory(spec.path), name=str(spec))


class DirImage(Source):
    """The image in a ``dir:`` directory (the whole index, when it holds one)."""

    def __init__(self, store: DirStore, *, name: str):
        self.store = store
        self.name = name
        self.notes: list[str] = []
        self._memory: dict[Digest, bytes] = {}  # manifest.json, and any corrected manifest
        self._made_from: dict[Digest, str] = {}  # where each of those came from, for messages
        self._checked: dict[Digest, Descriptor] = {}  # manifest → its corrected descriptor (or itself)
        self._budget = ManifestBudget(name)  # the distinct manifests that check reads
        self._root: Descriptor | None = None

    def root(self) -> Descriptor:
        if self._root is None:
            self._check_version()
            self._root = self._corrected(self._read_top(), depth=0)
            self._note_signatures()
        return self._root

    def describe_blob(self, desc: Descriptor) -> str:
        if desc.digest in self._memory:
            return f"manifest {desc.digest} ({self._made_from[desc.digest]})"
        return self._described(desc, self._file(desc))

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        if desc.digest in self._memory:
            data = self._memory[desc.digest]
            if len(data) != desc.size:
                raise SourceError(f"{self.describe_blob(desc)}: {len(data)} bytes, descriptor says {desc.size}")
            return io.BytesIO(data)
        name = self._file(desc)  # looked up once: up to three names tried on disk
        return open_sized(self.store, name, desc.size, self._described(desc, name))

    def close(self) -> None:
        self.store.close()

    # -- files ----------------------------------------------------------------------

    def _described(self, desc: Descriptor, name: str) -> str:
        return f"blob {desc.digest} ({self.store.describe(name)})"

    def _file(self, desc: Descriptor) -> str:
        """The file holding ``desc``: ``<hex>.manifest.json`` for an index's entries,
        ``<hex>``, or version 1.0's ``<hex>.tar`` for a layer; the first that exists
        (``<hex>`` when none does, for the "missing" message)."""
        if desc.digest.algorithm != "sha256":
            raise SourceError(f"{self.name}: blob {desc.digest}: the dir: transport names blobs by sha256 only")
        hex_ = desc.digest.hex
        names = [f"{hex_}.manifest.json"] if is_manifest(desc.media_type) or is_index(desc.media_type) else []
        names += [hex_, f"{hex_}.tar"]
        for name in names:
            if (self.store.path / name).exists():
                return name
        return hex_

    def _check_version(self) -> None:
        try:
            text = read_bytes(self.store, "version", 256)
        except FileNotFoundError:
            if not (self.store.path / "manifest.json").exists():
                raise SourceError(
                    f"{self.store.describe('manifest.json')}: missing: {self.store.label} is not a dir: image "
                    "(no version nor manifest.json)"
                ) from None
            return  # written before the version file existed: 1.0
        if not _VERSION_RE.fullmatch(text):
            raise SourceError(
                f"{self.store.describe('version')}: unsupported {text[:60].decode('utf-8', 'replace')!r} "
                "(need 'Directory Transport Version: 1.1' or 1.0)"
            )

    def _read_top(self) -> Descriptor:
        where = self.store.describe("manifest.json")
        try:
            data = read_bytes(self.store, "manifest.json", MAX_MANIFEST_SIZE)
        except FileNotFoundError:
            raise SourceError(f"{where}: missing: {self.store.label} is not a dir: image") from None
        doc = parse_json(data, where)
        if not isinstance(doc, dict):
            raise SourceError(f"{where}: not a JSON object")
        media_type = sniff_media_type(doc)
        if not (is_manifest(media_type) or is_index(media_type)):
            why = "a schema 1 manifest (push it with skopeo)" if doc.get("schemaVersion") == 1 else repr(media_type)
            raise SourceError(f"{where}: unsupported manifest media type {why}")
        desc = Descriptor(media_type, Digest.of(data), len(data))
        self._memory[desc.digest] = data
        self._made_from[desc.digest] = where
        return desc

    def _note_signatures(self) -> None:
        try:
            names = sorted(p.name for p in self.store.path.iterdir() if _SIGNATURE_RE.fullmatch(p.name))
        except OSError as e:
            raise SourceError(f"{self.store.label}: {e.strerror}") from None
        if names:
            self.notes.append(
                f"{self.store.label}: {len(names)} signature file(s) ({', '.join(names[:3])}"
                f"{', …' if len(names) > 3 else ''}) not pushed: ocipush pushes no signatures"
            )

    # -- layers labelled with a compression they do not have --------------------------

    def _corrected(self, desc: Descriptor, depth: int) -> Descriptor:
        """``desc``, or the descriptor of a corrected copy of its manifest when a layer
        below it is labelled with a compression its bytes do not have.  Each manifest is
        looked at once (an index may list one child many times, and a walk per path to it
        would read it fan-out ** depth times), and no more of them than ``load_image``
        would take (``ManifestBudget``): the corrected copies are held in memory."""
        done = self._checked.get(desc.digest)
        if done is None:
            self._budget.admit(desc, [desc])
            done = self._checked[desc.digest] = self._correct(desc, depth)
        return attrs.evolve(desc, digest=done.digest, size=done.size)

    def _correct(self, desc: Descriptor, depth: int) -> Descriptor:
        data, parsed = read_manifest(self, desc, depth)
        if isinstance(parsed, Index):
            children = [self._corrected(child, depth + 1) for child in parsed.manifests]
            if children == parsed.manifests:
                return desc
            return self._remember(desc, data, "manifests", dict(enumerate(children)))
        assert isinstance(parsed, Manifest)
        fixed = {i: d for i, layer in enumerate(parsed.layers) if (d := self._true_layer(layer)) != layer}
        if not fixed:
            return desc
        self.notes.append(
            f"{self.name}: {len(fixed)} layer(s) labelled compressed are plain tar "
            "(podman save --format docker-dir writes them so); pushed with the media type of what they are"
        )
        return self._remember(desc, data, "layers", fixed)

    def _true_layer(self, layer: Descriptor) -> Descriptor:
        is_fs, claimed = layer_compression(layer.media_type)
        if not is_fs:
            return layer
        with self.open_blob(layer) as f:
            actual = sniff_compression(f)
        if actual == claimed:
            return layer
        if layer.media_type in (DOCKER_LAYER, DOCKER_LAYER_TAR) and actual in _DOCKER_TYPES:
            return attrs.evolve(layer, media_type=_DOCKER_TYPES[actual])  # keep schema 2 names in schema 2
        if actual is None or actual in ("gzip", "zstd"):
            return attrs.evolve(layer, media_type=layer_type(actual))
        raise SourceError(f"{self.describe_blob(layer)}: {actual}-compressed, but its media type says {claimed}")

    def _remember(self, desc: Descriptor, data: bytes, field: str, changed: dict[int, Descriptor]) -> Descriptor:
        """A copy of the manifest ``data`` whose ``field`` entries at the ``changed``
        positions take the new media type, digest and size; kept in memory."""
        doc: dict[str, Any] = json.loads(data)
        for i, new in changed.items():
            doc[field][i].update(mediaType=new.media_type, digest=str(new.digest), size=new.size)
        out = json.dumps(doc, separators=(",", ":")).encode()
        parse_manifest(out, desc.media_type)  # still a valid manifest, as a check of the edit
        new_desc = attrs.evolve(desc, digest=Digest.of(out), size=len(out))
        self._memory[new_desc.digest] = out
        self._made_from[new_desc.digest] = f"corrected from {self.describe_blob(desc)}"
        return new_desc
