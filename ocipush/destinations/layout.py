"""``oci:PATH[:TAG]`` and ``oci-archive:PATH[:TAG]`` as destinations: convert offline.

``oci:`` creates the layout or adds to it: blobs are written under a temporary name and
renamed into place once verified; ``index.json`` gains the new root (replacing an entry
with the same ``org.opencontainers.image.ref.name``, or the same digest when there is no
tag) and is written last, to a temporary file renamed over the old one. A failed run
leaves no half-written ``index.json`` and no entry naming missing blobs.

``oci-layout`` and ``index.json`` are read and checked when the destination is opened,
before any blob is written (models.OciLayout, models.LayoutIndex): one that is not a
regular file (a FIFO would block the read forever), not valid JSON, of another layout
version, or not an image index whose every entry is a descriptor means the directory is
not a layout we can add to: a SourceError (exit 3, like a malformed layout read as a
source), and nothing is written.  ``index.json`` is read again at the commit (another run
may have added to it meanwhile) and written back as read, with only ``manifests``
changed, so fields ocipush does not model survive.

A file system that fails us (full, read-only, I/O error, permission denied) is a
LocalIOError naming the file, and the temporary file is removed.  ``blobs`` or
``blobs/sha256`` as a symbolic link (or anything but a directory) is refused like a
malformed ``index.json``: the blobs would be written wherever it points.

What the layout already holds is checked, never trusted: a blob (or manifest) is skipped
only when its file is a regular file (not a symbolic link) of the right size whose content
hashes to its digest — hashed once per run; anything else is written again.  ``abort()``
(SIGINT, SIGTERM) removes every temporary file, and no new one is created after it: the
check, the creation and the bookkeeping share one lock, so none can slip between.

``oci-archive:`` builds the layout in a temporary directory beside the archive, then writes
the tar under a temporary name and renames it over PATH (the archive is replaced whole,
as skopeo does); the directory is removed either way.  Only a regular file is replaced:
PATH as a symbolic link, FIFO, socket, device or directory is a UsageError (exit 2),
checked before anything is written and again just before the rename, and left as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from .. import mediatypes
from ..content import BlobContent, UploadJournal, UploadOutcome
from ..digest import Digest
from ..errors import SourceError, UsageError, local_io_error
from ..localfile import NotRegularFile, file_kind, open_regular, read_regular
from ..models import Descriptor, LayoutIndex, OciLayout, converter, first_error, load_json, strict

__all__ = ["ArchiveDestination", "LayoutDestination", "current_umask", "honour_umask"]

_REF_NAME = "org.opencontainers.image.ref.name"
_LAYOUT = OciLayout("1.0.0")
_MAX_JSON = 64 << 20  # index.json of a layout we add to: thousands of entries fit
_HASH_BLOCK = 1 << 20


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (another
    thread creating a file meanwhile would get a wrong mode); else set and restored."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(fd: int, what: Path) -> None:
    """``mkstemp`` creates 0600; the files we publish get the mode ``open()`` would give
    them (0644 under umask 022), as skopeo and podman write theirs."""
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except OSError as e:
        os.close(fd)
        raise local_io_error(what, "setting the mode of", e) from None


def _mkstemp(folder: Path, what: Path, doing: str) -> tuple[int, str]:
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    except OSError as e:
        raise local_io_error(what, doing, e) from None
    try:
        honour_umask(fd, what)
    except BaseException:
        _remove(tmp)
        raise
    return fd, tmp


def _write_atomically(path: Path, data: bytes, fd: int, tmp: str) -> None:
    """``data`` into the temporary file ``fd``/``tmp``, renamed over ``path``."""
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise local_io_error(path, "writing", e) from None
    except BaseException:
        _remove(tmp)
        raise


def _not_addable(message: str) -> SourceError:
    return SourceError(f"{message}; not adding to it")


def _hashes_to(path: Path, digest: Digest) -> bool:
    """Whether the file's content has ``digest``: a blob already in the layout may have
    been damaged (one flipped byte keeps its size) and is written again if not."""
    try:
        h = digest.hasher()
        with open_regular(path) as f:
            while block := f.read(_HASH_BLOCK):
                h.update(block)
    except (OSError, ValueError):  # unreadable, swapped for a FIFO, unknown algorithm
        return False
    return h.hexdigest() == digest.hex


def _check_replaceable(archive: Path) -> None:
    """UsageError unless ``archive`` is missing or a regular file (not through a symbolic
    link): ``os.replace`` would swap a device node, a FIFO or a link for our tar."""
    mode = _lstat_mode(archive)
    if mode is not None and not stat.S_ISREG(mode):
        raise UsageError(f"{archive}: {_kind(mode)}, not a regular file; not replacing it with an archive")


def _check_blob_dirs(path: Path) -> None:
    """SourceError when ``blobs`` or ``blobs/sha256`` exists as anything but a real
    directory: through a symbolic link, blobs would land wherever it points."""
    for folder in (path / "blobs", path / "blobs" / "sha256"):
        mode = _lstat_mode(folder)
        if mode is None:
            return
        if not stat.S_ISDIR(mode):
            raise _not_addable(f"{folder}: {_kind(mode)}, not a directory")


def _lstat_mode(path: Path) -> int | None:
    """The mode of ``path`` itself (a symbolic link is not followed); None when it does
    not exist, a local I/O error when it cannot be checked."""
    try:
        return path.lstat().st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        raise local_io_error(path, "checking", e) from None


def _kind(mode: int) -> str:
    """What a file found by lstat is, for messages: a link or a regular file too."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a file" if stat.S_ISREG(mode) else file_kind(mode)


def _read_json(path: Path) -> object | None:
    """A JSON document of the layout we add to; None when it does not exist."""
    try:
        data = read_regular(path, _MAX_JSON)
    except FileNotFoundError:
        return None
    except NotRegularFile as e:
        raise _not_addable(f"{path}: {e.kind}, not a regular file") from None
    except OSError as e:
        raise local_io_error(path, "reading", e) from None
    except ValueError:
        raise _not_addable(f"{path}: larger than {_MAX_JSON} bytes") from None
    return load_json(data, str(path), error=_not_addable)


def _check_layout(path: Path) -> bool:
    """Whether ``oci-layout`` exists; SourceError when it is not one we can add to."""
    doc = _read_json(path)
    if doc is None:
        return False
    try:
        version: object = strict.structure(doc, OciLayout).image_layout_version
    except Exception:  # not an object, or a version that is not a string: named as it is
        version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise _not_addable(f"{path}: unsupported imageLayoutVersion {version!r}")
    return True


def _read_index(path: Path) -> tuple[dict[str, Any], LayoutIndex] | None:
    """``index.json`` as read, and checked; None when it does not exist."""
    doc = _read_json(path)
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise _not_addable(f"{path}: not an image index (a JSON {type(doc).__name__})")
    try:
        return doc, strict.structure(doc, LayoutIndex)
    except Exception as e:  # cattrs groups every field error; one line is what users read
        raise _not_addable(f"{path}: not an image index ({first_error(e)})") from None


class LayoutDestination:
    def __init__(self, path: str | os.PathLike[str], tag: str | None, *, dry_run: bool = False):
        self.path = Path(path)
        self.tag = tag
        self.dry_run = dry_run  # look, write nothing
        self.location = f"oci:{self.path}"
        self._writing: set[str] = set()  # temporary files being written
        self._aborted = False
        self._lock = threading.RLock()  # _aborted, _writing and the creation of temporary files
        self._verified: dict[Digest, int] = {}  # blobs found whole in the layout, or written: their size

    def __enter__(self) -> LayoutDestination:
        if self.dry_run:
            if self.path.is_dir():
                self._check()  # look: a layout we could not add to fails the dry run too
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise UsageError(f"{self.path}: not a directory; cannot write an OCI layout here") from None
        except OSError as e:
            raise local_io_error(self.path, "creating the OCI layout", e) from None
        if not self._check():
            self._write_file(self.path / "oci-layout", json.dumps(strict.unstructure(_LAYOUT)).encode())
        try:
            (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise local_io_error(self.path / "blobs" / "sha256", "creating the OCI layout", e) from None
        return self

    def _check(self) -> bool:
        """Whether ``oci-layout`` exists; SourceError, before anything is written, when
        ``oci-layout`` or ``index.json`` is not one we can add to."""
        exists = _check_layout(self.path / "oci-layout")
        _read_index(self.path / "index.json")
        _check_blob_dirs(self.path)
        return exists

    def _temporary(self, folder: Path, what: Path, doing: str) -> tuple[int, str]:
        """A new temporary file in ``folder``, registered for ``abort()`` to remove; under
        the lock, so an abort either comes first (and this refuses) or sees the file."""
        with self._lock:
            if self._aborted:
                raise UsageError(f"{self.location}: the push was interrupted")
            fd, tmp = _mkstemp(folder, what, doing)
            self._writing.add(tmp)
            return fd, tmp

    def _write_file(self, path: Path, data: bytes) -> None:
        fd, tmp = self._temporary(path.parent, path, "writing")
        try:
            _write_atomically(path, data, fd, tmp)
        finally:
            with self._lock:
                self._writing.discard(tmp)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _blob(self, digest: Digest) -> Path:
        return self.path / "blobs" / digest.algorithm / digest.hex

    chunk_size_learnt: int | None = None  # no request bodies here

    def exists(self, digest: Digest, size: int | None = None) -> bool:
        """A regular file (not a symbolic link) under the digest's name, of ``size`` bytes
        when given, whose content hashes to ``digest`` (hashed once per run); anything else
        is written again."""
        known = self._verified.get(digest)
        if known is not None:
            return size is None or known == size
        path = self._blob(digest)
        try:
            st = path.lstat()
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or (size is not None and st.st_size != size) or not _hashes_to(path, digest):
            return False
        self._verified[digest] = st.st_size
        return True

    def mount(self, digest: Digest, location: str) -> bool:
        return False

    def upload(self, blob: BlobContent, journal: UploadJournal | None = None) -> UploadOutcome:
        if blob.digest is not None and self.exists(blob.digest, blob.size):
            blob.close()
            return UploadOutcome("skipped", blob.digest)
        fd, tmp = self._temporary(self.path / "blobs", self.path / "blobs", "writing a blob")
        try:
            try:
                size = 0
                with os.fdopen(fd, "wb") as f:
                    for block in blob.stream():  # the source's errors pass as they are
                        self._write(f, block, tmp)
                        size += len(block)
                    self._write(f, b"", tmp)  # flushed here, so a full disk is met here
            except OSError as e:  # closing flushes what a failed write left: it fails again
                raise local_io_error(tmp, "writing a blob", e) from None
            digest = blob.finish()
            target = self._blob(digest)
            with self._lock:  # after abort() nothing is created: an archive's workdir may be gone
                if self._aborted:
                    raise UsageError(f"{self.location}: the push was interrupted")
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(tmp, target)
                except OSError as e:
                    raise local_io_error(target, "writing a blob", e) from None
            self._verified[digest] = size
        except BaseException:
            _remove(tmp)
            raise
        finally:
            with self._lock:
                self._writing.discard(tmp)
            blob.close()
        return UploadOutcome("uploaded", digest)

    @staticmethod
    def _write(f: IO[bytes], block: bytes, tmp: str) -> None:
        try:
            f.write(block)
            if not block:
                f.flush()
        except OSError as e:
            raise local_io_error(tmp, "writing a blob", e) from None

    def put_manifest(self, reference: str, data: bytes, media_type: str, digest: Digest) -> None:
        if not self.exists(digest, len(data)):
            self._write_file(self._blob(digest), data)
            self._verified[digest] = len(data)

    def commit(self, media_type: str, digest: Digest, size: int) -> None:
        index_path = self.path / "index.json"
        found = _read_index(index_path)  # again: another run may have added to it since we opened it
        doc, index = found or ({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX}, LayoutIndex())
        new = Descriptor(media_type, digest, size, annotations={_REF_NAME: self.tag} if self.tag else None)
        kept = [raw for raw, old in zip(doc.get("manifests", []), index.manifests, strict=True)
                if not self._replaced_by(old, new)]
        doc = {**doc, "manifests": [*kept, converter.unstructure(new)]}
        self._write_file(index_path, json.dumps(doc, indent=2).encode())

    def _replaced_by(self, old: Descriptor, new: Descriptor) -> bool:
        if self.tag:
            return old.ref_name == self.tag
        return old.digest == new.digest and not old.annotations

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            for tmp in list(self._writing):
                _remove(tmp)

    def close(self) -> None:
        """As ``abort()``: leaving the ``with`` by an exception the push did not see coming (a
        signal while it was still starting its upload threads) must not leave the
        ``.tmp-`` files of threads still writing; after a commit there are none."""
        self.abort()


class ArchiveDestination(LayoutDestination):
    def __init__(self, path: str | os.PathLike[str], tag: str | None, *, dry_run: bool = False):
        self.archive = Path(path)
        super().__init__(self.archive, tag, dry_run=dry_run)
        self.location = f"oci-archive:{self.archive}"
        self._workdir: str | None = None

    def __enter__(self) -> ArchiveDestination:
        parent = self.archive.parent
        if not parent.is_dir():
            raise UsageError(f"{self.archive}: directory {parent} does not exist")
        _check_replaceable(self.archive)
        if self.dry_run:
            self.path = parent / f".{self.archive.name}.never"  # the archive is replaced whole: nothing exists
            return self
        try:
            self._workdir = tempfile.mkdtemp(dir=parent, prefix=f".{self.archive.name}.")
        except OSError as e:
            raise local_io_error(self.archive, "creating a working directory beside it", e) from None
        self.path = Path(self._workdir)
        try:
            super().__enter__()
        except BaseException:  # __exit__ is not called when __enter__ fails: remove it here
            self.close()
            raise
        return self

    def commit(self, media_type: str, digest: Digest, size: int) -> None:
        super().commit(media_type, digest, size)
        self._write_archive(sorted(f for f in self.path.rglob("*") if not f.name.startswith(".tmp-")))

    def _write_archive(self, files: list[Path]) -> None:
        """A tar of ``files`` (under the working directory, named relative to it, in this
        order; owner and time zeroed), written beside PATH and renamed over it."""
        try:
            fd, tmp = tempfile.mkstemp(dir=self.archive.parent, prefix=f".{self.archive.name}.tar-")
        except OSError as e:
            raise local_io_error(self.archive, "writing", e) from None
        try:
            honour_umask(fd, self.archive)
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for file in files:
                    info = tar.gettarinfo(file, arcname=file.relative_to(self.path).as_posix())
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    if info.isreg():
                        with file.open("rb") as data:
                            tar.addfile(info, data)
                    else:
                        tar.addfile(info)
            _check_replaceable(self.archive)  # again: it may have been swapped meanwhile
            os.replace(tmp, self.archive)
        except OSError as e:
            _remove(tmp)
            raise local_io_error(self.archive, "writing", e) from None
        except BaseException:
            _remove(tmp)
            raise

    def close(self) -> None:
        super().close()
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
