"""docker-daemon: and containers-storage: run the engine's save; fake engines on PATH
stand in for docker and podman."""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

import pytest

from ocipush.errors import SourceError
from ocipush.sources import load_image, open_source

ARCHIVE = Path(__file__).parent.parent / "fixtures" / "archives" / "skopeo-docker.tar"


@pytest.fixture
def engine(tmp_path, monkeypatch):
    """engine(command, script) puts an executable ``command`` running the sh ``script`` alone
    on PATH; it records its arguments in ``args``. Temporary files go to ``spool``."""
    bin_dir, spool = tmp_path / "bin", tmp_path / "spool"
    bin_dir.mkdir()
    spool.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(spool))

    def install(command: str, script: str) -> None:
        path = bin_dir / command
        path.write_text(f'#!/bin/sh\necho "$@" > {shlex.quote(str(tmp_path / "args"))}\n{script}\n')
        path.chmod(0o755)

    install.args = lambda: (tmp_path / "args").read_text().strip()
    install.spool = spool
    return install


@pytest.mark.parametrize(
    "transport, command, args",
    [("docker-daemon", "docker", "save hello:v1"),
     ("containers-storage", "podman", "save --format docker-archive hello:v1")],
)
def test_saves_the_image_and_reads_it(engine, transport, command, args):
    engine(command, f"/bin/cat {shlex.quote(str(ARCHIVE))}")
    with open_source(f"{transport}:hello:v1") as source:
        assert engine.args() == args
        assert len(load_image(source).blobs()) == 3
        assert source.describe_blob(source.root()).endswith(f"(made from {command} save hello:v1 member manifest.json)")
        assert len(list(engine.spool.iterdir())) == 1
    assert list(engine.spool.iterdir()) == []


def test_failing_save_reports_its_last_stderr_line(engine):
    engine("docker", "echo 'pulling metadata' >&2; "
                     "echo 'Error response from daemon: reference does not exist' >&2; exit 1")
    with pytest.raises(SourceError) as e:
        open_source("docker-daemon:nope:latest")
    assert str(e.value) == (
        "docker-daemon:nope:latest: docker save nope:latest failed (exit 1): "
        "Error response from daemon: reference does not exist"
    )
    assert list(engine.spool.iterdir()) == []


def test_save_writing_garbage(engine):
    engine("podman", "echo not a tar")
    with pytest.raises(SourceError, match=r"^podman save img: not a tar archive"):
        open_source("containers-storage:img")
    assert list(engine.spool.iterdir()) == []


@pytest.mark.parametrize("transport, command", [("docker-daemon", "docker"), ("containers-storage", "podman")])
def test_missing_command(engine, transport, command):
    with pytest.raises(SourceError, match=f"^{transport}: the {command} command is not installed$"):
        open_source(f"{transport}:busybox")
