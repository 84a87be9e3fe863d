"""Resume across runs under attack (issue 14): two runs of one push at once, a registry
whose status answer lies, a record with credentials in its URL or a secret in its query,
stale records piling up.  The strict fake registry; helpers from tests/test_resume.py."""

from __future__ import annotations

import json
import os
import time

import pytest

from ocipush.compression import Compression
from ocipush.content import UploadPoint
from ocipush.digest import Digest
from ocipush.push import push
from ocipush.resume import STALE, BlobIdentity, UploadRecords
from tests.fakeregistry import Alter, Drop, FakeRegistry, Reply, html, oci_error
from tests.faultproxy import FaultProxy
from tests.helpers import wait_until
from tests.imagegen import LayerSpec, make_layout
from tests.services import skopeo_pull
from tests.test_attack_zstdchunked import deadline
from tests.test_resume import (
    CHUNK,
    _Notes,
    _rewrite,
    entries,
    fresh_start,
    interrupted,
    layer_result,
    options,
    stored,
)
from tests.test_resume import image as image
from tests.test_resume import records as records
from tests.test_resume_registry import LAYER_CHUNK, argv, rerun, start
from tests.zstdchunked_reader import check_layer

UPLOADS = "/blobs/uploads/"


def _upload_requests(fake: FakeRegistry, since: int, path: str) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.log[since:] if r.path == path]


def _recorded_path(records: UploadRecords) -> str:
    [entry] = entries(records)
    url = json.loads(entry.read_bytes())["url"]
    return "/" + url.split("/", 3)[3].split("?")[0]


# -- two runs of the same push at once ------------------------------------------------------------


def test_a_run_that_finds_the_record_in_use_leaves_that_upload_alone(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        [entry] = entries(records)
        before = entry.read_bytes()
        path = _recorded_path(records)
        # Another run of the same push, now resuming that upload: it holds the record.
        other = UploadRecords(records.root, records.key_file)
        identity = _identity_of(entry)
        location = f"{fake.host}/r"
        theirs = other.journal(location, identity)
        assert theirs.resume_point() is not None
        try:
            mark = len(fake.log)
            notes: list[str] = []
            result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records), _Notes(notes))
        finally:
            theirs.release()
        assert any("another ocipush run is uploading this blob" in n for n in notes), notes
        assert layer_result(result).resumed_at is None
        assert _upload_requests(fake, mark, path) == [], "this run touched the other run's upload"
        assert entry.read_bytes() == before, "this run rewrote the other run's record"
        stored(fake, "r", image)
        # The other run finished: the next run resumes (or here, finds the blob there).
        assert UploadRecords(records.root, records.key_file).journal(location, identity).resume_point() is not None


def _identity_of(entry) -> BlobIdentity:
    doc = json.loads(entry.read_bytes())
    diff_id = Digest.parse(doc["diff_id"]) if doc["diff_id"] else None
    return BlobIdentity(Digest.parse(doc["source"]), doc["format"], doc["level"], diff_id, doc["compressor"])


def test_locks_go_with_their_entries(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records))
        assert layer_result(result).resumed_at == 2 * CHUNK
        assert sorted(p.name for p in records.root.iterdir()) == []


def test_a_failed_run_lets_go_of_its_lock_in_process(image, records):
    """``push`` called again by a program (not a new process): the kept upload resumes."""
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        assert sorted(p.suffix for p in records.root.iterdir()) in ([".json"], [".json", ".lock"])
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records))
        assert layer_result(result).resumed_at == 2 * CHUNK


# -- a status answer that lies -------------------------------------------------------------------


@pytest.mark.parametrize("range_", [
    f"0-{10 * CHUNK - 1}",  # beyond the record and its one chunk
    "0-99999999999999999999999",  # huge
    "0--5", "-5-10", "5-10", f"0-{CHUNK + 7}",  # negative, not from 0, off the grid
])
def test_a_lying_range_on_resume_starts_afresh(image, records, range_):
    with FakeRegistry(equal_chunks=True) as fake:
        interrupted(fake, image, records)
        fake.inject(lambda r: r.method == "GET" and UPLOADS in r.path, Alter(headers={"Range": range_}))
        notes, _ = fresh_start(fake, image, records)
        assert any("cannot be resumed" in n for n in notes), notes


def test_a_status_answer_moving_the_upload_to_another_origin_gets_no_credentials(image, records):
    with FakeRegistry() as fake, FakeRegistry() as elsewhere:
        interrupted(fake, image, records)
        fake.inject(lambda r: r.method == "GET" and UPLOADS in r.path,
                    Alter(headers={"Location": f"http://user:pw@{elsewhere.host}/v2/r/blobs/uploads/x"}))
        notes, _ = fresh_start(fake, image, records)
        assert any("cannot be resumed" in n and "user name or password" in n for n in notes), notes
        assert elsewhere.log == []


# -- what a record may name ----------------------------------------------------------------------


def test_a_record_url_with_credentials_is_not_used(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        _rewrite(records, lambda p: UploadPoint(p.url.replace("://", "://admin:hunter2@"), p.offset, p.chunk_size))
        notes, _ = fresh_start(fake, image, records)
        assert any("another origin" in n for n in notes), notes
        assert not any("hunter2" in n for n in notes)
        assert not [r for r in fake.log if "authorization" in r.headers]


def test_an_upload_urls_state_is_never_printed(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        _rewrite(records, lambda p: UploadPoint(p.url + ("&" if "?" in p.url else "?") + "_state=TOPSECRET",
                                                p.offset, p.chunk_size))
        fake.inject(lambda r: r.method == "GET" and UPLOADS in r.path, Reply(404), times=10)
        notes, _ = fresh_start(fake, image, records)
        assert any("cannot be resumed" in n for n in notes), notes
        assert not any("TOPSECRET" in n for n in notes), notes


# -- stale records --------------------------------------------------------------------------------


def test_stale_records_are_pruned_by_the_next_run_that_writes_one(tmp_path):
    records = UploadRecords(tmp_path / "uploads", tmp_path / "key")
    old = BlobIdentity(Digest.of(b"old"))
    records.write("r.io/a", old, UploadPoint("https://r.io/v2/a/blobs/uploads/1", 10, 5))
    stale = records.path("r.io/a", old)
    leftover = records.root / ".tmp-killed.json"  # a write killed before its rename
    leftover.write_bytes(b"{")
    long_ago = time.time() - STALE - 60
    for path in (stale, leftover):
        os.utime(path, (long_ago, long_ago))
    in_use = UploadRecords(records.root, records.key_file).journal("r.io/a", BlobIdentity(Digest.of(b"busy")))
    in_use.confirmed(UploadPoint("https://r.io/v2/a/blobs/uploads/2", 0, 5))
    busy_lock = records.path("r.io/a", BlobIdentity(Digest.of(b"busy"))).with_suffix(".lock")
    os.utime(busy_lock, (long_ago, long_ago))
    try:
        later = UploadRecords(records.root, records.key_file)
        new = BlobIdentity(Digest.of(b"new"))
        later.write("r.io/a", new, UploadPoint("https://r.io/v2/a/blobs/uploads/3", 0, 5))
        assert not stale.exists() and not leftover.exists()
        assert later.path("r.io/a", new).exists()
        assert busy_lock.exists(), "a lock another run holds was removed"
    finally:
        in_use.release()


def test_an_interrupt_that_cancels_after_the_thread_let_go_still_forgets_the_entry(tmp_path):
    """Ctrl-C: the uploading thread's request is cut, it ends (releasing the lock), and only
    then does the interrupt's cleanup DELETE the upload and forget it, or keep it."""
    records = UploadRecords(tmp_path / "uploads", tmp_path / "key")
    blob = BlobIdentity(Digest.of(b"blob"))
    journal = records.journal("r.io/a", blob)
    journal.confirmed(UploadPoint("https://r.io/v2/a/blobs/uploads/1", 10, 5))
    journal.release()  # the thread's finally
    journal.kept()  # --keep-partial: counted for the last line
    assert records.kept() == 1
    journal.done()  # the default: cancelled and forgotten
    assert list(records.root.iterdir()) == []
    # A journal that never held the lock (another run had it) forgets nothing.
    other = records.journal("r.io/a", blob)
    holder = UploadRecords(records.root, records.key_file).journal("r.io/a", blob)
    holder.confirmed(UploadPoint("https://r.io/v2/a/blobs/uploads/2", 0, 5))
    try:
        assert other.resume_point() is None
        other.done()
        assert records.path("r.io/a", blob).exists()
    finally:
        holder.release()


def test_a_resumed_blob_whose_digest_keeps_failing_ends_without_a_loop(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        layer_put = lambda r: r.method == "PUT" and UPLOADS in r.path and r.query.get("digest") != "x"  # noqa: E731
        fake.inject(layer_put, oci_error(400, "DIGEST_INVALID", "digest did not match"), times=100)
        mark = len(fake.log)
        with pytest.raises(Exception) as failed:
            push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records))
        assert getattr(failed.value, "exit_code", None) == 4
        puts = [r for r in fake.log[mark:] if r.method == "PUT"]
        assert 1 <= len(puts) <= 3, f"{len(puts)} commits: the resumed blob's restarts are not bounded"
        assert not fake.manifests.get("r", {}), "a manifest was pushed over a blob that failed"


@pytest.mark.parametrize("kind", ["symlink", "fifo", "huge"])
def test_an_entry_that_is_not_a_small_plain_file_is_a_miss(tmp_path, kind):
    records = UploadRecords(tmp_path / "uploads", tmp_path / "key")
    blob = BlobIdentity(Digest.of(b"blob"))
    records.write("r.io/a", blob, UploadPoint("https://r.io/v2/a/blobs/uploads/1", 10, 5))
    path = records.path("r.io/a", blob)
    if kind == "symlink":  # a valid entry, but reached through a link
        copy = tmp_path / "elsewhere.json"
        copy.write_bytes(path.read_bytes())
        path.unlink()
        path.symlink_to(copy)
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    else:
        path.write_bytes(b" " * (1 << 20) + path.read_bytes())
    notes: list[str] = []
    with deadline(10):
        assert records.lookup("r.io/a", blob, notes.append) is None
    assert notes and all(len(n.splitlines()) == 1 for n in notes), notes


@pytest.mark.parametrize("fault", [Drop(), html(503)], ids=["no-answer", "503"])
def test_a_registry_that_does_not_answer_the_status_get_keeps_the_record(image, records, fault):
    """The network is still down when the next run asks where the upload stands: the run
    fails (exit 4) and keeps the record, instead of throwing away what the registry holds."""
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        [entry] = entries(records)
        before = entry.read_bytes()
        fake.inject(lambda r: r.method == "GET" and UPLOADS in r.path, fault, times=100)
        with pytest.raises(Exception) as failed:
            push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records))
        assert getattr(failed.value, "exit_code", None) == 4, failed.value
        assert records.kept() == 1
        assert entries(records) == [entry] and entry.read_bytes() == before
        assert not [r for r in fake.log if r.method == "DELETE"], "the kept upload was cancelled"
        fake._faults.clear()
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records))
        assert layer_result(result).resumed_at == 2 * CHUNK
        stored(fake, "r", image)


def test_a_zstd_chunked_layer_resumes_and_its_toc_describes_the_whole_blob(image, records):
    """Recompressed to zstd:chunked again from the start, the bytes before the offset are
    not sent; the annotations (computed in this run) describe the blob the registry holds."""
    chunked = {"compression": Compression("zstd:chunked")}
    with FakeRegistry() as fake:
        interrupted(fake, image, records, **chunked)
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records, **chunked))
        layer = layer_result(result)
        assert layer.resumed_at == 2 * CHUNK
        blob = fake.blobs["r"][str(layer.pushed.digest)]
        check_layer(blob, layer.pushed.annotations or {}, image.layers[0].diff_id)


# -- two real processes at once, the real CNCF registry behind nginx ------------------------------


@pytest.mark.integration
def test_two_ocipush_processes_on_one_blob_never_share_its_upload(make_proxy, repo, tmp_path, user_config,
                                                                   monkeypatch):
    """Run A holds the layer's upload (its 4th chunk stalled in the fault proxy); run B, the
    same command, uploads the layer on an upload of its own and pushes a verified image;
    A is then killed, and run C goes on with A's upload from A's record."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    uploads = tmp_path / "xdg" / "ocipush" / "uploads"
    big = make_layout(tmp_path / "img", [LayerSpec(10_000_000)], ref="v1")
    nginx = make_proxy()
    with FaultProxy(nginx.host) as front:
        args = argv(big, front.host, repo)
        held = front.stall(120, method="PATCH", nth=4, larger_than=LAYER_CHUNK)
        first = start(args)
        try:
            wait_until(lambda: held.fault.holding.is_set() or first.poll() is not None, 60, "the held chunk")
            assert first.poll() is None, first.communicate()
            [entry] = sorted(uploads.glob("*.json"))
            recorded = entry.read_bytes()
            second = rerun(args)  # the proxy holds only A's chunk: B's pass
            assert "another ocipush run is uploading this blob" in second.stderr, second.stderr
            assert "resuming" not in second.stderr
            assert entry.read_bytes() == recorded, "run B rewrote run A's record"
            skopeo_pull(f"{front.host}/{repo}:v1", tmp_path / "pulled-b")
        finally:
            first.kill()
            first.communicate()
        front.clear()
        rerun(args)  # the layer is there (B's): A's upload is cancelled and its record goes
        skopeo_pull(f"{front.host}/{repo}:v1", tmp_path / "pulled-c")
        assert sorted(uploads.glob("*.json")) == []


def test_a_record_url_is_on_our_origin_by_scheme_host_and_port_defaults_filled():
    """The origin check of a recorded upload URL is the auth guard's (transport.origin_of):
    an explicit default port or an upper-case host is the same origin; credentials in the
    URL, another scheme or port are not."""
    from ocipush.chunks import HostLimits
    from ocipush.registry.client import RegistryClient
    from ocipush.registry.upload import BlobUploader

    client = RegistryClient("reg.example")
    try:
        client.base_url = "https://reg.example"
        uploader = BlobUploader(client, "r", HostLimits(None))
        same = ["https://reg.example/v2/r/blobs/uploads/x", "https://reg.example:443/v2/r/blobs/uploads/x",
                "https://REG.example/v2/r/blobs/uploads/x"]
        other = ["http://reg.example/v2/r/blobs/uploads/x", "https://reg.example:444/v2/r/blobs/uploads/x",
                 "https://u:p@reg.example/v2/r/blobs/uploads/x", "https://evil.example/v2/r/blobs/uploads/x",
                 "https://[::1/x"]
        assert [uploader._same_origin(u) for u in same] == [True] * len(same)
        assert [uploader._same_origin(u) for u in other] == [False] * len(other)
    finally:
        client.close()
