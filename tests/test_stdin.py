"""``docker-archive:-`` and ``oci-archive:-``: archives piped to standard input, spooled to
one temporary file (every producer writes its manifests last, see docs/sources.md).

The spool and the truncation checks run in process; the rest runs ``python -m ocipush``
with a real pipe (``cat ARCHIVE |``, ``tar -c |``), against the registry behind nginx."""

from __future__ import annotations

import io
import os
import pty
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocipush.errors import SourceError, UsageError
from ocipush.sources import load_image, open_source
from ocipush.sources import stdin as stdin_module
from ocipush.sources.stdin import spool
from tests.helpers import registry_manifest

FIXTURES = Path(__file__).parent.parent / "fixtures"
ARCHIVES = FIXTURES / "archives"
WORKTREE = Path(__file__).resolve().parents[1]
MiB = 1 << 20


class Said:
    """A Notes that keeps what it is told."""

    def __init__(self):
        self.lines: list[str] = []

    def note(self, message: str) -> None:
        self.lines.append(message)

    def note_at_end(self, topic: str, message: str) -> None:
        self.lines.append(message)


def end_of_members(data: bytes) -> int:
    """Where the last member's data (padded to a block) ends: the end blocks start there."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


@pytest.fixture
def spool_dir(tmp_path, monkeypatch) -> Path:
    """$TMPDIR of the spool, to see its file go."""
    path = tmp_path / "spool"
    path.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(path))
    return path


# -- the spool, in process -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["skopeo-oci.tar", "skopeo-docker.tar", "docker-legacy.tar.gz"])
def test_spooled_archive_reads_as_the_file_does(spool_dir, name):
    said = Said()
    tar = spool(io.BytesIO((ARCHIVES / name).read_bytes()), said)
    try:
        assert list(spool_dir.iterdir()) == []  # on Linux the spool never has a name (tarindex.temporary_file)
        assert tar.has("manifest.json") or tar.has("index.json")
    finally:
        tar.close()
    assert list(spool_dir.iterdir()) == []  # deleted on close
    assert said.lines[-1].startswith(f"read {(ARCHIVES / name).stat().st_size / 1000:.1f} kB from standard input ")


def test_progress_is_said_while_reading(spool_dir, monkeypatch):
    monkeypatch.setattr(stdin_module, "PROGRESS_EVERY", 4096)
    data = (ARCHIVES / "skopeo-oci.tar").read_bytes()  # 12288 bytes: 3 steps
    said = Said()
    spool(io.BytesIO(data), said).close()
    # Blocks of 1 MiB: one read holds the whole archive, so one line for all the steps passed.
    assert said.lines[0] == "reading standard input: 12.3 kB"
    assert len(said.lines) == 2


def _cuts(data: bytes) -> list[int]:
    end = end_of_members(data)
    return [0, 100, 512, end // 2, end - 1, end, end + 1, end + 512, end + 1023]


@pytest.mark.parametrize("name", ["skopeo-oci.tar", "docker-legacy.tar", "podman-multi.tar"])
def test_every_truncation_is_a_source_error(spool_dir, name):
    data = (ARCHIVES / name).read_bytes()
    for cut in _cuts(data):
        with pytest.raises(SourceError) as caught:
            spool(io.BytesIO(data[:cut])).close()
        assert caught.value.exit_code == 3 and "\n" not in str(caught.value)
        assert str(caught.value).startswith("standard input: ")
    assert list(spool_dir.iterdir()) == []  # nothing left behind by the failures


def test_a_stream_cut_after_its_last_member_lacks_the_end_blocks(spool_dir):
    """What a file on disk may lack (some writers omit the end blocks), a stream may not:
    it was cut. (The archive file reader still takes it.)"""
    data = (ARCHIVES / "skopeo-oci.tar").read_bytes()
    cut = data[: end_of_members(data)]
    with pytest.raises(SourceError, match="ends after member 'oci-layout' without the end-of-archive blocks"):
        spool(io.BytesIO(cut))
    (spool_dir / "cut.tar").write_bytes(cut)
    with open_source(f"oci-archive:{spool_dir / 'cut.tar'}") as source:
        load_image(source)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_cut_before_the_end_blocks_fails_and_any_after_reads(spool_dir, data):
    # Zero padding after the end blocks, as GNU tar and tarfile write records: still whole.
    archive = (ARCHIVES / "buildkit-docker.tar").read_bytes() + bytes(8 * tarfile.BLOCKSIZE)
    complete = end_of_members(archive) + 2 * tarfile.BLOCKSIZE
    cut = data.draw(st.integers(0, len(archive)))
    if cut < complete:
        with pytest.raises(SourceError):
            spool(io.BytesIO(archive[:cut])).close()
    else:
        spool(io.BytesIO(archive[:cut])).close()


def test_a_compressed_stream_cut_short(spool_dir):
    data = (ARCHIVES / "docker-legacy.tar.gz").read_bytes()
    with pytest.raises(SourceError, match=r"^standard input: corrupt gzip data"):
        spool(io.BytesIO(data[:-20]))
    assert list(spool_dir.iterdir()) == []


def test_empty_input(spool_dir):
    with pytest.raises(SourceError, match=r"^standard input: empty archive"):
        spool(io.BytesIO(b""))


def test_a_file_named_dash_is_dot_slash_dash(tmp_path, monkeypatch):
    shutil.copy(ARCHIVES / "skopeo-docker.tar", tmp_path / "-")
    monkeypatch.chdir(tmp_path)
    with open_source("docker-archive:./-") as source:
        load_image(source)


def test_a_terminal_on_stdin_is_a_usage_error(monkeypatch):
    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    with pytest.raises(UsageError, match=r"standard input is a terminal .*; pipe an archive in"):
        open_source("docker-archive:-")


# -- python -m ocipush with a real pipe --------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(WORKTREE), "TMPDIR": str(spool)}


def run_piped(producer: list[str], args: list[str], tmp_path: Path, *, time_file: Path | None = None):
    """``producer | [time] python -m ocipush ARGS``: (exit code, stdout, stderr)."""
    timed = ["/usr/bin/time", "-f", "%M", "-o", str(time_file)] if time_file else []
    feed = subprocess.Popen(producer, stdout=subprocess.PIPE)
    try:
        done = subprocess.run([*timed, sys.executable, "-m", "ocipush", *args], stdin=feed.stdout,
                              capture_output=True, text=True, env=_env(tmp_path), timeout=600)
    finally:
        feed.stdout.close()
        feed.wait(timeout=60)
    assert list((tmp_path / "spool").iterdir()) == []  # the spool is gone, success or not
    return done.returncode, done.stdout, done.stderr


def _push_file(spec: str, dest: str) -> str:
    from ocipush.push import push

    return str(push(spec, dest).digest)


@pytest.mark.integration
@pytest.mark.parametrize("archive, spec", [
    ("skopeo-docker.tar", "docker-archive:-"),
    ("skopeo-oci.tar", "oci-archive:-"),
    ("podman-multi.tar", "docker-archive:-:tworefs:b"),
    ("docker-legacy.tar.gz", "docker-archive:-:other:v2"),
    ("docker25.tar", "oci-archive:-"),
], ids=["docker-archive", "oci-archive", "docker-archive-ref", "gzip", "docker25-as-oci"])
def test_cat_archive_into_ocipush(proxy, repo, tmp_path, archive, spec):
    from tests.services import skopeo_pull

    code, out, err = run_piped(["cat", str(ARCHIVES / archive)], [spec, f"{proxy.host}/{repo}:v1"], tmp_path)
    assert code == 0, err
    assert "from standard input into a temporary file" in err
    from_file = _push_file(spec.replace(":-", f":{ARCHIVES / archive}", 1), f"{proxy.host}/{repo}:file")
    assert out.strip() == f"{proxy.host}/{repo}@{from_file}"  # the same image as from the file
    pulled = open_source(f"oci:{skopeo_pull(f'{proxy.host}/{repo}:v1', tmp_path / 'pulled')}:pulled")
    load_image(pulled)


@pytest.mark.integration
@pytest.mark.parametrize("cut", ["mid-member", "no-end-blocks"])
def test_a_truncated_pipe_exits_3_and_tags_nothing(proxy, repo, tmp_path, cut):
    data = (ARCHIVES / "skopeo-oci.tar").read_bytes()
    end = end_of_members(data)
    (tmp_path / "cut.tar").write_bytes(data[: end - 10 if cut == "mid-member" else end])
    code, _, err = run_piped(["cat", str(tmp_path / "cut.tar")], ["oci-archive:-", f"{proxy.host}/{repo}:v1"],
                             tmp_path)
    assert code == 3, err
    assert err.strip().splitlines()[-1].startswith("ocipush: standard input: truncated")
    assert registry_manifest(proxy.host, repo, "v1").status_code == 404


def test_a_terminal_on_stdin_exits_2(tmp_path):
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "ocipush", "docker-archive:-", "localhost:5000/x:v1"],
                              stdin=follower, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert done.returncode == 2
    assert "standard input is a terminal" in done.stderr and "docker save IMAGE | ocipush" in done.stderr


def test_password_stdin_with_a_stdin_source_exits_2(tmp_path):
    code, _, err = run_piped(["cat", str(ARCHIVES / "skopeo-docker.tar")],
                             ["docker-archive:-", "localhost:5000/x:v1", "--username", "u", "--password-stdin"],
                             tmp_path)
    assert code == 2
    assert "standard input can carry only one of them" in err


@pytest.mark.integration
def test_a_300_mb_layer_streams_through_bounded_memory(proxy, repo, tmp_path):
    """``tar -c LAYOUT | ocipush oci-archive:-``: peak RSS of ocipush well under the layer."""
    from tests.imagegen import make_layout

    image = make_layout(tmp_path / "layout", [300 * MiB], ref="v1")  # random bytes, stored gzip
    time_file = tmp_path / "rss"
    code, out, err = run_piped(["tar", "-cf", "-", "-C", str(image.layout), "."],
                               ["oci-archive:-", f"{proxy.host}/{repo}:v1"], tmp_path, time_file=time_file)
    assert code == 0, err
    assert out.strip() == f"{proxy.host}/{repo}@{image.manifest.digest}"
    progress = [line for line in err.splitlines() if line.startswith("reading standard input: ")]
    assert len(progress) == 4  # every 64 MiB of 300 MiB
    peak = int(time_file.read_text().split()[-1]) * 1024
    assert peak < 256 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
