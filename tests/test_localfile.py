"""Regular files only, refused without blocking: a FIFO opened for reading waits forever."""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import tempfile
import threading

import pytest

from ocipush import localfile
from ocipush import transcode as transcode_module
from ocipush.content import FileContent
from ocipush.digest import Digest
from ocipush.errors import LocalIOError, SourceError
from ocipush.localfile import NotRegularFile, open_regular, read_regular
from ocipush.sources.store import DirStore
from ocipush.transcode import TranscodedContent


def _in_thread(call, timeout: float = 10.0):
    """call() in a thread, so that a regression blocks that thread, not the test run."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as e:  # handed to the test
            outcome["error"] = e

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "blocked: the file was opened for reading"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize(
    "kind, name",
    [(stat.S_IFIFO, "a FIFO (named pipe)"), (stat.S_IFSOCK, "a socket")],
)
def test_special_files_are_refused(tmp_path, kind, name):
    path = tmp_path / "blob"
    os.mknod(path, kind | 0o600)
    with pytest.raises(NotRegularFile) as caught:
        _in_thread(lambda: open_regular(path))
    assert caught.value.kind == name
    assert str(caught.value) == f"{path}: {name}, not a regular file"


def test_devices_and_directories_are_refused(tmp_path):
    with pytest.raises(NotRegularFile, match="a character device"):
        open_regular("/dev/null")
    with pytest.raises(NotRegularFile, match="a directory"):
        open_regular(tmp_path)


def test_a_file_swapped_for_a_fifo_after_the_stat_is_refused_without_blocking(tmp_path, monkeypatch):
    """The stat says regular, the file opened is a FIFO: O_NONBLOCK and fstat catch it."""
    regular, fifo = tmp_path / "regular", tmp_path / "fifo"
    regular.write_bytes(b"x")
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(localfile.os, "stat",
                        lambda p, *a, **k: real_stat(regular) if str(p) == str(fifo) else real_stat(p, *a, **k))
    with pytest.raises(NotRegularFile, match="FIFO"):
        _in_thread(lambda: open_regular(fifo))


def test_regular_files_open_blocking_and_symlinks_are_followed(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"hello")
    (tmp_path / "link").symlink_to(target)
    with open_regular(tmp_path / "link") as f:
        assert os.get_blocking(f.fileno())
        assert f.read() == b"hello"
    assert read_regular(target, 5) == b"hello"
    with pytest.raises(ValueError, match="larger than 4 bytes"):
        read_regular(target, 4)


def test_layout_store_names_the_fifo(tmp_path):
    os.mkfifo(tmp_path / "index.json")
    with pytest.raises(SourceError, match=r"index.json: a FIFO \(named pipe\), not a regular file"):
        _in_thread(lambda: DirStore(tmp_path).open("index.json"))


class _FailingFile(io.BytesIO):
    """Reads (or writes) fail with ``errno`` after ``after`` bytes, as a dying disk does."""

    def __init__(self, data: bytes, errno_: int, after: int):
        super().__init__(data)
        self._errno, self._after, self._written = errno_, after, 0

    def read(self, n=-1):
        if self.tell() >= self._after:
            raise OSError(self._errno, os.strerror(self._errno))
        return super().read(min(n, self._after - self.tell()) if n and n > 0 else self._after - self.tell())

    def write(self, data):
        self._written += len(data)
        if self._written > self._after:
            raise OSError(self._errno, os.strerror(self._errno))
        return super().write(data)


def test_an_io_error_reading_a_source_blob_is_a_source_error():
    data = b"x" * 3000
    content = FileContent(lambda: _FailingFile(data, errno.EIO, 1000), Digest.of(data), len(data), "blob B (img/b)")
    with pytest.raises(SourceError, match=r"^blob B \(img/b\): reading at 1000 bytes: Input/output error$"):
        content.read_all()


def test_a_full_tmpdir_while_spilling_is_a_local_io_error(tmp_path, monkeypatch):
    """The spill's file refuses the write: LocalIOError naming $TMPDIR, not an OSError."""
    layer = gzip.compress(os.urandom(3 << 20), compresslevel=1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(
        transcode_module.tempfile, "SpooledTemporaryFile", lambda max_size: _FailingFile(b"", errno.ENOSPC, 1 << 20)
    )
    stream = TranscodedContent(
        lambda: io.BytesIO(layer), Digest.of(layer), len(layer), "blob L (img/l)", diff_id=None, target="zstd"
    )
    with pytest.raises(LocalIOError) as caught:
        list(stream.chunks(8 << 20))
    assert str(caught.value) == f"{tmp_path}: spilling a compressed chunk of blob L (img/l): No space left on device"
    assert caught.value.exit_code == 6 and caught.value.errno == errno.ENOSPC
