"""A secret of this user's that seals the blob cache's entries (HMAC-SHA256).

The cache may be shared or restored from elsewhere: a CI cache step restores
``~/.cache`` from whatever another branch's job saved there, and a checksum anyone can
recompute proves nothing.  Entries are therefore sealed with a key kept **outside** the
cache directory, in ``$XDG_STATE_HOME/ocipush/cache-key`` (default
``~/.local/state/ocipush``), created on first use (32 random bytes, ``0600`` in a
``0700`` directory).  An entry sealed by another key — a restored, copied or forged
cache — is a miss: the layer is compressed again.  To share a cache between runs on
purpose, keep the key with it (then whoever can write either is trusted).

The key file gets the cache's own rules: a regular file, not a symlink, owned by the
user and writable by nobody else, read without blocking and up to a few bytes.

The blob cache and the record of open uploads share the rest of what is here: their
directories' checks (``check_private_dirs``), entries written whole (``write_private``)
and read under those rules (``read_entry``), and the key and notes of ``SealedStore``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .models import load_json

__all__ = [
    "Note",
    "SealedStore",
    "UnsafeFile",
    "cache_home",
    "check_private",
    "check_private_dirs",
    "default_key_file",
    "document_sum",
    "load_key",
    "read_entry",
    "read_private",
    "seal",
    "silent",
    "unsealed",
    "write_private",
]

_KEY_BYTES = 32

Note = Callable[[str], None]


def silent(message: str) -> None:
    """The note of a caller that has no reporter: says nothing, and is not remembered as said."""


class UnsafeFile(Exception):
    """A file or directory that others could have written: not to be used."""


class SealedStore:
    """What the blob cache and the record of open uploads share: the sealing key in
    ``key_file`` (default ``default_key_file()``), read (or made) once, and notes said once
    per run; thread-safe."""

    def __init__(self, key_file: Path | None):
        self.key_file = key_file or default_key_file()
        self._key: bytes | None = None
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def key(self) -> bytes:
        """The sealing key, read (or made) once. Raises UnsafeFile or OSError."""
        with self._lock:
            if self._key is None:
                self._key = load_key(self.key_file)
            return self._key

    def _note(self, note: Note, message: str) -> None:
        if note is silent:
            return  # not said: a later call with a reporter must still say it
        with self._lock:
            if message in self._said:
                return
            self._said.add(message)
        note(message)


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/ocipush`` (``~/.cache/ocipush``): the blob cache and the record of
    open uploads live there, each in its own directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ocipush"


def default_key_file() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "ocipush" / "cache-key"


def check_private(path: Path, st: os.stat_result, what: str) -> None:
    """Raises UnsafeFile unless ``path`` (stat ``st``) is the user's and writable by no one else."""
    if st.st_uid != os.getuid():
        raise UnsafeFile(f"{path}: {what} not owned by you (uid {st.st_uid}); not used")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeFile(f"{path}: {what} writable by others (mode {stat.S_IMODE(st.st_mode):04o}); not used")


def check_private_dirs(directories: tuple[Path, ...], create: bool) -> None:
    """Raises UnsafeFile when one of ``directories`` (outermost first) is not a directory
    of the user's alone; with ``create``, makes the missing ones (0700).  The first missing
    one ends the check: nothing is stored there yet."""
    for directory in directories:
        if create:
            directory.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                directory.mkdir(mode=0o700)
        try:
            st = directory.stat()
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeFile(f"{directory}: not a directory; not used")
        check_private(directory, st, "directory")


def write_private(path: Path, document: bytes) -> None:
    """Put ``document`` at ``path`` whole: a temporary file (0600) beside it renamed into
    place, so no reader ever sees half an entry.  Raises OSError."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(document)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def seal(document: bytes, key: bytes) -> str:
    """The seal of ``document`` (canonical bytes) under ``key``, in hex."""
    return hmac.new(key, document, hashlib.sha256).hexdigest()


def load_key(path: Path) -> bytes:
    """The key in ``path``, made first when there is none.  Raises UnsafeFile for a key
    (or its directory) that others could have written or that is not a plain key file,
    OSError when it cannot be read or made."""
    check_private_dirs((path.parent,), create=True)
    with contextlib.suppress(FileExistsError):
        _create(path)
    return _read(path)


def _create(path: Path) -> None:
    """Write a new key whole, then link it into place: two first runs agree on one key,
    and no run ever reads half of one.  FileExistsError when there is a key already."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-key-")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(_KEY_BYTES).encode())
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_private(path: Path, limit: int, what: str) -> bytes:
    """Up to ``limit`` + 1 bytes of ``path`` (more than ``limit`` tells the caller it is too
    big): a regular file, not a symlink, the user's alone, opened without blocking — a
    FIFO is refused, not waited on.  Raises UnsafeFile, FileNotFoundError or OSError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeFile(f"{path}: a symbolic link; not used") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path}: not a regular file; not used")
        check_private(path, st, what)
        return f.read(limit + 1)


def read_entry(path: Path, limit: int, what: str) -> bytes | None:
    """``read_private``'s bytes of an entry; None when there is none."""
    try:
        return read_private(path, limit, what)
    except FileNotFoundError:
        return None


def _read(path: Path) -> bytes:
    text = read_private(path, 2 * _KEY_BYTES, "key")
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise UnsafeFile(f"{path}: not a key of ocipush's (remove it to make a new one); not used")
    return key


def document_sum(doc: dict[str, Any], key: bytes) -> str:
    """The seal of a JSON document: of its fields but ``sum``, in canonical form (the cache's
    entries and the record of open uploads store it as their ``sum``)."""
    fields = {k: v for k, v in doc.items() if k != "sum"}
    return seal(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode(), key)


def unsealed(data: bytes, key: bytes, version: int, limit: int) -> dict[str, Any] | None:
    """The JSON document in ``data`` when it is at most ``limit`` bytes, of ``version``, and
    sealed under ``key``; None for anything else (a miss, never an error)."""
    if len(data) > limit:
        return None
    try:
        doc = load_json(data)
    except Exception:  # invalid JSON, too deep, duplicate keys…: a miss like any other
        return None
    if not isinstance(doc, dict) or doc.get("version") != version:
        return None
    if not isinstance(doc.get("sum"), str) or not hmac.compare_digest(doc["sum"], document_sum(doc, key)):
        return None
    return doc
