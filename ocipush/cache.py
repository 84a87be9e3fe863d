"""What recompression produced before, kept so an unchanged re-push need not compress
again: (source digest, format, level, diff_id, compressor) → (digest, size, repositories
it was pushed to).  The push then asks the registry for the known output (``HEAD``) or
mounts it from another repository of the same registry.

The cache is a hint, never trusted, because other jobs may share it and files rot:

- An entry is a small JSON document parsed strictly into a typed model (cattrs; exact
  types, a size from 0 to 2**62, registry locations by their grammar) and sealed with an
  HMAC of its fields under a key of this user's kept outside the cache (``seal.py``), so
  any damage — truncation, random bytes, a changed size or digest — and any entry written
  elsewhere (a cache restored by a CI step, copied, or forged) is a miss.  It records
  everything it was made from (``CacheKey``) and is used only when all of it matches
  what the push would compress now: an entry swapped with another layer's, or made for
  another diff_id or by another compressor version, is ignored.
- Like ssh with ``~/.ssh``, the cache is not used when its directory, ``blobs/`` or an
  entry is writable by group or others, or not owned by the user, and a note says why.
  The directories are created ``0700``, entries ``0600``.  Entries are opened without
  following symlinks and without blocking (a FIFO is refused, not waited on), and read
  up to 64 KiB.
- What the cache says is still checked against the registry by the caller (push.py):
  a skip needs a ``HEAD`` whose digest and ``Content-Length`` match the entry, a mount is
  confirmed by a ``HEAD`` afterwards; any contradiction drops the entry and the layer is
  compressed and uploaded again.
- Writes go to a temporary file in ``blobs/``, renamed into place: concurrent runs never
  see half an entry, the last writer wins.  Any ``OSError`` (a full disk, a read-only
  directory) removes the temporary file and costs only speed: a note, never a failed push.

Problems are told through the ``note`` callable given to each call, each message once per
``BlobCache`` (a push of 40 layers to a full disk says so once).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs

from .compression import FORMATS, zstd_version
from .digest import Digest
from .mediatypes import ZSTD_CHUNKED_KEYS
from .models import load_json, strict
from .pgzip import version as gzip_version
from .seal import (
    Note,
    SealedStore,
    UnsafeFile,
    cache_home,
    check_private_dirs,
    document_sum,
    read_entry,
    silent,
    unsealed,
    write_private,
)
from .zstdchunked import WRITER_VERSION as ZSTD_CHUNKED_VERSION

__all__ = ["BlobCache", "CacheKey", "CachedBlob", "compressor_of", "default_cache_dir"]

_VERSION = 2  # older entries (no key, no checksum) are quiet misses, rewritten by the next push
_MAX_ENTRY = 64 * 1024
_MAX_SIZE = 2**62
_MAX_LOCATIONS = 16
# "registry/repository" as Reference.name writes it: a host[:port] (or [IPv6]:port), then
# repository components.  Anything else (a path, a query, "..") is refused.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LOCATION = re.compile(
    rf"(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]{{0,253}}[a-zA-Z0-9])?|\[[0-9a-fA-F:.]{{2,45}}\])(?::[0-9]{{1,5}})?"
    rf"/{_COMPONENT}(?:/{_COMPONENT})*"
)



def compressor_of(fmt: str) -> str:
    """The library and version that compress ``fmt``: another version may produce other
    bytes for the same input, so its entries are not this one's."""
    if fmt == "zstd":
        return zstd_version()  # the multithreaded mode's job size and window shape the bytes too
    if fmt == "zstd:chunked":  # single-threaded frames, one per file (zstd_version names the library too)
        return f"ocipush zstd:chunked {ZSTD_CHUNKED_VERSION} {zstd_version()}"
    return gzip_version()


def _compressor_default(key: CacheKey) -> str:
    return compressor_of(key.format)


@attrs.frozen
class CacheKey:
    """What an output is made from: the source layer, the format and level, the diff_id the
    uncompressed tar was verified against, and the compressor that made it."""

    source: Digest
    format: str = attrs.field(validator=attrs.validators.in_(FORMATS))
    level: int
    diff_id: Digest
    compressor: str = attrs.field(default=attrs.Factory(_compressor_default, takes_self=True))


def _location(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    if len(value) > _MAX_LOCATIONS or not all(len(v) <= 512 and _LOCATION.fullmatch(v) for v in value):
        raise ValueError("not a list of registry/repository locations")


def _annotations(instance: object, attribute: attrs.Attribute[dict[str, str]], value: dict[str, str]) -> None:
    """Only zstd:chunked's three layer annotations, each a digest or numbers."""
    if not all(k in _CHUNKED_KEYS and _CHUNKED_VALUE.fullmatch(v) for k, v in value.items()):
        raise ValueError("not zstd:chunked layer annotations")


_CHUNKED_KEYS = frozenset(k for k in ZSTD_CHUNKED_KEYS if k.startswith("io.github."))
_CHUNKED_VALUE = re.compile(r"sha256:[0-9a-f]{64}|[0-9]{1,19}(?::[0-9]{1,19}){2,3}")


@attrs.frozen
class CachedBlob:
    digest: Digest
    size: int = attrs.field(validator=[attrs.validators.ge(0), attrs.validators.le(_MAX_SIZE)])
    locations: tuple[str, ...] = attrs.field(default=(), validator=_location)  # "registry/repository"
    # zstd:chunked: where the TOC is, for the layer descriptor of a skipped or mounted blob
    annotations: dict[str, str] = attrs.field(factory=dict, validator=_annotations)


@attrs.frozen
class _Entry:
    """The document on disk: version, key, blob, and ``sum`` (the seal of the rest)."""

    version: int
    source: Digest
    format: str = attrs.field(validator=attrs.validators.in_(FORMATS))
    level: int = attrs.field(validator=[attrs.validators.ge(0), attrs.validators.le(99)])
    diff_id: Digest
    compressor: str = attrs.field(validator=attrs.validators.max_len(200))
    digest: Digest
    size: int = attrs.field(validator=[attrs.validators.ge(0), attrs.validators.le(_MAX_SIZE)])
    locations: tuple[str, ...] = attrs.field(validator=_location)
    sum: str
    annotations: dict[str, str] = attrs.field(factory=dict, validator=_annotations)

    @property
    def key(self) -> CacheKey:
        return CacheKey(self.source, self.format, self.level, self.diff_id, self.compressor)

    @property
    def blob(self) -> CachedBlob:
        return CachedBlob(self.digest, self.size, self.locations, self.annotations)


def _digest(value: object, _: type) -> Digest:
    if type(value) is not str:
        raise TypeError(f"expected a digest string, got {type(value).__name__}")
    digest = Digest.parse(value)
    if str(digest) != value:  # no trailing newline or other slack
        raise ValueError(f"not a digest: {value!r}")
    return digest


# models' strict converter (exact str and int, lists for tuples), refusing unknown keys and
# any slack around a digest: an entry is either exactly what we wrote or a miss.
_converter = strict.copy(forbid_extra_keys=True)
_converter.register_structure_hook(Digest, _digest)
_converter.register_unstructure_hook_func(lambda t: t == tuple[str, ...], list)


def _parse(data: bytes, key: bytes) -> _Entry | None:
    """The entry in ``data`` sealed under ``key``, or None for anything that is not exactly one."""
    doc = unsealed(data, key, _VERSION, _MAX_ENTRY)
    if doc is None:
        return None
    try:
        return _converter.structure(doc, _Entry)
    except Exception:  # cattrs' grouped errors: all a miss
        return None


def _legacy(data: bytes) -> bool:
    """An entry of ocipush before version 2 (``{"digest", "size", "locations"}``)."""
    try:
        doc = load_json(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and set(doc) == {"digest", "size", "locations"}


def _document(key: CacheKey, blob: CachedBlob, secret: bytes) -> bytes:
    doc = {"version": _VERSION, **_converter.unstructure(key), **_converter.unstructure(blob)}
    doc["sum"] = document_sum(doc, secret)
    return json.dumps(doc, sort_keys=True).encode()


def default_cache_dir() -> Path:
    return cache_home()


class BlobCache(SealedStore):
    """The cache under ``root`` (default ``$XDG_CACHE_HOME/ocipush``), its entries sealed
    with the key in ``key_file`` (default ``seal.default_key_file()``); thread-safe."""

    MAX_LOCATIONS = _MAX_LOCATIONS

    def __init__(self, root: Path | None = None, key_file: Path | None = None):
        self.base = Path(root or default_cache_dir())
        self.root = self.base / "blobs"
        super().__init__(key_file)

    def lookup(self, key: CacheKey, note: Note = silent) -> CachedBlob | None:
        """What an earlier push made from ``key``; None when there is no usable entry."""
        path = self._path(key)
        try:
            self._check_directories(create=False)
            data = read_entry(path, _MAX_ENTRY, "entry")
            secret = self.key() if data is not None else b""
        except UnsafeFile as e:
            self._note(note, f"blob cache: {e}")
            return None
        except OSError as e:
            self._note(note, f"blob cache: cannot read {e.filename or path}: {e.strerror or e}; not used")
            return None
        if data is None:
            return None
        entry = _parse(data, secret)
        if entry is None:
            if not _legacy(data):  # an older ocipush's entry is a quiet miss, rewritten after the push
                self._note(note, f"blob cache: {path} is damaged, or not sealed by this user's key; ignored")
            return None
        if entry.key != key:
            if attrs.evolve(entry.key, compressor=key.compressor) != key:  # not just a library upgrade
                self._note(note, f"blob cache: {path} was made from another layer, level or diff_id; ignored")
            return None
        return entry.blob

    def store(
        self, key: CacheKey, digest: Digest, size: int, location: str, note: Note = silent,
        annotations: dict[str, str] | None = None,
    ) -> None:
        """Remember that ``key`` gave ``digest`` of ``size`` bytes, now at ``location``
        (kept first; other locations of the same output follow), with the layer
        ``annotations`` the output needs (zstd:chunked's; the old ones when not given)."""
        old = self.lookup(key, note)
        locations = [location] if _LOCATION.fullmatch(location) else []
        same = old is not None and old.digest == digest and old.size == size
        if old and same:
            locations += [loc for loc in old.locations if loc != location]
        if annotations is None:
            annotations = dict(old.annotations) if old and same else {}
        self._write(key, CachedBlob(digest, size, tuple(locations[:_MAX_LOCATIONS]), annotations), note)

    def forget(self, key: CacheKey, location: str | None = None, note: Note = silent) -> None:
        """Drop ``location`` from the entry, or the whole entry when ``location`` is None:
        the registry contradicted it."""
        old = self.lookup(key, note)
        if old is None:
            return  # nothing usable there: nothing of ours to change
        if location is not None:
            rest = tuple(loc for loc in old.locations if loc != location)
            self._write(key, attrs.evolve(old, locations=rest), note)
            return
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as e:
            self._note(note, f"blob cache: cannot remove {self._path(key)}: {e.strerror or e}")

    # -- on disk ------------------------------------------------------------------------

    def _path(self, key: CacheKey) -> Path:
        return self.root / f"{key.source.algorithm}-{key.source.hex}-{key.format}-{key.level}.json"

    def _check_directories(self, create: bool) -> None:
        """Raises UnsafeFile when the cache's directories are not the user's alone; with
        ``create``, makes the missing ones (0700)."""
        check_private_dirs((self.base, self.root), create)

    def _write(self, key: CacheKey, blob: CachedBlob, note: Note) -> None:
        try:
            self._check_directories(create=True)
            write_private(self._path(key), _document(key, blob, self.key()))
        except UnsafeFile as e:
            self._note(note, f"blob cache: {e}")
        except OSError as e:
            where = e.filename or self.root
            self._note(note, f"blob cache: cannot write {where}: {e.strerror or e}; "
                             "the push goes on without it (only slower next time)")
