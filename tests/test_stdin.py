"""``docker-archive:-`` and ``oci-archive:-``: archives piped to standard input, spooled to
one temporary file (every producer writes its manifests last, see docs/sources.md).

The spool and the truncation checks run in process; the rest runs ``python -m ocipush``
with a real pipe (``cat ARCHIVE |``, ``tar -c |``), against the registry behind nginx."""

from __future__ import annotations

import io
import os
import pty
import re
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
from ocipush.units import format_size
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


def test_a_closed_spool_is_not_read_through_its_fd_path(spool_dir):
    """The spool's path is /proc/self/fd/N on Linux: once closed, N may name another file,
    so a member opened after close() is a SourceError, not that file's bytes."""
    tar = spool(io.BytesIO((ARCHIVES / "skopeo-docker.tar").read_bytes()))
    tar.close()
    closed = r"^standard input member manifest\.json: the archive's temporary copy was closed$"
    with pytest.raises(SourceError, match=closed):
        tar.open("manifest.json")


def test_progress_is_said_while_reading(spool_dir, monkeypatch):
    monkeypatch.setattr(stdin_module, "PROGRESS_EVERY", 4096)
    data = (ARCHIVES / "skopeo-oci.tar").read_bytes()  # 12288 bytes: 3 steps
    said = Said()
    spool(io.BytesIO(data), said).close()
    # The spool reads header by header, then each member's data: a line at each step passed.
    assert said.lines[:-1] == [f"reading standard input: {kb} kB" for kb in ("4.1", "8.2", "12.3")]
    assert said.lines[-1].startswith("read 12.3 kB from standard input into a temporary file")


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
    assert re.search(r"^read .* from standard input( \(gzip: .* decompressed\))? into a temporary file", err, re.M)
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


# -- where the spool stops: the tar's own end --------------------------------------------------


class Endless(io.RawIOBase):
    """A stream that never ends (``pattern`` again and again after ``prefix``), counting
    what it gave."""

    def __init__(self, prefix: bytes = b"", pattern: bytes = b"\0"):
        super().__init__()
        self.prefix = prefix
        self.pattern = pattern * (65536 // len(pattern))
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = len(view)
        chunk = self.prefix[self.given : self.given + n] if self.given < len(self.prefix) else self.pattern[:n]
        view[: len(chunk)] = chunk
        self.given += len(chunk)
        return len(chunk)


def test_endless_zeros_are_an_empty_archive_read_no_further(spool_dir):
    zeros = Endless()
    with pytest.raises(SourceError, match=r"^standard input: empty archive \(its first block is zeros\)$"):
        spool(zeros)
    assert zeros.given <= 2 * tarfile.BLOCKSIZE
    assert list(spool_dir.iterdir()) == []


@pytest.mark.parametrize("prefix", [b"", b"GIF89a", b"{\"manifests\": []}\n"], ids=["random", "gif", "json"])
def test_a_stream_that_is_no_tar_is_refused_at_its_first_block(spool_dir, prefix):
    garbage = Endless(prefix, os.urandom(4096))
    with pytest.raises(SourceError) as caught:
        spool(garbage)
    message = str(caught.value)
    assert message.startswith("standard input: not a tar archive (its first block is not a tar header: ")
    assert caught.value.exit_code == 3 and "\n" not in message
    assert garbage.given <= tarfile.BLOCKSIZE


def test_a_compressed_stream_of_no_tar_is_refused_at_its_first_block(spool_dir):
    import gzip

    data = gzip.compress(os.urandom(1 << 20))
    stream = io.BytesIO(data)
    with pytest.raises(SourceError, match=r"^standard input: not a tar archive \(decompressed gzip: its first "
                                          r"block is not a tar header: "):
        spool(stream)
    assert stream.tell() < len(data) // 2  # the decompressor reads ahead, but not to the end


def test_a_short_stream_that_is_no_tar(spool_dir):
    with pytest.raises(SourceError, match=r"^standard input: not a tar archive \(5 bytes, shorter than a tar "
                                          r"header\)$"):
        spool(io.BytesIO(b"hello"))


def test_a_corrupt_header_midway_stops_the_copy_there(spool_dir):
    data = bytearray((ARCHIVES / "skopeo-oci.tar").read_bytes())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        first, second = tar.getmembers()[:2]
    data[second.offset + 10] ^= 0xFF  # its checksum no longer holds
    stream = Endless(bytes(data), os.urandom(4096))
    with pytest.raises(SourceError, match=rf"^standard input: corrupt tar archive: not a tar header after member "
                                          rf"'{first.name}' \(bad checksum\)$"):
        spool(stream)
    assert stream.given <= second.offset + tarfile.BLOCKSIZE


def test_zero_padding_after_the_end_is_read_and_dropped(spool_dir):
    data = (ARCHIVES / "skopeo-docker.tar").read_bytes()
    stream = io.BytesIO(data + bytes(20 << 10))
    said = Said()
    spool(stream, said).close()
    assert stream.tell() == len(data) + (20 << 10)  # all of it: the writer ends without a broken pipe
    assert not [line for line in said.lines if "left unread" in line]


def test_garbage_after_the_end_is_read_up_to_the_limit_then_left(spool_dir):
    data = (ARCHIVES / "skopeo-docker.tar").read_bytes()
    stream = io.BytesIO(data + os.urandom(10 * MiB))
    said = Said()
    tar = spool(stream, said)
    try:
        assert tar.has("manifest.json")
    finally:
        tar.close()
    assert stream.tell() == len(data) + stdin_module.TRAILING_LIMIT + 1  # and not a byte more
    assert said.lines[-1] == ("standard input: more than 1.0 MB follow the archive's end; left unread "
                              "(the writer may report a broken pipe)")


def test_exactly_the_limit_after_the_end_is_no_news(spool_dir):
    data = (ARCHIVES / "skopeo-docker.tar").read_bytes()
    said = Said()
    spool(io.BytesIO(data + bytes(stdin_module.TRAILING_LIMIT)), said).close()
    assert not [line for line in said.lines if "left unread" in line]


def test_a_gzip_stream_is_spooled_decompressed_and_its_end_found(spool_dir):
    import gzip

    plain = (ARCHIVES / "skopeo-docker.tar").read_bytes()
    said = Said()
    stream = Endless(gzip.compress(plain) + b"trailing", os.urandom(4096))  # garbage after the gzip member
    spool(stream, said).close()
    assert said.lines[0].startswith(f"read {format_size(stream.given)} from standard input (gzip: "
                                    f"{format_size(len(plain))} decompressed) into a temporary file")
    # The decompressor reads ahead (8 KiB at a time, 128 KiB on Python 3.12) before the limit counts.
    assert stream.given <= len(gzip.compress(plain)) + stdin_module.TRAILING_LIMIT + 1 + (128 << 10)
    assert said.lines[-1].endswith("left unread (the writer may report a broken pipe)")


def test_an_extended_header_past_its_bound_is_refused(spool_dir):
    info = tarfile.TarInfo("x")
    header = info.tobuf(tarfile.GNU_FORMAT)  # a regular member, to be turned into a long-name header
    stream = io.BytesIO(_header("././@LongLink", tarfile.GNUTYPE_LONGNAME, (1 << 20) + 1) + header)
    with pytest.raises(SourceError, match=r"^standard input: an extended tar header of 1048577 bytes \(more than "
                                          r"1048576\); refused$"):
        spool(stream)


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


def _rechecksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)


def test_a_pax_size_overrides_the_header_size(spool_dir):
    """``size`` in a pax header (what writers give members over 8 GiB) says where the next
    header is; a follower that believed the ustar field would stop at the member's data."""
    payload = os.urandom(3000)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("big")
        info.size = len(payload)
        info.pax_headers = {"size": str(len(payload))}
        tar.addfile(info, io.BytesIO(payload))
        tar.addfile(tarfile.TarInfo("after"), io.BytesIO(b""))
    data = bytearray(out.getvalue())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        big = tar.getmember("big")
    at = big.offset_data - tarfile.BLOCKSIZE  # the member's own header, after the pax one
    block = data[at : at + tarfile.BLOCKSIZE]
    block[124:136] = b"00000000000\0"  # the ustar size says 0
    _rechecksum(block)
    data[at : at + tarfile.BLOCKSIZE] = block
    tar = spool(io.BytesIO(bytes(data)))
    try:
        assert tar.has("after")
        with tar.open("big") as f:
            assert f.read() == payload
    finally:
        tar.close()


def _members(archive: bytes) -> list[tuple[str, int, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return [(m.name, m.size, m.type) for m in tar.getmembers()]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
    entries=st.lists(
        st.tuples(st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo"]),
                  st.text("abcdé/._", min_size=1, max_size=20).map(lambda s: s.strip("/") or "n"),
                  st.integers(0, 200), st.integers(0, 3000)),
        min_size=1, max_size=8),
    padding=st.integers(0, 40).map(lambda n: n * tarfile.BLOCKSIZE),
)
def test_any_archive_tarfile_writes_is_spooled_whole(spool_dir, fmt, entries, padding):
    """Long names (GNU long-name and pax headers), links, directories and FIFOs (which carry
    no data): the spool stops exactly at the end blocks, and indexes what tarfile lists."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for i, (kind, name, repeat, size) in enumerate(entries):
            cut = 50 if fmt == tarfile.USTAR_FORMAT else None  # ustar: no names over 100 bytes (é is 2)
            info = tarfile.TarInfo((f"{i}-" + name * (repeat // 20 + 1))[:cut])
            if kind == "file":
                info.size = size
                tar.addfile(info, io.BytesIO(os.urandom(size)))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = ("t" * repeat)[:cut] if kind in ("symlink", "hardlink") else ""
            tar.addfile(info)
    archive = out.getvalue()  # tarfile pads to 10 KiB records
    stream = io.BytesIO(archive + bytes(padding))
    spooled: list[bytes] = []
    original = stdin_module._writer
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stdin_module, "_writer", lambda temp, tmpdir: _tee(original(temp, tmpdir), spooled))
        spool(stream).close()
    copy = b"".join(spooled)
    assert copy == archive[: len(copy)] and not archive[len(copy):].strip(b"\0")
    assert _members(copy) == _members(archive)


def _tee(write, into: list[bytes]):
    def both(data: bytes) -> None:
        into.append(data)
        write(data)

    return both


@pytest.mark.parametrize("fmt", ["gnu", "pax", "oldgnu"])
def test_sparse_members_from_gnu_tar(spool_dir, tmp_path, fmt):
    """GNU tar's sparse members: old GNU's extra map blocks after the header, pax's map in
    the data. Spooled as tarfile lists them (the index refuses to open them, as before)."""
    sparse = tmp_path / "sparse"
    with sparse.open("wb") as f:
        for i in range(12):  # more holes than fit in the header: extension blocks
            f.seek(i * 65536)
            f.write(b"data %d" % i)
        f.truncate(13 * 65536)
    (tmp_path / "plain").write_bytes(b"after the sparse one")
    archive = subprocess.run(["tar", "-c", f"--format={fmt}", "--sparse", "-C", str(tmp_path), "sparse", "plain"],
                             check=True, capture_output=True).stdout
    stream = io.BytesIO(archive)
    tar = spool(stream)
    try:
        with tar.open("plain") as f:
            assert f.read() == b"after the sparse one"
        with pytest.raises(SourceError, match="not a regular file"):
            tar.open("sparse")
    finally:
        tar.close()
    assert stream.tell() == len(archive)


def test_dev_zero_through_a_pipe_exits_3_at_once(tmp_path):
    code, _, err = run_piped(["cat", "/dev/zero"], ["docker-archive:-", f"oci:{tmp_path / 'out'}:v1"], tmp_path)
    assert code == 3
    assert err.strip().splitlines()[-1] == "ocipush: standard input: empty archive (its first block is zeros)"


def test_random_bytes_through_a_pipe_exit_3_at_once(tmp_path):
    code, _, err = run_piped(["cat", "/dev/urandom"], ["oci-archive:-", f"oci:{tmp_path / 'out'}:v1"], tmp_path)
    assert code == 3
    last = err.strip().splitlines()[-1]
    assert last.startswith("ocipush: standard input: not a tar archive (its first block is not a tar header: ")


def test_a_pipe_of_an_archive_then_garbage_pushes_and_leaves_the_rest(tmp_path):
    """``(cat ARCHIVE; cat /dev/urandom) | ocipush``: the image is pushed, a note says what
    was left, and the writer is the one that stops (on a broken pipe)."""
    producer = ["sh", "-c", f"cat {ARCHIVES / 'skopeo-oci.tar'}; exec cat /dev/urandom"]
    code, out, err = run_piped(producer, ["oci-archive:-", f"oci:{tmp_path / 'out'}:v1"], tmp_path)
    assert code == 0, err
    assert "standard input: more than 1.0 MB follow the archive's end; left unread" in err
    assert out.strip().startswith(f"oci:{tmp_path / 'out'}:v1@sha256:")
    load_image(open_source(f"oci:{tmp_path / 'out'}:v1"))


def test_a_pipe_of_an_archive_then_padding_pushes_quietly(tmp_path):
    producer = ["sh", "-c", f"cat {ARCHIVES / 'skopeo-docker.tar'}; head -c 20480 /dev/zero"]
    code, _, err = run_piped(producer, ["docker-archive:-", f"oci:{tmp_path / 'out'}:v1"], tmp_path)
    assert code == 0, err
    assert "left unread" not in err


@pytest.mark.parametrize("name", ["BZh91AY", "\x1f\udc8bgzip-named"])  # tarfile writes \udc8b as byte 0x8b
def test_a_tar_whose_first_name_looks_like_a_magic_is_a_plain_tar(spool_dir, tmp_path, name):
    """The magic bytes of bzip2 (``BZh``) or gzip at the start of a member name: the block is
    a tar header (its checksum holds), so the stream is a plain tar, piped or on disk."""
    from ocipush.sources.tarindex import open_tar

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    spooled = spool(io.BytesIO(out.getvalue()))
    (tmp_path / "a.tar").write_bytes(out.getvalue())
    on_disk = open_tar(tmp_path / "a.tar")
    for index in (spooled, on_disk):
        try:
            with index.open(name) as f:
                assert f.read() == b"hello"
        finally:
            index.close()
