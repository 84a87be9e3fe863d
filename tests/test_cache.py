"""The blob cache on its own (damaged, forged, unsafe and unwritable entries), a registry
whose blob ``HEAD`` lies, and serverless-registry's ``HEAD`` on mounted blobs — against
the strict fake registry, the real one behind the fault proxy, and OCI layouts."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocipush.cache import BlobCache, CacheKey
from ocipush.cli import main
from ocipush.compression import Compression
from ocipush.digest import Digest
from ocipush.push import PushOptions, push
from ocipush.registry.retry import RetryPolicy
from ocipush.report import Reporter
from ocipush.seal import document_sum as _seal
from tests.fakeregistry import FakeRegistry, Reply
from tests.imagegen import LayerSpec, make_layout

SRC, TAR, OUT = Digest.of(b"source"), Digest.of(b"tar"), Digest.of(b"output")
KEY = CacheKey(SRC, "zstd", 3, TAR)
FAST = RetryPolicy(attempts=2, delay=0.01, max_delay=0.02)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


class Notes(list):
    def __call__(self, message: str) -> None:
        self.append(message)


@pytest.fixture
def cache(tmp_path) -> BlobCache:
    return BlobCache(tmp_path / "cache")


def entry_path(cache: BlobCache) -> Path:
    return cache.root / f"sha256-{SRC.hex}-zstd-3.json"


def written(cache: BlobCache) -> dict:
    cache.store(KEY, OUT, 10, "r.io/a")
    return json.loads(entry_path(cache).read_text())


def sealed(doc: dict, key: bytes | None = None) -> str:
    """``doc`` sealed with the cache's own key (what only a forger holding it could write),
    or with ``key``."""
    doc = {k: v for k, v in doc.items() if k != "sum"}
    return json.dumps({**doc, "sum": _seal(doc, key or BlobCache().key())})


# -- entries ---------------------------------------------------------------------------

def test_round_trip_records_what_it_was_made_from(cache):
    doc = written(cache)
    assert doc["source"] == str(SRC) and doc["diff_id"] == str(TAR) and doc["format"] == "zstd"
    assert doc["level"] == 3 and doc["compressor"].startswith("zstandard ")
    assert cache.lookup(KEY).digest == OUT


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_any_document_is_a_miss_never_a_traceback(cache, value):
    cache.root.mkdir(parents=True, exist_ok=True)
    entry_path(cache).write_text(json.dumps(value))
    assert cache.lookup(KEY) is None


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["version", "source", "format", "level", "diff_id", "compressor",
                              "digest", "size", "locations"]), value=json_values)
def test_a_changed_field_is_a_miss_even_when_resealed(cache, field, value):
    doc = written(cache)
    if value == doc[field] or (field == "locations" and value == []):  # [] is a valid entry: no mount hints
        return
    entry_path(cache).write_text(json.dumps({**doc, field: value}))
    assert cache.lookup(KEY) is None  # the checksum
    entry_path(cache).write_text(sealed({**doc, field: value}))
    # The key, the types and the ranges refuse the rest; a well-formed forged size, digest
    # or location is the registry HEAD's to catch (tests/test_cache_registry.py).
    assert cache.lookup(KEY) is None or field in ("size", "digest", "locations")


@pytest.mark.parametrize("field, value", [
    ("size", -1), ("size", 2**63), ("size", "10"), ("size", 10.0), ("size", True), ("level", "3"),
    ("digest", 5), ("digest", f"{OUT}\n"), ("digest", "sha256:" + "A" * 64), ("locations", "r.io/a"),
    ("locations", [1, None]), ("locations", ["r.io/a/../b"]), ("locations", ["oci:/tmp/x"]),
    ("locations", ["r.io/a?x=y"]), ("locations", ["r.io/a"] * 17), ("extra", 1),
])
def test_wrong_types_and_ranges_are_misses_even_when_sealed(cache, field, value):
    doc = written(cache)
    entry_path(cache).write_text(sealed({**doc, field: value}))
    assert cache.lookup(KEY) is None


def test_an_entry_for_another_diff_id_is_ignored_with_a_note(cache):
    cache.store(attrs_evolve(KEY, diff_id=Digest.of(b"other tar")), OUT, 10, "r.io/a")
    notes = Notes()
    assert cache.lookup(KEY, notes) is None
    assert cache.lookup(KEY, notes) is None
    assert len(notes) == 1 and "made from another layer, level or diff_id" in notes[0]  # said once


def test_another_compressor_version_is_a_silent_miss(cache):
    cache.store(attrs_evolve(KEY, compressor="zstandard 0.0.1"), OUT, 10, "r.io/a")
    notes = Notes()
    assert cache.lookup(KEY, notes) is None and notes == []


def test_swapped_files_are_misses(cache):
    other = CacheKey(Digest.of(b"other source"), "zstd", 3, Digest.of(b"other tar"))
    cache.store(KEY, OUT, 10, "r.io/a")
    cache.store(other, Digest.of(b"other output"), 20, "r.io/a")
    a, b = entry_path(cache), cache.root / f"sha256-{other.source.hex}-zstd-3.json"
    a_text, b_text = a.read_text(), b.read_text()
    a.write_text(b_text)
    b.write_text(a_text)
    assert cache.lookup(KEY) is None and cache.lookup(other) is None


def test_an_older_versions_entry_is_a_quiet_miss(cache):
    cache.root.mkdir(parents=True)
    entry_path(cache).write_text(json.dumps({"digest": str(OUT), "size": 10, "locations": ["r.io/a"]}))
    notes = Notes()
    assert cache.lookup(KEY, notes) is None and notes == []


def test_oversized_entry_is_a_miss(cache):
    doc = written(cache)
    entry_path(cache).write_text(json.dumps(doc) + " " * 70_000)
    assert cache.lookup(KEY) is None


def test_symlinked_entry_is_not_followed(cache, tmp_path):
    doc = written(cache)
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(doc))
    entry_path(cache).unlink()
    entry_path(cache).symlink_to(target)
    notes = Notes()
    assert cache.lookup(KEY, notes) is None and "symbolic link" in notes[0]


def test_fifo_entry_is_refused_without_waiting(cache):
    cache.root.mkdir(parents=True)
    os.mkfifo(entry_path(cache), 0o600)
    notes, result = Notes(), []
    reader = threading.Thread(target=lambda: result.append(cache.lookup(KEY, notes)), daemon=True)
    reader.start()
    reader.join(10)
    assert result == [None] and "not a regular file" in notes[0]


@pytest.mark.parametrize("which", ["base", "blobs", "entry"])
def test_group_writable_parts_make_the_cache_unused(cache, which):
    written(cache)
    path = {"base": cache.base, "blobs": cache.root, "entry": entry_path(cache)}[which]
    path.chmod(stat.S_IMODE(path.stat().st_mode) | stat.S_IWGRP)
    notes = Notes()
    assert cache.lookup(KEY, notes) is None
    assert notes == [f"blob cache: {path}: {'entry' if which == 'entry' else 'directory'} writable by others "
                     f"(mode {stat.S_IMODE(path.stat().st_mode):04o}); not used"]
    cache.store(KEY, OUT, 10, "r.io/b", notes)  # nor written to
    if which != "entry":
        assert json.loads(entry_path(cache).read_text())["locations"] == ["r.io/a"]


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a file away")
def test_an_entry_owned_by_another_user_is_unused(cache):
    written(cache)
    os.chown(entry_path(cache), 4242, 4242)
    notes = Notes()
    assert cache.lookup(KEY, notes) is None and "not owned by you (uid 4242)" in notes[0]


def test_directories_are_created_private_whatever_the_umask(cache):
    old = os.umask(0)
    try:
        written(cache)
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.base.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry_path(cache).stat().st_mode) == 0o600


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EIO, "I/O error")])
def test_a_failed_write_leaves_nothing_and_says_so_once(cache, monkeypatch, error):
    import ocipush.seal as module  # the entry is written there

    real = module.os.fdopen

    class Failing:
        def __init__(self, fd, mode):
            self.file = real(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[:10])
            raise error

    monkeypatch.setattr(module.os, "fdopen", Failing)
    notes = Notes()
    cache.store(KEY, OUT, 10, "r.io/a", notes)
    cache.store(CacheKey(Digest.of(b"2"), "zstd", 3, TAR), OUT, 10, "r.io/a", notes)
    assert len(notes) == 1 and error.strerror in notes[0] and str(cache.root) in notes[0]
    assert list(cache.root.iterdir()) == []


def test_an_interrupted_write_leaves_nothing(cache, monkeypatch):
    import ocipush.seal as module  # the entry is written there

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cache.store(KEY, OUT, 10, "r.io/a")
    assert list(cache.root.iterdir()) == []


def test_forget_drops_a_location_or_the_entry(cache):
    cache.store(KEY, OUT, 10, "r.io/a")
    cache.store(KEY, OUT, 10, "r.io/b")
    cache.forget(KEY, "r.io/a")
    assert cache.lookup(KEY).locations == ("r.io/b",)
    cache.forget(KEY)
    assert cache.lookup(KEY) is None


def test_store_keeps_only_registry_locations(cache):
    cache.store(KEY, OUT, 10, "oci:/tmp/layout")
    assert cache.lookup(KEY).locations == ()


def attrs_evolve(key: CacheKey, **changes) -> CacheKey:
    import attrs

    return attrs.evolve(key, **changes)


# -- a lying HEAD ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(200_000), LayerSpec(1000, "text")], ref="v1")


def blob_heads(request) -> bool:
    return request.method == "HEAD" and "/blobs/" in request.path


LIES = {
    "short": lambda d: {"Content-Length": "5", "Docker-Content-Digest": d},
    "long": lambda d: {"Content-Length": "9" * 12, "Docker-Content-Digest": d},
    "zero": lambda d: {"Content-Length": "0"},
    "other-digest": None,  # the right length, another digest: filled in per blob below
}


@pytest.mark.parametrize("lie", LIES, ids=LIES.keys())
def test_a_lying_head_means_upload(image, lie, capsys):
    sizes = {layer.digest: layer.size for layer in [image.config, *image.layers]}

    def answer(digest: str) -> Reply:
        if lie == "other-digest":
            return Reply(200, {"Content-Length": str(sizes[digest]), "Docker-Content-Digest": "sha256:" + "5" * 64})
        return Reply(200, LIES[lie](digest))

    with FakeRegistry() as fake:
        for digest in sizes:
            fake.inject(lambda r, d=digest: blob_heads(r) and r.path.endswith(d), answer(digest), times=10)
        code = main([f"oci:{image.layout}", f"{fake.host}/r:v1", "--retry-delay", "0.01"])
        err = capsys.readouterr().err
        assert code == 0, err
        for digest in sizes:
            assert hashlib.sha256(fake.blobs["r"][digest]).hexdigest() == digest.split(":")[1]
        assert err.count("answered 200 but") == len(sizes)


def test_a_dry_run_does_not_believe_a_lying_head(image):
    with FakeRegistry() as fake:
        fake.inject(blob_heads, Reply(200, {"Content-Length": "5"}), times=10)
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", PushOptions(dry_run=True, retry=FAST))
        assert {b.action for b in result.blobs} == {"would upload"}


@pytest.mark.integration
def test_a_lying_head_through_a_gateway_to_the_real_registry(image, faulty_proxy, registry, repo, tmp_path):
    """A gateway answers every blob HEAD 200 with an empty body (Content-Length: 0)."""
    from tests.services import skopeo_pull

    lie = {"Docker-Content-Digest": image.layers[0].digest}
    faulty_proxy.respond(200, lie, method="HEAD", path="/blobs/", times=None)
    result = push(f"oci:{image.layout}", f"{faulty_proxy.host}/{repo}:v1", PushOptions(retry=FAST))
    assert {b.action for b in result.blobs} == {"uploaded"}
    skopeo_pull(f"{registry.host}/{repo}:v1", tmp_path / "pulled")


def test_a_truncated_blob_in_a_layout_is_written_again(image, tmp_path):
    dest = tmp_path / "dest"
    push(f"oci:{image.layout}", f"oci:{dest}:v1")
    blob = dest / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]
    blob.write_bytes(blob.read_bytes()[:100])
    result = push(f"oci:{image.layout}", f"oci:{dest}:v1")
    layer = next(b for b in result.blobs if str(b.source.digest) == image.layers[0].digest)
    assert layer.action == "uploaded" and blob.stat().st_size == image.layers[0].size


# -- serverless-registry's HEAD on a mounted blob --------------------------------------

class NoteReporter(Reporter):
    def __init__(self):
        self.notes = Notes()

    def note(self, message: str) -> None:
        self.notes(message)


def test_a_mount_the_registry_does_not_confirm_is_uploaded_once(image, tmp_path):
    options = PushOptions(compression=Compression("zstd"), cache=BlobCache(tmp_path / "cache"), retry=FAST)
    layer = image.layers[0].digest
    reporter = NoteReporter()

    def pushed(repo: str):
        result = push(f"oci:{image.layout}", f"{fake.host}/{repo}:v1", options, reporter)
        return next(b for b in result.blobs if str(b.source.digest) == layer)

    with FakeRegistry(serverless_mount_head=True) as fake:
        first = pushed("a")
        assert first.action == "uploaded"
        mark = len(fake.log)
        second = pushed("b")
        output = str(second.pushed.digest)
        assert second.action == "uploaded" and output == str(first.pushed.digest)
        assert ("b", output) not in fake.links  # a copy of its own, not a link
        assert [r for r in fake.log[mark:] if r.method == "POST" and r.query.get("mount") == output]
        assert [n for n in reporter.notes if f"does not confirm the blob mounted from {fake.host}/a" in n]
        # The next push to b believes its HEAD: no mount, no upload, no loop.
        mark = len(fake.log)
        third = pushed("b")
        assert third.action == "skipped"
        assert not [r for r in fake.log[mark:] if r.method in ("POST", "PATCH")]
        # And "a" is no longer offered as a mount source: its mounts are links.
        key = CacheKey(Digest.parse(layer), "zstd", 3, Digest.parse(image.layers[0].diff_id))
        assert options.cache.lookup(key).locations == (f"{fake.host}/b",)
