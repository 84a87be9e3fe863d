"""The tar index: members read in place as slices, links resolved inside the archive,
compressed archives spooled, and every broken tar refused in one line."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ocipush.errors import SourceError
from ocipush.sources.tarindex import TarIndex, open_tar, sniff_compression
from tests.archivegen import Member, tar_bytes


def write_tar(path: Path, members) -> Path:
    path.write_bytes(tar_bytes(members))
    return path


def index_of(tmp_path: Path, *members: Member) -> TarIndex:
    return open_tar(write_tar(tmp_path / "a.tar", members))


def read(index: TarIndex, name: str) -> bytes:
    with index.open(name) as f:
        return f.read()


# -- slices ------------------------------------------------------------------------------


def test_members_read_as_slices_of_the_file(tmp_path):
    index = index_of(tmp_path, Member("a", b"alpha" * 300), Member("dir/b", b"beta"), Member("empty"))
    assert read(index, "a") == b"alpha" * 300
    assert read(index, "dir/b") == b"beta"
    assert read(index, "empty") == b""
    with index.open("a") as f:
        assert f.seekable() and f.readable()
        assert f.seek(-5, io.SEEK_END) == 1495 and f.read() == b"alpha"
        assert f.read(10) == b""  # never past the member into the next one
        f.seek(3)
        assert f.tell() == 3 and f.read(4) == b"haal"
        assert f.seek(2, io.SEEK_CUR) == 9
        with pytest.raises(ValueError):
            f.seek(-1)
    assert f.closed


def test_names_are_normalised(tmp_path):
    index = index_of(tmp_path, Member("./blobs//sha256/x", b"x"))
    assert read(index, "blobs/sha256/x") == read(index, "./blobs/sha256/./x") == b"x"


def test_later_member_of_the_same_name_wins_as_on_extraction(tmp_path):
    index = index_of(tmp_path, Member("a", b"old"), Member("./a", b"new"))
    assert read(index, "a") == b"new"


def test_each_open_has_its_own_handle_so_threads_read_concurrently(tmp_path):
    data = {f"m{i}": bytes([i]) * 200_000 for i in range(4)}
    index = index_of(tmp_path, *(Member(n, d) for n, d in data.items()))
    results: dict[str, bytes] = {}

    def reader(name):
        with index.open(name) as f:
            results[name] = b"".join(iter(lambda: f.read(997), b""))

    threads = [threading.Thread(target=reader, args=(n,)) for n in data]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == data


@given(
    data=st.binary(max_size=3000),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("read"), st.integers(-1, 1200)),
            st.tuples(st.just("seek"), st.integers(-100, 3500),
                      st.sampled_from([io.SEEK_SET, io.SEEK_CUR, io.SEEK_END])),
        ),
        max_size=12,
    ),
)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_a_slice_behaves_like_bytesio(data, ops):
    with tempfile.TemporaryDirectory() as tmp:
        members = [Member("pad", b"p" * 700), Member("m", data), Member("z", b"z")]
        index = open_tar(write_tar(Path(tmp) / "a.tar", members))
        expected = io.BytesIO(data)
        with index.open("m") as f:
            for op in ops:
                if op[0] == "read":
                    assert f.read(op[1]) == expected.read(op[1])
                elif [0, expected.tell(), len(data)][op[2]] + op[1] < 0:
                    with pytest.raises(ValueError):  # as a file would (BytesIO clamps some)
                        f.seek(op[1], op[2])
                else:
                    assert f.seek(op[1], op[2]) == expected.seek(op[1], op[2])
                assert f.tell() == expected.tell()


# -- links -------------------------------------------------------------------------------


def test_links_resolve_inside_the_archive(tmp_path):
    index = index_of(
        tmp_path,
        Member("aaa/layer.tar", symlink="../bbb/layer.tar"),  # before its target, as docker writes it
        Member("bbb/layer.tar", b"layer"),
        Member("hard", hardlink="./bbb/layer.tar"),  # hard links name targets from the root
        Member("dirlink", symlink="bbb"),
        Member("chain", symlink="aaa/layer.tar"),
        Member("bbb/up", symlink="../bbb/./layer.tar"),
    )
    for name in ("aaa/layer.tar", "hard", "dirlink/layer.tar", "chain", "bbb/up", "aaa/../bbb/layer.tar"):
        assert read(index, name) == b"layer", name


@pytest.mark.parametrize(
    "members, name, message",
    [
        ([Member("a/layer.tar", symlink="../../etc/passwd")], "a/layer.tar", "a/layer.tar: leads outside the archive"),
        ([Member("l", symlink="..")], "l/x", "l/x: leads outside the archive"),
        ([Member("abs", symlink="/etc/passwd")], "abs", "member abs: absolute link to '/etc/passwd'"),
        ([Member("h", hardlink="/etc/passwd")], "h", "absolute link"),
        ([Member("a", symlink="b"), Member("b", symlink="a")], "a", "more than 40 links deep"),
        ([Member("self", symlink="self/x")], "self", "more than 40 links deep"),
        ([Member("d/x", b"x")], "d", "member d: not a regular file"),
        ([Member("fifo", b"")], "..", "leads outside the archive"),
    ],
)
def test_bad_links_are_refused(tmp_path, members, name, message):
    index = index_of(tmp_path, Member("pad", b"."), *members)
    with pytest.raises(SourceError, match=message) as e:
        index.open(name)
    assert "\n" not in str(e.value) and str(tmp_path / "a.tar") in str(e.value)


@pytest.mark.parametrize("name", ["nope", "dangling", "file/x", "nodir/../file"])
def test_missing_members(tmp_path, name):
    index = index_of(tmp_path, Member("file", b"f"), Member("dangling", symlink="gone"))
    assert not index.has(name)
    with pytest.raises(FileNotFoundError):
        index.open(name)


# Random archives against the kernel: every member name and some made-up paths resolve
# in the index exactly as they do in a real directory tree with the same entries, and a
# path that leaves that tree (into the directory around it, which has files of the same
# names) is refused — never served from inside either.
_DIRS = ("", "d1/", "d1/e/", "d2/")
_PARTS = ("..", ".", "d1", "e", "d2", "f1", "f2", "l1", "l2", "l3", "h1")


@st.composite
def trees(draw):
    files = draw(st.dictionaries(st.tuples(st.sampled_from(_DIRS), st.sampled_from(["f1", "f2"])).map("".join),
                                 st.binary(max_size=40), max_size=5))
    target = st.lists(st.sampled_from(_PARTS), min_size=1, max_size=4).map("/".join)
    links = draw(st.dictionaries(st.tuples(st.sampled_from(_DIRS), st.sampled_from(["l1", "l2", "l3"])).map("".join),
                                 target, max_size=4))
    hardlinks = {}
    if files and draw(st.booleans()):
        hardlinks[draw(st.sampled_from(_DIRS)) + "h1"] = draw(st.sampled_from(sorted(files)))
    members = [Member(d, directory=True) for d in _DIRS if d]
    members += [Member(n, data) for n, data in files.items()]
    members += [Member(n, symlink=t) for n, t in links.items()]
    members += [Member(n, hardlink=t) for n, t in hardlinks.items()]
    members = [Member("./" + m.name, m.data, m.symlink, m.hardlink, m.directory) if draw(st.booleans()) else m
               for m in draw(st.permutations(members))]
    queries = [*files, *links, *hardlinks, *draw(st.lists(target, max_size=4))]
    return files, links, hardlinks, members, queries


def _kernel_read(jail: Path, name: str, inside: set[tuple[int, int]]) -> bytes | None:
    try:
        fd = os.open(os.path.join(jail, name), os.O_RDONLY)  # pathlib would drop "f1/." to "f1"
    except OSError:
        return None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or (status.st_dev, status.st_ino) not in inside:
        os.close(fd)
        return None  # a directory, or a file outside the tree
    with os.fdopen(fd, "rb") as f:
        return f.read()


@given(trees())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_links_resolve_as_the_kernel_does_and_never_escape(tree):
    files, links, hardlinks, members, queries = tree
    with tempfile.TemporaryDirectory() as tmp:
        outer = Path(tmp)
        jail = outer / "jail"  # "jail" is not among the generated names: no path comes back in
        for d in _DIRS:
            (jail / d).mkdir(parents=True, exist_ok=True)
            (outer / d).mkdir(parents=True, exist_ok=True)
            for f in ("f1", "f2"):
                (outer / d / f).write_bytes(b"outside the archive")
        for name, data in files.items():
            (jail / name).write_bytes(data)
        for name, target in links.items():
            os.symlink(target, jail / name)
        for name, target in hardlinks.items():
            os.link(jail / target, jail / name)
        inside = {(s.st_dev, s.st_ino) for s in (os.stat(jail / n) for n in files)}
        index = open_tar(write_tar(outer / "a.tar", members))
        with tarfile.open(outer / "a.tar") as tar:
            for m in tar.getmembers():
                if m.isreg():
                    assert read(index, m.name) == tar.extractfile(m).read()
        for name in queries:
            expected = _kernel_read(jail, name, inside)
            try:
                got = read(index, name)
            except (SourceError, FileNotFoundError):
                got = None
            assert got == expected, name
            if name not in files:
                event("a link or made-up path " + ("served" if got is not None else "refused"))


# -- archives that are not (whole) tars ---------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty archive"),
        (b"\0" * 10240, "empty archive"),
        (b'{"not": "a tar"}', "not a tar archive"),
        (os.urandom(4096), "not a tar archive"),
    ],
    ids=["empty file", "only end blocks", "json", "random"],
)
def test_not_an_archive(tmp_path, content, message):
    (tmp_path / "x.tar").write_bytes(content)
    with pytest.raises(SourceError, match=f"^{tmp_path / 'x.tar'}: {message}"):
        open_tar(tmp_path / "x.tar")


@pytest.mark.parametrize("cut", [700, 1536 + 100, 1536 + 512 + 100], ids=["in data", "in header", "in last data"])
def test_truncated_archive(tmp_path, cut):
    data = tar_bytes([Member("a", b"a" * 1000), Member("b", b"b" * 600)])
    (tmp_path / "x.tar").write_bytes(data[:cut])
    with pytest.raises(SourceError, match="truncated or corrupt tar archive"):
        open_tar(tmp_path / "x.tar")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SourceError, match=r"nope\.tar: no such file"):
        open_tar(tmp_path / "nope.tar")
    with pytest.raises(SourceError, match="a directory, not an archive"):
        open_tar(tmp_path)


COMPRESSORS = {
    "gzip": gzip.compress,
    "xz": lzma.compress,
    "bzip2": bz2.compress,
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_archive_is_spooled_to_tmpdir_and_removed_on_close(tmp_path, monkeypatch, kind):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    data = tar_bytes([Member("a", b"alpha"), Member("l", symlink="a")])
    (tmp_path / "x.tar.whatever").write_bytes(COMPRESSORS[kind](data))
    index = open_tar(tmp_path / "x.tar.whatever")
    assert read(index, "l") == b"alpha"
    assert index.describe("a") == f"{tmp_path / 'x.tar.whatever'} member a"
    assert os.stat(index.path).st_size == len(data)
    assert list(spool.iterdir()) == []  # the decompressed copy has no name (tarindex.temporary_file)
    index.close()
    assert list(spool.iterdir()) == []


def test_corrupt_compressed_archive(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "x.tgz").write_bytes(gzip.compress(tar_bytes([Member("a", b"a" * 5000)]))[:-20])
    with pytest.raises(SourceError, match=r"x.tgz: corrupt gzip data"):
        open_tar(tmp_path / "x.tgz")
    assert [p.name for p in tmp_path.iterdir()] == ["x.tgz"]  # the spool is gone


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_sniff_compression(kind):
    stream = io.BytesIO(b"xx" + COMPRESSORS[kind](b"data"))
    stream.seek(2)
    assert sniff_compression(stream) == kind
    assert stream.tell() == 2
    assert sniff_compression(io.BytesIO(tar_bytes([Member("BZ", b"")]))) is None


def test_indexing_reads_headers_only(tmp_path):
    """A 3 GB archive is indexed by reading its three headers: the data are holes here,
    and /proc/self/io counts every byte read."""
    path = tmp_path / "big.tar"
    size = 1 << 30
    with open(path, "wb") as f:
        for name in ("a", "b", "c"):
            info = tarfile.TarInfo(name)
            info.size = size
            f.write(info.tobuf())
            f.seek(size, io.SEEK_CUR)
        f.write(b"\0" * 1024)

    def bytes_read() -> int:
        return int(Path("/proc/self/io").read_text().split("rchar: ")[1].split()[0])

    before = bytes_read()
    index = open_tar(path)
    assert bytes_read() - before < 64 * 1024
    with index.open("c") as f:
        assert f.seek(0, io.SEEK_END) == size
