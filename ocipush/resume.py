"""The record of open uploads, so the next run of an interrupted push resumes them.

A registry keeps a half-finished upload for days (the CNCF registry until its upload
purge, serverless-registry as an R2 multipart upload): a push killed at 15 GB of a 20 GB
layer need not send the 15 GB again.  For each blob being uploaded, one small JSON entry
under ``$XDG_CACHE_HOME/ocipush/uploads/`` says where its upload stands: the registry and
repository, what the blob is (``BlobIdentity``: the source digest, and for a layer
recompressed on the way its format, level, diff_id and compressor version — another
version may produce other bytes), the upload URL (the registry's last ``Location``), the
offset the registry confirmed and the chunk sizes the upload was cut into.

The uploader (``registry/upload.py``) sees one entry through ``content.UploadJournal``:
it reads the recorded point once, asks the registry where the upload stands (its word,
checked against the record, wins), and tells the journal every offset the registry
confirms; the entry is rewritten then (one small atomic write per chunk) and removed when
the blob is committed or its upload cancelled.

An entry is a hint, never trusted (the blob cache's rules, ``cache.py``): private
directory (``0700``) and files (``0600``), read without following links and up to 16 KiB,
parsed strictly into a typed model, sealed with an HMAC under the user's key kept outside
the cache (``seal.py``).  A damaged, forged, copied or foreign entry is a miss with a note,
and the blob is uploaded from its first byte.  An entry that names another registry,
repository or blob than the one asking is a miss too.  Whatever an entry says, the
registry's digest check on the final ``PUT`` decides: a wrong one costs a restart, never
a broken image.  Write failures (a full disk) cost only the resume: a note, once.

Two runs of the same push at once must not both go on with one upload (their PATCHes
would collide and each run rewrite the other's entry): a blob's entry is used only under
an exclusive ``flock`` on its ``.lock`` file, held from the first look at the entry until
the blob is committed or cancelled (the kernel drops it when a run dies).  A run that
finds the lock taken uploads the blob on an upload of its own, without a record, and
says so.  Entries older than ``STALE`` (the CNCF registry's default upload purge) are
removed by the next run that writes one: the uploads they name are gone by then.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path

import attrs

from .content import UploadPoint
from .digest import Digest
from .models import strict
from .seal import (
    Note,
    SealedStore,
    UnsafeFile,
    cache_home,
    check_private,
    check_private_dirs,
    document_sum,
    read_entry,
    silent,
    unsealed,
    write_private,
)

__all__ = ["STALE", "BlobIdentity", "BlobJournal", "UploadRecords", "default_records_dir"]

_VERSION = 1
_MAX_ENTRY = 16 * 1024
_MAX_SIZE = 2**62
STALE = 7 * 24 * 3600  # seconds: distribution's uploadpurging age (168h)



def default_records_dir() -> Path:
    """``$XDG_CACHE_HOME/ocipush/uploads``: beside the blob cache's ``blobs/``."""
    return cache_home() / "uploads"


@attrs.frozen
class BlobIdentity:
    """What is uploaded: the source blob, as it is (``format`` None), or recompressed to
    ``format`` at ``level`` from the tar of ``diff_id`` by ``compressor``."""

    source: Digest
    format: str | None = None
    level: int | None = None
    diff_id: Digest | None = None
    compressor: str | None = None


_size = [attrs.validators.ge(0), attrs.validators.le(_MAX_SIZE)]
_optional_size = attrs.validators.optional(_size)


def _url(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if len(value) > 4096 or not value.startswith(("http://", "https://")) or not value.isprintable():
        raise ValueError("not an upload URL")


@attrs.frozen
class _Entry:
    """The document on disk: every field, and ``sum`` (the seal of the rest)."""

    version: int
    location: str = attrs.field(validator=attrs.validators.max_len(600))  # "registry/repository"
    source: Digest
    format: str | None = attrs.field(validator=attrs.validators.optional(attrs.validators.max_len(16)))
    level: int | None = attrs.field(validator=attrs.validators.optional(attrs.validators.le(99)))
    diff_id: Digest | None
    compressor: str | None = attrs.field(validator=attrs.validators.optional(attrs.validators.max_len(200)))
    url: str = attrs.field(validator=_url)
    offset: int = attrs.field(validator=_size)
    chunk_size: int | None = attrs.field(validator=_optional_size)
    minimum: int | None = attrs.field(validator=_optional_size)
    maximum: int | None = attrs.field(validator=_optional_size)
    sum: str

    @property
    def identity(self) -> BlobIdentity:
        return BlobIdentity(self.source, self.format, self.level, self.diff_id, self.compressor)

    @property
    def point(self) -> UploadPoint:
        return UploadPoint(self.url, self.offset, self.chunk_size, self.minimum, self.maximum)


def _digest(value: object, _: type) -> Digest:
    if type(value) is not str:
        raise TypeError(f"expected a digest string, got {type(value).__name__}")
    digest = Digest.parse(value)
    if str(digest) != value:
        raise ValueError(f"not a digest: {value!r}")
    return digest


_converter = strict.copy(forbid_extra_keys=True)
_converter.register_structure_hook(Digest, _digest)


def _parse(data: bytes, key: bytes) -> _Entry | None:
    """The entry in ``data`` sealed under ``key``, or None for anything that is not exactly one."""
    doc = unsealed(data, key, _VERSION, _MAX_ENTRY)
    if doc is None:
        return None
    try:
        return _converter.structure(doc, _Entry)
    except Exception:  # cattrs' grouped errors, a validator: all a miss
        return None


def _document(location: str, identity: BlobIdentity, point: UploadPoint, key: bytes) -> bytes:
    doc: dict[str, object] = {
        "version": _VERSION, "location": location, **_converter.unstructure(identity),
        **_converter.unstructure(point),
    }
    doc["sum"] = document_sum(doc, key)
    return json.dumps(doc, sort_keys=True).encode()


class UploadRecords(SealedStore):
    """The record under ``root`` (default ``default_records_dir()``), sealed with the key
    in ``key_file``; thread-safe.  ``resume`` False (``--no-resume``): recorded uploads are
    cancelled instead of continued; ``keep_partial`` (``--keep-partial``): an interrupted
    push keeps its open uploads."""

    def __init__(self, root: Path | None = None, key_file: Path | None = None, *, resume: bool = True,
                 keep_partial: bool = False):
        self.root = Path(root or default_records_dir())
        super().__init__(key_file)
        self.resume = resume
        self.keep_partial = keep_partial
        self._kept: set[Path] = set()
        self._pruned = False

    def journal(self, location: str, identity: BlobIdentity, note: Note = silent) -> BlobJournal:
        """The entry of ``identity``'s upload to ``location`` ("registry/repository")."""
        return BlobJournal(self, location, identity, note)

    def kept(self) -> int:
        """How many uploads this run left open for a later one (retries exhausted, or kept
        on an interrupt): the CLI's last line says the same command resumes them."""
        with self._lock:
            return len(self._kept)

    def lookup(self, location: str, identity: BlobIdentity, note: Note = silent) -> UploadPoint | None:
        """The recorded upload of ``identity`` to ``location``; None when there is no usable one."""
        path = self.path(location, identity)
        try:
            self._check_directory(create=False)
            data = read_entry(path, _MAX_ENTRY, "upload record")
            key = self.key() if data is not None else b""
        except UnsafeFile as e:
            self._note(note, f"upload record: {e}")
            return None
        except OSError as e:
            self._note(note, f"upload record: cannot read {e.filename or path}: {e.strerror or e}; not used")
            return None
        if data is None:
            return None
        entry = _parse(data, key)
        if entry is None:
            self._note(note, f"upload record: {path} is damaged, or not sealed by this user's key; "
                             "the blob is uploaded from its start")
            return None
        if entry.location != location or entry.identity != identity:
            self._note(note, f"upload record: {path} names another blob or repository; ignored")
            return None
        return entry.point

    def write(self, location: str, identity: BlobIdentity, point: UploadPoint, note: Note = silent) -> None:
        """Record ``point``: a temporary file renamed into place, never half an entry."""
        try:
            self._check_directory(create=True)
            self._prune_once()
            write_private(self.path(location, identity), _document(location, identity, point, self.key()))
        except UnsafeFile as e:
            self._note(note, f"upload record: {e}")
        except OSError as e:
            self._note(note, f"upload record: cannot write {e.filename or self.root}: {e.strerror or e}; "
                             "an interrupted upload will start again from its first byte")

    def remove(self, location: str, identity: BlobIdentity, note: Note = silent) -> None:
        path = self.path(location, identity)
        with self._lock:
            self._kept.discard(path)
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            self._note(note, f"upload record: cannot remove {path}: {e.strerror or e}")

    def claim(self, location: str, identity: BlobIdentity, note: Note = silent) -> int | None:
        """The entry's lock, taken without waiting: an open descriptor to hand back to
        ``release``, or None when another run holds it (or it cannot be taken)."""
        path = self.path(location, identity).with_suffix(".lock")
        try:
            self._check_directory(create=True)
            return _lock(path)
        except BlockingIOError:
            self._note(note, f"upload record: another ocipush run is uploading this blob to {location} now "
                             f"({path} is locked); this run uploads it on an upload of its own, without a record")
        except UnsafeFile as e:
            self._note(note, f"upload record: {e}")
        except OSError as e:
            self._note(note, f"upload record: cannot lock {e.filename or path}: {e.strerror or e}; not used")
        return None

    def release(self, location: str, identity: BlobIdentity, fd: int, *, forget: bool) -> None:
        """Let go of the lock ``claim`` gave; with ``forget`` (the entry is gone) its file
        goes too, removed while still held so that no other run locks a file on its way out."""
        if forget:
            with contextlib.suppress(OSError):
                self.path(location, identity).with_suffix(".lock").unlink()
        os.close(fd)

    def mark_kept(self, location: str, identity: BlobIdentity) -> None:
        with self._lock:
            self._kept.add(self.path(location, identity))

    def path(self, location: str, identity: BlobIdentity) -> Path:
        """One file per (repository, blob): a hash of both, so no name from outside reaches a path."""
        name = json.dumps([location, _converter.unstructure(identity)], sort_keys=True)
        return self.root / f"{hashlib.sha256(name.encode()).hexdigest()}.json"

    # -- on disk ------------------------------------------------------------------------

    def _check_directory(self, create: bool) -> None:
        """Raises UnsafeFile when the record's directories are not the user's alone; with
        ``create``, makes the missing ones (0700)."""
        check_private_dirs((self.root.parent, self.root), create)

    def _prune_once(self) -> None:
        """Entries (and leftovers of killed writes, and free locks) untouched for ``STALE``
        seconds: the registry has purged their uploads.  Once per run, best effort."""
        with self._lock:
            if self._pruned:
                return
            self._pruned = True
        limit = time.time() - STALE
        with contextlib.suppress(OSError), os.scandir(self.root) as found:
            for item in found:
                with contextlib.suppress(OSError, UnsafeFile):
                    st = item.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < limit and item.name.endswith((".json", ".lock")):
                        _remove_stale(Path(item.path))


def _lock(path: Path) -> int:
    """An exclusive ``flock`` on ``path`` (made ``0600`` if missing, never through a
    link); ``BlockingIOError`` when another run holds it.  A lock file removed between our
    open and our lock (its holder finished) is opened again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeFile(f"{path}: not a regular file; not used")
            check_private(path, st, "upload record lock")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _remove_stale(path: Path) -> None:
    if path.suffix == ".lock":
        fd = _lock(path)  # BlockingIOError for a lock in use: kept
        try:
            path.unlink()
        finally:
            os.close(fd)
    else:
        path.unlink()


class BlobJournal:
    """One blob's entry, as the uploader sees it (``content.UploadJournal``).  The uploader
    confirms only while its upload is open, so a chunk confirmed while Ctrl-C cancels the
    upload does not write the entry back."""

    def __init__(self, records: UploadRecords, location: str, identity: BlobIdentity, note: Note):
        self._records = records
        self._location = location
        self._identity = identity
        self._note = note
        self._held: int | None = None  # the entry's lock (see the module docstring)
        self._busy = False  # another run holds it: this journal reads and writes nothing
        self._claimed = False  # this run held the lock once: the entry is this run's to remove
        self._guard = threading.Lock()  # an interrupt's kept() and done() come from another thread

    def _own(self) -> bool:
        """Whether this run holds the entry's lock, taking it on first use."""
        with self._guard:
            if self._held is None and not self._busy:
                self._held = self._records.claim(self._location, self._identity, self._note)
                self._busy = self._held is None
                self._claimed = self._claimed or not self._busy
            return self._held is not None

    @property
    def resume(self) -> bool:
        return self._records.resume

    @property
    def keep_partial(self) -> bool:
        return self._records.keep_partial

    def resume_point(self) -> UploadPoint | None:
        if not self._own():
            return None
        return self._records.lookup(self._location, self._identity, self._note)

    def confirmed(self, point: UploadPoint) -> None:
        if self._own():
            self._records.write(self._location, self._identity, point, self._note)

    def kept(self) -> None:
        if self._claimed:  # an entry this run wrote (the thread may have let go of the lock already)
            self._records.mark_kept(self._location, self._identity)

    def done(self) -> None:
        """The upload was committed or cancelled: its entry goes, and the lock with it (a
        new upload of the blob after a restart takes it again).  After an interrupt the
        uploading thread may have let go already: the lock is taken again to remove the
        entry, unless another run took it meanwhile (then the entry is that run's)."""
        with self._guard:
            held, self._held = self._held, None
            if held is None and self._claimed and not self._busy:
                held = self._records.claim(self._location, self._identity)
            if held is None:
                return
            self._records.remove(self._location, self._identity, self._note)
            self._records.release(self._location, self._identity, held, forget=True)

    def release(self) -> None:
        """This run is finished with the blob: the lock goes; the entry stays as it is (a
        lock without an entry — a blob found there already — goes too)."""
        with self._guard:
            held, self._held = self._held, None
            if held is None:
                return
            forget = not self._records.path(self._location, self._identity).exists()
            self._records.release(self._location, self._identity, held, forget=forget)
