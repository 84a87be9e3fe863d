"""The blob cache's sealing key: made once, private, refused when others could have
written it; entries sealed under another key are misses."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from ocipush.cache import BlobCache, CacheKey
from ocipush.digest import Digest
from ocipush.seal import UnsafeFile, load_key
from ocipush.seal import document_sum as _seal

SRC = Digest("sha256", "1" * 64)
TAR = Digest("sha256", "2" * 64)
OUT = Digest("sha256", "3" * 64)
KEY = CacheKey(SRC, "zstd", 3, TAR)


def test_the_key_is_made_once_private_and_kept(tmp_path):
    path = tmp_path / "state" / "ocipush" / "cache-key"
    first = load_key(path)
    assert len(first) == 32 and load_key(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["cache-key"]  # no temporary file left


def test_runs_that_start_together_agree_on_one_key(tmp_path):
    path = tmp_path / "ocipush" / "cache-key"
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        keys.append(load_key(path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1


@pytest.mark.parametrize("damage", ["group-writable", "symlink", "fifo", "garbage", "short", "directory-open"])
def test_a_key_others_could_have_written_or_that_is_no_key_is_refused(tmp_path, damage):
    path = tmp_path / "ocipush" / "cache-key"
    load_key(path)
    if damage == "group-writable":
        path.chmod(0o620)
    elif damage == "symlink":
        other = tmp_path / "elsewhere"
        other.write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(other)
    elif damage == "fifo":
        path.unlink()
        os.mkfifo(path, 0o600)
    elif damage == "garbage":
        path.write_text("not hex at all, but long enough to look like a key of ocipush's.....")
    elif damage == "short":
        path.write_text("abcd")
    elif damage == "directory-open":
        path.parent.chmod(0o777)
    with pytest.raises(UnsafeFile):
        load_key(path)  # returns at once: a FIFO is not waited on


def entry(cache: BlobCache) -> Path:
    return cache.root / f"sha256-{SRC.hex}-zstd-3.json"


def test_an_entry_sealed_under_another_key_is_a_miss_with_a_note(tmp_path):
    notes: list[str] = []
    mine = BlobCache(tmp_path / "cache", key_file=tmp_path / "mine" / "key")
    mine.store(KEY, OUT, 10, "r.io/a")
    assert mine.lookup(KEY) is not None
    theirs = BlobCache(tmp_path / "cache", key_file=tmp_path / "theirs" / "key")  # a restored cache
    assert theirs.lookup(KEY, notes.append) is None
    assert len(notes) == 1 and "not sealed by this user's key" in notes[0]
    # What a forger who cannot read the key writes: the fields' plain sha256, or any other key's seal.
    doc = {k: v for k, v in json.loads(entry(mine).read_text()).items() if k != "sum"}
    entry(mine).write_text(json.dumps({**doc, "sum": _seal(doc, os.urandom(32))}))
    assert BlobCache(tmp_path / "cache", key_file=tmp_path / "mine" / "key").lookup(KEY) is None


def test_an_unsafe_key_means_no_cache_and_a_note(tmp_path):
    notes: list[str] = []
    key_file = tmp_path / "state" / "key"
    cache = BlobCache(tmp_path / "cache", key_file=key_file)
    cache.store(KEY, OUT, 10, "r.io/a")
    key_file.chmod(0o666)
    again = BlobCache(tmp_path / "cache", key_file=key_file)
    assert again.lookup(KEY, notes.append) is None
    assert any(str(key_file) in n and "writable by others" in n for n in notes), notes
