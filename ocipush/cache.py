"""What recompression produced before: (source digest, format, level) → (digest, size,
repositories it was pushed to).  With it, an unchanged re-push asks the registry for the
known output digest (HEAD) instead of compressing again, and can mount the blob from
another repository of the same registry.

One small JSON file per entry under ``$XDG_CACHE_HOME/ocipush/blobs/`` (default
``~/.cache/ocipush``), written to a temporary name and renamed into place, so concurrent
runs never see a half-written entry; the last writer wins, which loses at most a
repository hint.  Entries are only hints: a stale one costs a HEAD, never a wrong push,
because what is pushed is always what was just produced and verified.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import attrs

from .digest import Digest

__all__ = ["BlobCache", "CachedBlob", "default_cache_dir"]


@attrs.frozen
class CachedBlob:
    digest: Digest
    size: int
    locations: tuple[str, ...] = ()  # "registry/repository" where it was pushed


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ocipush"


class BlobCache:
    MAX_LOCATIONS = 16

    def __init__(self, root: Path | None = None):
        self.root = (root or default_cache_dir()) / "blobs"

    def _path(self, source: Digest, fmt: str, level: int) -> Path:
        return self.root / f"{source.algorithm}-{source.hex}-{fmt}-{level}.json"

    def lookup(self, source: Digest, fmt: str, level: int) -> CachedBlob | None:
        try:
            doc = json.loads(self._path(source, fmt, level).read_text())
            return CachedBlob(Digest.parse(doc["digest"]), int(doc["size"]), tuple(doc.get("locations", ())))
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None  # missing or damaged: as good as absent

    def store(self, source: Digest, fmt: str, level: int, digest: Digest, size: int, location: str) -> None:
        old = self.lookup(source, fmt, level)
        locations = [location]
        if old and old.digest == digest:
            locations += [loc for loc in old.locations if loc != location]
        doc = {"digest": str(digest), "size": size, "locations": locations[: self.MAX_LOCATIONS]}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, self._path(source, fmt, level))
        except OSError:
            pass  # a cache that cannot be written only costs speed next time
