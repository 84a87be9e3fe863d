"""Regular files only, refused without blocking: a FIFO opened for reading waits forever."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from ocipush import localfile
from ocipush.errors import SourceError
from ocipush.localfile import NotRegularFile, open_regular, read_regular
from ocipush.sources.store import DirStore


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
    monkeypatch.setattr(localfile.os, "stat", lambda p, *a, **k: real_stat(regular) if str(p) == str(fifo) else real_stat(p, *a, **k))
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
