"""Generate valid OCI image layouts of any size at test time.

Committed fixtures (fixtures/oci/) are tiny; integration tests and benchmarks
need big layers, so they build them here instead. Everything is pure Python
and reproducible: the same arguments and seed give byte-identical blobs.

Layers are streamed to disk: the tar is written through the compressor while
both the tar (diff_id) and the compressed blob (digest) are hashed, so a 1 GB
layer never sits in memory.

    info = make_layout(tmp_path / "img", [LayerSpec(20 << 20, "text"), 4096])
    info.digest, info.layers[0].diff_id, info.layers[0].path
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
REF_ANNOTATION = "org.opencontainers.image.ref.name"

# Pinned timestamps keep output reproducible (the same instant as the
# fixtures' SOURCE_DATE_EPOCH).
EPOCH = 1700000000
CREATED = "2023-11-14T22:13:20Z"

CHUNK = 1 << 20  # tar copy size: big enough that per-call overhead is noise


@dataclass(frozen=True)
class LayerSpec:
    """What to put in one layer.

    size: bytes of file content (the tar adds ~1 KB of headers per file).
    kind: "random" (incompressible bytes) or "text" (compressible lines).
    files: how many files under the layer's directory share that content.
    compression: "gzip", "zstd" or "none"; None takes the image's default.
    level: compression level; None picks a fast one (see _default_level).
    """

    size: int
    kind: str = "random"
    files: int = 1
    compression: str | None = None
    level: int | None = None


@dataclass(frozen=True)
class Blob:
    media_type: str
    digest: str
    size: int
    path: Path

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Layer(Blob):
    diff_id: str  # sha256 of the uncompressed tar, as in config rootfs.diff_ids
    tar_size: int


@dataclass(frozen=True)
class ImageInfo:
    layout: Path
    ref: str | None  # None for an image that is only reachable via an index
    platform: tuple[str, ...]  # (os, architecture[, variant])
    manifest: Blob
    config: Blob
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def blobs(self) -> list[Blob]:
        return [self.manifest, self.config, *self.layers]


@dataclass(frozen=True)
class IndexInfo:
    layout: Path
    ref: str
    index: Blob
    images: tuple[ImageInfo, ...]

    @property
    def digest(self) -> str:
        return self.index.digest

    @property
    def blobs(self) -> list[Blob]:
        return [self.index, *(b for image in self.images for b in image.blobs)]


def make_layout(
    path: str | os.PathLike,
    layers: Sequence[LayerSpec | int],
    *,
    ref: str = "latest",
    compression: str = "gzip",
    platform: tuple[str, ...] = ("linux", "amd64"),
    seed: int | str = 0,
) -> ImageInfo:
    """Write one image into the OCI layout at `path` and tag it `ref`.

    An int in `layers` is shorthand for LayerSpec(size) of random bytes.
    Calling again on the same layout adds (or retags) another ref.
    """
    layout = _init_layout(Path(path))
    image = _write_image(layout, layers, compression, platform, seed)
    _tag(layout, image.manifest.descriptor(), ref)
    return dataclasses.replace(image, ref=ref)


def make_index_layout(
    path: str | os.PathLike,
    layers: Sequence[LayerSpec | int],
    *,
    platforms: Sequence[tuple[str, ...]] = (("linux", "amd64"), ("linux", "arm64")),
    ref: str = "multi",
    compression: str = "gzip",
    seed: int | str = 0,
) -> IndexInfo:
    """Write an image index with one image per platform, tagged `ref`.

    Every image gets the same layer specs but its own content, as real
    per-architecture builds do.
    """
    layout = _init_layout(Path(path))
    images = tuple(
        _write_image(layout, layers, compression, p, f"{seed}/{'/'.join(p)}")
        for p in platforms
    )
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {**image.manifest.descriptor(), "platform": _platform_fields(image.platform)}
            for image in images
        ],
    }
    blob = _write_blob(layout, INDEX, _json_bytes(index))
    _tag(layout, blob.descriptor(), ref)
    return IndexInfo(layout, ref, blob, images)


def flip_byte(blob: Blob | os.PathLike, offset: int | None = None) -> None:
    """Invert one byte (default: the middle one): same size, wrong digest."""
    path = _path(blob)
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2 if offset is None else offset)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate_blob(blob: Blob | os.PathLike, size: int | None = None) -> None:
    """Cut the blob to `size` bytes (default: half of it)."""
    path = _path(blob)
    os.truncate(path, os.path.getsize(path) // 2 if size is None else size)


def remove_blob(blob: Blob | os.PathLike) -> None:
    _path(blob).unlink()


def rewrite_manifest(info: ImageInfo, data: bytes) -> None:
    """Replace the layout's first manifest by ``data``, keeping the index entry honest about
    its size and digest, so what a reader refuses is the manifest itself."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (info.layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    index = json.loads((info.layout / "index.json").read_text())
    index["manifests"][0].update(digest=digest, size=len(data))
    (info.layout / "index.json").write_text(json.dumps(index))


def _path(blob: Blob | os.PathLike) -> Path:
    return blob.path if isinstance(blob, Blob) else Path(blob)


def _init_layout(layout: Path) -> Path:
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    if not (layout / "index.json").exists():
        _write_index_json(layout, [])
    return layout


def _tag(layout: Path, descriptor: dict, ref: str) -> None:
    """Point `ref` in index.json at `descriptor`, replacing any old target."""
    entries = json.loads((layout / "index.json").read_bytes())["manifests"]
    entries = [e for e in entries if e.get("annotations", {}).get(REF_ANNOTATION) != ref]
    entries.append({**descriptor, "annotations": {REF_ANNOTATION: ref}})
    _write_index_json(layout, entries)


def _write_index_json(layout: Path, entries: list[dict]) -> None:
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}
    (layout / "index.json").write_bytes(_json_bytes(index))


def _write_image(
    layout: Path,
    layers: Sequence[LayerSpec | int],
    compression: str,
    platform: tuple[str, ...],
    seed: int | str,
) -> ImageInfo:
    written = tuple(
        _write_layer(layout, spec, i, compression, random.Random(f"{seed}/{i}"))
        for i, spec in enumerate(_spec(s) for s in layers)
    )
    config = {
        "created": CREATED,
        **_platform_fields(platform),
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in written]},
        "history": [
            {"created": CREATED, "created_by": f"imagegen layer {i}"}
            for i in range(len(written))
        ],
    }
    config_blob = _write_blob(layout, CONFIG, _json_bytes(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor() for layer in written],
    }
    manifest_blob = _write_blob(layout, MANIFEST, _json_bytes(manifest))
    return ImageInfo(layout, None, tuple(platform), manifest_blob, config_blob, written)


def _spec(spec: LayerSpec | int) -> LayerSpec:
    return spec if isinstance(spec, LayerSpec) else LayerSpec(spec)


def _platform_fields(platform: tuple[str, ...]) -> dict:
    fields = {"architecture": platform[1], "os": platform[0]}
    if len(platform) > 2:
        fields["variant"] = platform[2]
    return fields


def _json_bytes(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _write_blob(layout: Path, media_type: str, data: bytes) -> Blob:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = _blob_path(layout, digest)
    path.write_bytes(data)
    return Blob(media_type, digest, len(data), path)


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def _write_layer(
    layout: Path, spec: LayerSpec, index: int, default_compression: str, rng: random.Random
) -> Layer:
    compression = spec.compression or default_compression
    level = _default_level(compression, spec.kind) if spec.level is None else spec.level
    # Stream into a temp file beside the blobs: the name (digest) is known
    # only at the end, and the rename is atomic.
    fd, tmp = tempfile.mkstemp(dir=layout / "blobs" / "sha256", prefix=".tmp-")
    with os.fdopen(fd, "wb") as out:
        sink = _LayerSink(out, _compressor(compression, level))
        _write_tar(sink, spec, f"layer{index}", rng)
        sink.close()
    digest = "sha256:" + sink.blob_sha.hexdigest()
    path = _blob_path(layout, digest)
    os.replace(tmp, path)
    diff_id = "sha256:" + sink.tar_sha.hexdigest()
    return Layer(LAYER_MEDIA_TYPES[compression], digest, sink.blob_size, path,
                 diff_id, sink.tar_size)


def _default_level(compression: str, kind: str) -> int | None:
    if compression == "gzip":
        # Deflate cannot shrink random bytes, and at any level >= 1 it crawls
        # through them (~50 MB/s here); level 0 (stored blocks) gives the
        # same size at GB/s. Text gets a real, fast level.
        return 0 if kind == "random" else 1
    return 3 if compression == "zstd" else None


def _compressor(compression: str, level: int | None):
    """An object with compress()/flush(), or None for an uncompressed tar."""
    if compression == "gzip":
        # wbits=31: gzip framing with a zero mtime, so output is reproducible.
        return zlib.compressobj(level, zlib.DEFLATED, 31)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=level).compressobj()
    if compression == "none":
        return None
    raise ValueError(f"unknown compression {compression!r}")


class _LayerSink:
    """Write-only file for tarfile: hashes the tar, compresses it, hashes and
    writes the compressed bytes. tell() is what tarfile needs in "w" mode."""

    def __init__(self, out, compressor):
        self.out = out
        self.compressor = compressor
        self.tar_sha = hashlib.sha256()
        self.tar_size = 0
        self.blob_sha = hashlib.sha256()
        self.blob_size = 0

    def write(self, data) -> int:
        self.tar_sha.update(data)
        self.tar_size += len(data)
        self._emit(self.compressor.compress(data) if self.compressor else data)
        return len(data)

    def tell(self) -> int:
        return self.tar_size

    def close(self) -> None:
        if self.compressor:
            self._emit(self.compressor.flush())

    def _emit(self, data) -> None:
        self.blob_sha.update(data)
        self.blob_size += len(data)
        self.out.write(data)


def _write_tar(sink: _LayerSink, spec: LayerSpec, top: str, rng: random.Random) -> None:
    """A directory `top` holding spec.files files with spec.size bytes in all."""
    content = _Content(spec.kind, rng)
    sizes = [spec.size // spec.files] * spec.files
    sizes[-1] += spec.size % spec.files
    suffix = "txt" if spec.kind == "text" else "bin"
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT,
                      copybufsize=CHUNK) as tar:
        tar.addfile(_tarinfo(top, tarfile.DIRTYPE, 0o755, 0))
        for i, size in enumerate(sizes):
            info = _tarinfo(f"{top}/file{i}.{suffix}", tarfile.REGTYPE, 0o644, size)
            tar.addfile(info, content)


def _tarinfo(name: str, type_: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = type_, mode, size, EPOCH
    info.uname = info.gname = "root"
    return info


class _Content:
    """Endless seeded byte source that tarfile reads file data from."""

    WORDS = (
        "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do", "eiusmod",
        "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "enim", "ad", "minim", "veniam",
        "quis", "nostrud", "exercitation", "ullamco", "laboris",
    )

    def __init__(self, kind: str, rng: random.Random):
        if kind not in ("random", "text"):
            raise ValueError(f"unknown layer kind {kind!r}")
        self.kind = kind
        self.rng = rng
        self.pending = bytearray()
        if kind == "text":
            # Picking whole lines from a pool is ~100x faster than picking
            # words, and still compresses like real text (gzip ~5x).
            self.lines = [
                " ".join(rng.choices(self.WORDS, k=rng.randint(4, 14))) + "\n"
                for _ in range(4096)
            ]

    def read(self, n: int) -> bytes:
        if self.kind == "random":
            return self.rng.randbytes(n)
        while len(self.pending) < n:
            self.pending += "".join(self.rng.choices(self.lines, k=4096)).encode()
        data = bytes(self.pending[:n])
        del self.pending[:n]
        return data
