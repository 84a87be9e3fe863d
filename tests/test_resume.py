"""Resuming an upload an earlier run left (issue 14), against the strict fake registry:
retries exhausted keep the upload and its record, the next run sends only the rest; an
expired upload, a ``Range`` off the equal-chunk grid, a registry without ``GET`` on
uploads, ``--no-resume`` and every kind of tampered record start the blob afresh — never
a broken image.  The real registry behind nginx, killed with SIGKILL: test_resume_registry.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.compression import Compression
from ocipush.content import UploadPoint
from ocipush.digest import Digest
from ocipush.errors import RegistryError
from ocipush.push import PushOptions, push
from ocipush.registry.retry import RetryPolicy
from ocipush.registry.uploadstate import resume_problem
from ocipush.resume import BlobIdentity, UploadRecords
from tests.fakeregistry import Alter, FakeRegistry, Reply, html
from tests.imagegen import LayerSpec, make_layout
from tests.test_upload_protocol import stored

FAST = RetryPolicy(attempts=1, delay=0.01, max_delay=0.05, sleeper=lambda seconds: None)
CHUNK = 50_000


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    # One 300 KB layer: six chunks of 50 KB (and a short seventh: the tar headers).
    return make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(300_000)], ref="v1")


@pytest.fixture
def records(tmp_path) -> UploadRecords:
    return UploadRecords(tmp_path / "cache" / "uploads", tmp_path / "state" / "key")


def options(records: UploadRecords | None, **kw) -> PushOptions:
    return PushOptions(retry=FAST, jobs=1, chunk_size=CHUNK, resume=records, **kw)


def layer_patches_from(n: int):
    """A predicate: every PATCH of a full layer chunk from the ``n``-th on."""
    seen = 0

    def match(request) -> bool:
        nonlocal seen
        if request.method != "PATCH" or len(request.body) != CHUNK:
            return False
        seen += 1
        return seen >= n

    return match


def interrupted(fake: FakeRegistry, image, records: UploadRecords, **kw) -> list[str]:
    """A push whose layer's 3rd chunk keeps failing (503) past the retries: exit 4, the
    upload kept at 2 chunks.  Returns the notes said."""
    fake.inject(layer_patches_from(3), html(503), times=1000)
    notes: list[str] = []
    with pytest.raises(RegistryError) as failed:
        push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records, **kw), _Notes(notes))
    assert failed.value.exit_code == 4
    fake._faults.clear()
    return notes


class _Notes:
    """An ``events.Events`` that keeps the notes."""

    def __init__(self, notes: list[str]):
        self.notes = notes

    def note(self, message: str) -> None:
        self.notes.append(message)

    def note_at_end(self, topic: str, message: str) -> None:
        self.notes.append(message)

    def blob_state(self, *args) -> None: ...

    def blob_position(self, *args) -> None: ...

    def blob_finished(self, *args) -> None: ...

    def manifest_pushed(self, *args) -> None: ...


def entries(records: UploadRecords) -> list[Path]:
    return sorted(records.root.glob("*.json")) if records.root.exists() else []


def layer_bytes(fake: FakeRegistry, since: int) -> int:
    """Bytes sent by the PATCHes of layer chunks after the ``since``-th log record."""
    return sum(r.body_length for r in fake.log[since:] if r.method == "PATCH" and r.body_length > 2000)


def layer_result(result):
    [layer] = [b for b in result.blobs if b.source.size > 2000]
    return layer


@pytest.mark.parametrize("compression", [None, "zstd"], ids=["as-is", "zstd"])
def test_exhausted_retries_keep_the_upload_and_the_next_run_sends_the_rest(image, records, compression):
    extra = {"compression": Compression(compression)} if compression else {}
    with FakeRegistry(equal_chunks=True) as fake:
        interrupted(fake, image, records, **extra)
        assert not [r for r in fake.log if r.method == "DELETE"], "the kept upload was cancelled"
        assert records.kept() == 1 and len(entries(records)) == 1
        [upload] = fake._uploads.values()
        assert len(upload.data) == 2 * CHUNK

        mark = len(fake.log)
        again: list[str] = []
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records, **extra), _Notes(again))
        layer = layer_result(result)
        assert layer.resumed_at == 2 * CHUNK, again
        assert any(f"resuming the upload an earlier run left, at {2 * CHUNK} bytes" in n for n in again), again
        # Only the missing part of the layer went (and the config, when the first run had not sent it).
        missing = layer.pushed.size - 2 * CHUNK
        sent = sum(r.body_length for r in fake.log[mark:] if r.method == "PATCH")
        assert missing <= sent <= missing + image.config.size, (sent, missing)
        assert fake.blobs["r"][str(layer.pushed.digest)]  # committed, digest-checked by the fake
        if compression is None:
            stored(fake, "r", image)
        assert entries(records) == []  # forgotten once committed


def test_the_json_summary_says_where_a_blob_resumed(image, records):
    from ocipush.report import summary_json

    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        summary = json.loads(summary_json(push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records))))
        assert sorted(b["resumed_at"] is not None for b in summary["blobs"]) == [False, True]
        assert [b["resumed_at"] for b in summary["blobs"] if b["resumed_at"]] == [2 * CHUNK]


def test_a_dry_run_shows_the_resumable_blob(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records, dry_run=True))
        actions = [b.action for b in result.blobs if b.resumed_at is not None]
        assert actions == [f"would upload (resuming an earlier run's upload, recorded at {2 * CHUNK} bytes)"]
        assert len(entries(records)) == 1  # a dry run changes nothing


def fresh_start(fake: FakeRegistry, image, records: UploadRecords, **kw) -> tuple[list[str], object]:
    """The next run: the layer goes up whole on a new upload; the image arrives intact."""
    mark = len(fake.log)
    notes: list[str] = []
    result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records, **kw), _Notes(notes))
    layer = layer_result(result)
    assert layer.resumed_at is None, notes
    assert layer_bytes(fake, mark) >= layer.pushed.size - CHUNK  # the whole layer (its short tail aside)
    stored(fake, "r", image)
    assert entries(records) == []
    return notes, layer


def test_an_expired_upload_starts_afresh(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        fake._uploads.clear()  # purged by the registry: 404 BLOB_UPLOAD_UNKNOWN
        notes, _ = fresh_start(fake, image, records)
        assert any("cannot be resumed" in n and "404" in n for n in notes), notes


def test_an_expired_upload_on_serverless_registry_starts_afresh(image, records):
    with FakeRegistry(location_style="state", gone_status=500, empty_range="0--1") as fake:
        interrupted(fake, image, records)
        fake._uploads.clear()  # serverless-registry answers 500 to a state it no longer has
        notes, _ = fresh_start(fake, image, records)
        assert any("cannot be resumed" in n for n in notes), notes


def test_a_range_off_the_equal_chunk_grid_starts_afresh(image, records):
    with FakeRegistry(equal_chunks=True) as fake:
        interrupted(fake, image, records)
        status = lambda r: r.method == "GET" and "/blobs/uploads/" in r.path  # noqa: E731
        fake.inject(status, Alter(headers={"Range": f"0-{CHUNK + CHUNK // 2 - 1}"}))
        notes, _ = fresh_start(fake, image, records)
        assert any("not a multiple of the upload's chunk size" in n for n in notes), notes


def test_a_stream_resumed_off_the_chunk_grid_restarts_once_before_sending_anything_wrong(image, records):
    """A recompressed stream's size is known only at its end, so a ``Range`` off the grid
    may be its end: it is tried, and the first chunk past it restarts the blob."""
    zstd = {"compression": Compression("zstd")}
    with FakeRegistry(equal_chunks=True) as fake:
        interrupted(fake, image, records, **zstd)
        status = lambda r: r.method == "GET" and "/blobs/uploads/" in r.path  # noqa: E731
        fake.inject(status, Alter(headers={"Range": f"0-{CHUNK + CHUNK // 2 - 1}"}))
        mark = len(fake.log)
        notes: list[str] = []
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records, **zstd), _Notes(notes))
        assert any("not a chunk boundary" in n and "uploading the blob again" in n for n in notes), notes
        assert layer_result(result).resumed_at is None
        resumed_patches = [r for r in fake.log[mark:] if r.method == "PATCH"]
        assert resumed_patches[0].headers["content-range"].startswith("0-")  # nothing sent past the odd end
        assert fake.blobs["r"][str(layer_result(result).pushed.digest)]


@pytest.mark.parametrize("answer", [Reply(405), html(404), Reply(204)], ids=["405", "html-404", "no-Range"])
def test_a_registry_that_cannot_say_where_an_upload_stands_starts_afresh(image, records, answer):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        fake.inject(lambda r: r.method == "GET" and "/blobs/uploads/" in r.path, answer, times=10)
        notes, _ = fresh_start(fake, image, records)
        assert any("cannot be resumed" in n for n in notes), notes


def test_no_resume_cancels_the_recorded_upload(image, records, tmp_path):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        [left] = fake._uploads
        no_resume = UploadRecords(records.root, records.key_file, resume=False)
        notes, _ = fresh_start(fake, image, no_resume)
        assert any("is cancelled (--no-resume)" in n for n in notes), notes
        assert left not in fake._uploads
        assert [r.path for r in fake.log if r.method == "DELETE"] == [f"/v2/r/blobs/uploads/{left}"]


# -- a tampered record: a fresh upload or a clean error, never a broken image -------------------

def _rewrite(records: UploadRecords, change, writer: UploadRecords | None = None) -> None:
    """Re-seal the only entry with ``change(point)`` applied (by ``writer``, default the
    same records): what a user, a bug or another machine could write."""
    [path] = entries(records)
    doc = json.loads(path.read_bytes())
    identity = BlobIdentity(Digest.parse(doc["source"]), doc["format"], doc["level"],
                            Digest.parse(doc["diff_id"]) if doc["diff_id"] else None, doc["compressor"])
    point = UploadPoint(doc["url"], doc["offset"], doc["chunk_size"], doc["minimum"], doc["maximum"])
    (writer or records).write(doc["location"], identity, change(point))
    assert entries(records) == [path]


def test_a_recorded_offset_beyond_the_registrys_resumes_where_the_registry_stands(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        _rewrite(records, lambda p: UploadPoint(p.url, 5 * CHUNK, p.chunk_size))
        mark = len(fake.log)
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records))
        assert layer_result(result).resumed_at == 2 * CHUNK  # the registry's word
        assert layer_bytes(fake, mark) <= layer_result(result).pushed.size - 2 * CHUNK
        stored(fake, "r", image)


def test_a_record_naming_another_blobs_upload_restarts_the_blob_once(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        # Another upload of the repository holding two chunks of other bytes.
        other = httpx.post(f"{fake.url}/v2/r/blobs/uploads/")
        url = fake.url + other.headers["Location"]
        for start in (0, CHUNK):
            moved = httpx.patch(url, content=os.urandom(CHUNK), headers={
                "Content-Range": f"{start}-{start + CHUNK - 1}", "Content-Type": "application/octet-stream"})
            url = fake.url + moved.headers["Location"]
        _rewrite(records, lambda p: UploadPoint(url, p.offset, p.chunk_size))
        notes: list[str] = []
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records), _Notes(notes))
        assert any("could not be finished" in n and "uploading the blob again" in n for n in notes), notes
        assert layer_result(result).resumed_at is None
        stored(fake, "r", image)
        assert entries(records) == []


def test_a_record_on_another_origin_is_ignored(image, records):
    with FakeRegistry() as fake, FakeRegistry() as elsewhere:
        interrupted(fake, image, records)
        _rewrite(records, lambda p: UploadPoint(p.url.replace(fake.host, elsewhere.host), p.offset, p.chunk_size))
        notes, _ = fresh_start(fake, image, records)
        assert any("is on another origin" in n for n in notes), notes
        assert elsewhere.log == []  # nothing, credentials least of all, went there


@pytest.mark.parametrize("damage", ["garbage", "truncated", "unsealed", "other key"])
def test_a_damaged_or_foreign_record_is_a_miss(image, records, tmp_path, damage):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        [path] = entries(records)
        data = path.read_bytes()
        if damage == "garbage":
            path.write_bytes(os.urandom(200))
        elif damage == "truncated":
            path.write_bytes(data[: len(data) // 2])
        elif damage == "unsealed":
            doc = json.loads(data)
            doc["offset"] = 0
            path.write_bytes(json.dumps(doc).encode())
        else:  # a record copied from another machine (or forged), sealed under its key
            _rewrite(records, lambda p: p, UploadRecords(records.root, tmp_path / "other" / "key"))
        notes, _ = fresh_start(fake, image, records)
        assert any("damaged, or not sealed by this user's key" in n for n in notes), notes


def test_a_record_directory_others_can_write_is_not_used(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        records.root.chmod(0o777)
        [left] = entries(records)
        try:
            notes: list[str] = []
            result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records), _Notes(notes))
        finally:
            records.root.chmod(0o700)
        assert layer_result(result).resumed_at is None
        stored(fake, "r", image)
        assert any("writable by others" in n for n in notes), notes
        assert entries(records) == [left]  # nothing read, written or removed there


def test_entries_are_private_and_written_whole(image, records):
    with FakeRegistry() as fake:
        interrupted(fake, image, records)
        [path] = entries(records)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(records.root.stat().st_mode) == 0o700
        assert list(records.root.glob(".tmp-*")) == []


# -- the rule, for any offsets -------------------------------------------------------------------

@given(recorded=st.integers(0, 40), held=st.integers(0, 45), step=st.sampled_from([None, 1, 3, 8]),
       size=st.one_of(st.none(), st.integers(0, 45)))
def test_resume_goes_on_only_where_the_rules_allow(recorded, held, step, size):
    problem = resume_problem(UploadPoint("http://r/u", recorded, step), held, size)
    allowed = (
        held <= recorded + (step or 0)
        and (size is None or held <= size)
        and (held == 0 or size is None or held == size or (step is not None and held % step == 0))
    )
    assert (problem is None) == allowed, problem


def test_a_registry_that_does_not_say_what_it_holds_cannot_resume():
    assert resume_problem(UploadPoint("http://r/u", 8, 8), None, None) is not None


def test_the_cli_says_last_that_the_same_command_resumes(image, tmp_path, monkeypatch, capsys, user_config):
    from ocipush.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    argv = [f"oci:{image.layout}", "", "--chunk-size", str(CHUNK), "--jobs", "1", "--retry", "0", "-q"]
    with FakeRegistry() as fake:
        argv[1] = f"{fake.host}/r:v1"
        fake.inject(layer_patches_from(3), html(503), times=1000)
        assert main(argv) == 4
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("ocipush: PATCH "), err
        assert err[0].endswith("; 1 partial upload kept: run the same command again to resume"), err
        fake._faults.clear()
        assert main([*argv, "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert [b["resumed_at"] for b in summary["blobs"] if b["resumed_at"]] == [2 * CHUNK]
        assert list((tmp_path / "xdg" / "ocipush" / "uploads").glob("*.json")) == []
        stored(fake, "r", image)


def test_a_failure_that_keeps_nothing_says_nothing_more(image, tmp_path, monkeypatch, capsys, user_config):
    from ocipush.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with FakeRegistry() as fake:
        fake.inject(layer_patches_from(3), Reply(400), times=1000)  # not a server failure: cancelled
        assert main([f"oci:{image.layout}", f"{fake.host}/r:v1", "--chunk-size", str(CHUNK), "-q"]) == 4
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "kept" not in err[0], err
        assert list((tmp_path / "xdg" / "ocipush" / "uploads").glob("*.json")) == []


@pytest.mark.parametrize("compression", [None, "zstd"], ids=["as-is", "zstd"])
def test_an_upload_kept_after_its_commit_failed_is_only_committed(image, records, compression):
    extra = {"compression": Compression(compression)} if compression else {}
    with FakeRegistry() as fake:
        big = lambda r: r.method == "PUT" and "/blobs/uploads/" in r.path and r.query.get("digest") and any(  # noqa: E731
            u.data and len(u.data) > 2000 for u in fake._uploads.values())
        fake.inject(big, html(502), times=1000)
        with pytest.raises(RegistryError):
            push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records, **extra))
        fake._faults.clear()
        [upload] = fake._uploads.values()
        mark = len(fake.log)
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(records, **extra))
        assert layer_result(result).resumed_at == len(upload.data)
        assert sum(r.body_length for r in fake.log[mark:] if r.method == "PATCH") <= image.config.size
        assert fake.blobs["r"][str(layer_result(result).pushed.digest)]
        assert entries(records) == []
