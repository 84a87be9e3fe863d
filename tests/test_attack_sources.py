"""Attacks on what issue 12 reads and writes locally: an index that fans out into millions
of manifests, ``dir:`` paths that try to leave the directory, the stdin spool, garbage
``--platform`` values and platform names, and odd ``docker-archive:`` destinations."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocipush.errors import SourceError
from ocipush.mediatypes import OCI_INDEX, OCI_MANIFEST
from ocipush.models import Descriptor
from ocipush.sources import load_image, open_source
from ocipush.sources.base import MAX_MANIFEST_BYTES, MAX_MANIFESTS


def _blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _fan_out_layout(layout: Path, fan_out: int, depth: int) -> None:
    """An OCI layout of a few hundred KB whose root index lists one child ``fan_out``
    times, which lists its own child ``fan_out`` times, ``depth`` levels down to one
    image: fan_out ** depth manifests to walk, nearly all of them the same few."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    config = _blob(layout, b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config}, "layers": []}
    child = {"mediaType": OCI_MANIFEST, **_blob(layout, json.dumps(manifest).encode())}
    for _ in range(depth):
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child] * fan_out}
        child = {"mediaType": OCI_INDEX, **_blob(layout, json.dumps(index).encode())}
    top = {"schemaVersion": 2, "mediaType": OCI_INDEX,
           "manifests": [{**child, "annotations": {"org.opencontainers.image.ref.name": "bomb"}}]}
    (layout / "index.json").write_text(json.dumps(top))


class _Counting:
    """A source that stops the test once it has served far more manifests than any image has."""

    def __init__(self, inner, stop_at: int):
        self.inner, self.stop_at, self.opened = inner, stop_at, 0
        self.name, self.notes = inner.name, inner.notes

    def root(self) -> Descriptor:
        return self.inner.root()

    def describe_blob(self, desc: Descriptor) -> str:
        return self.inner.describe_blob(desc)

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        self.opened += 1
        if self.opened > self.stop_at:
            raise AssertionError(f"{self.opened} manifests read and counting: the walk is unbounded")
        return self.inner.open_blob(desc)

    def close(self) -> None:
        self.inner.close()


def test_an_index_that_fans_out_is_refused_before_it_is_walked(tmp_path):
    """200 ** 3 = 8 million manifests from 60 KB of JSON (on the old code: hours of reads
    and unbounded memory, the tree keeps every node): refused once the count passes the limit."""
    _fan_out_layout(tmp_path, fan_out=200, depth=3)
    source = _Counting(open_source(f"oci:{tmp_path}:bomb"), stop_at=5 * MAX_MANIFESTS)
    with pytest.raises(SourceError, match=rf"more than {MAX_MANIFESTS} manifests"):
        load_image(source)
    assert source.opened <= MAX_MANIFESTS + 1


def test_an_index_listing_many_images_within_the_limit_loads(tmp_path):
    _fan_out_layout(tmp_path, fan_out=50, depth=2)  # 2,551 nodes
    image = load_image(open_source(f"oci:{tmp_path}:bomb"))
    assert sum(1 for _ in image.walk()) == 1 + 50 + 50 * 50


def test_manifests_held_in_memory_are_bounded_in_bytes(tmp_path):
    """A 1 MiB manifest listed 100 times: 100 MiB of manifests held by the tree; refused."""
    _fan_out_layout(tmp_path, fan_out=1, depth=0)
    blobs = tmp_path / "blobs" / "sha256"
    config = json.loads((tmp_path / "index.json").read_text())["manifests"][0]
    manifest = json.loads((blobs / config["digest"][7:]).read_bytes())
    manifest["annotations"] = {"padding": "x" * (1 << 20)}
    big = {"mediaType": OCI_MANIFEST, **_blob(tmp_path, json.dumps(manifest).encode())}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [big] * 100}
    top = {"mediaType": OCI_INDEX, **_blob(tmp_path, json.dumps(index).encode()),
           "annotations": {"org.opencontainers.image.ref.name": "bomb"}}
    (tmp_path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    with pytest.raises(SourceError, match=rf"more than {MAX_MANIFEST_BYTES} bytes of manifests"):
        load_image(open_source(f"oci:{tmp_path}:bomb"))


# -- dir: -------------------------------------------------------------------------------------


def _fan_out_dir(path: Path, fan_out: int, depth: int) -> None:
    """A ``dir:`` image (an index's entries are ``<hex>.manifest.json``) fanning out as
    ``_fan_out_layout``'s, with one gzip-labelled layer that is plain tar, which the
    source corrects in every manifest above it."""
    path.mkdir()
    (path / "version").write_text("Directory Transport Version: 1.1\n")

    def put(data: bytes, suffix: str = "") -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (path / f"{digest}{suffix}").write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    config = put(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
    layer = put(b"\0" * 1024)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}]}
    child = {"mediaType": OCI_MANIFEST, **put(json.dumps(manifest).encode(), ".manifest.json")}
    for level in range(depth):
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child] * fan_out}).encode()
        if level == depth - 1:
            (path / "manifest.json").write_bytes(index)
        else:
            child = {"mediaType": OCI_INDEX, **put(index, ".manifest.json")}


def test_a_dir_index_that_fans_out_is_not_walked_once_per_entry(tmp_path):
    """``dir:`` checks every layer's compression below its index before the shared walk
    (which bounds the tree): that check reads each distinct manifest once, not once per
    path to it (200 ** 3 = 8 million reads on the old code)."""
    from ocipush.sources.dir import DirImage, _Directory

    opened: list[str] = []

    class Counting(DirImage):
        def open_blob(self, desc: Descriptor) -> BinaryIO:
            opened.append(str(desc.digest))
            if len(opened) > 50_000:
                raise AssertionError("50,000 blobs opened and counting: the walk is unbounded")
            return super().open_blob(desc)

    _fan_out_dir(tmp_path / "d", fan_out=200, depth=3)
    source = Counting(_Directory(tmp_path / "d"), name="dir:d")
    source.root()
    assert len(opened) <= 10, f"{len(opened)} reads for 5 distinct files"
    assert any("plain tar" in note for note in source.notes)
    with pytest.raises(SourceError, match=rf"more than {MAX_MANIFESTS} manifests"):
        load_image(source)


# -- the stdin spool ---------------------------------------------------------------------------


def test_a_killed_spool_leaves_nothing_in_tmpdir(tmp_path):
    """``docker save | ocipush docker-archive:- …`` killed while spooling: the spool is
    mode 0600 while it lives and has no name in $TMPDIR, so nothing is left behind (on the
    old code: the named spool stays, with every byte read so far)."""
    import os
    import subprocess
    import sys
    import time

    spool = tmp_path / "spool"
    spool.mkdir()
    env = {**os.environ, "TMPDIR": str(spool), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-m", "ocipush", "docker-archive:-", "127.0.0.1:9/x:y"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        import tarfile

        member = tarfile.TarInfo("layer.tar")  # a member longer than what is sent: the spool waits for the rest
        member.size = 64 << 20
        child.stdin.write(member.tobuf(tarfile.USTAR_FORMAT) + b"\0" * (4 << 20))
        child.stdin.flush()
        deadline = time.monotonic() + 20
        while not _spooled(child.pid, spool, 4 << 20) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _spooled(child.pid, spool, 4 << 20), "the spool never held what was written"
        assert [oct(p.stat().st_mode & 0o777) for p in spool.iterdir()] in ([], ["0o600"])
        child.kill()
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
    assert list(spool.iterdir()) == []


def test_a_second_ctrl_c_while_uploads_wind_down_leaves_no_spool(tmp_path):
    """The archive is spooled, the registry hangs on the upload; Ctrl-C gives the requests
    in flight a grace period, and a second Ctrl-C in it exits at once (``os._exit``): no
    cleanup runs, yet the spool, which has no name, is gone with the process."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.hostileregistry import Hang, HostileRegistry, Rule

    spool = tmp_path / "spool"
    spool.mkdir()
    archive = Path(__file__).parent.parent / "fixtures" / "archives" / "skopeo-oci.tar"
    env = {**os.environ, "TMPDIR": str(spool), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with HostileRegistry([Rule("PATCH", r"/blobs/uploads/[^?]", Hang())], auth=None) as registry, \
            open(archive, "rb") as stdin:
        child = subprocess.Popen([sys.executable, "-m", "ocipush", "oci-archive:-", f"{registry.host}/x:y",
                                  "--timeout", "60s", "--retry", "0", "--no-cache"],
                                 stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            assert registry.wait_for("PATCH"), "the upload never started"
            child.send_signal(signal.SIGINT)
            time.sleep(0.5)  # into the grace period (3 s) the first one started; nothing to wait on there
            child.send_signal(signal.SIGINT)
            _, err = child.communicate(timeout=20)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == 130, err
    assert list(spool.iterdir()) == []


def _spooled(pid: int, spool: Path, size: int) -> bool:
    """Whether process ``pid`` has a file of ``size`` bytes open in ``spool``."""
    import os

    fds = Path(f"/proc/{pid}/fd")
    try:
        for fd in fds.iterdir():
            target = os.readlink(fd)
            if target.startswith(f"{spool}/") and os.stat(fd).st_size >= size:
                return True
    except OSError:
        return False
    return False


# -- platform names a source makes up ------------------------------------------------------------


def _index_of_platforms(layout: Path, platforms: list[dict]) -> None:
    """An OCI layout whose index names one tiny image once per platform given."""
    _fan_out_layout(layout, fan_out=1, depth=0)
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    entry.pop("annotations")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{**entry, "platform": p} for p in platforms]}
    top = {"mediaType": OCI_INDEX, **_blob(layout, json.dumps(index).encode()),
           "annotations": {"org.opencontainers.image.ref.name": "many"}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))


@pytest.mark.parametrize("destination", ["oci", "docker-archive"])
def test_platform_names_from_the_source_are_quoted_short(tmp_path, capsys, destination):
    """The error that lists what the source holds quotes a source's names: 3,000 platforms,
    one of them 100,000 characters of escape sequences, give one short printable line."""
    from ocipush.cli import main

    platforms = [{"os": "linux", "architecture": f"arch{i}"} for i in range(3000)]
    platforms.insert(7, {"os": "\x1b]0;pwned\x07" * 10_000, "architecture": "amd64"})
    _index_of_platforms(tmp_path / "src", platforms)
    args = ["--platform", "linux/s390x"] if destination == "oci" else []
    target = f"oci:{tmp_path / 'out'}:v1" if destination == "oci" else f"docker-archive:{tmp_path / 'out.tar'}"
    capsys.readouterr()
    assert main([f"oci:{tmp_path / 'src'}:many", target, "--no-cache", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("ocipush: "), err[:300]
    assert len(err) < 1500, f"{len(err)} characters: {err[:300]}…"
    assert "arch0" in err and "more" in err


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80) | st.from_regex(r"[a-zA-Z0-9/._\-İı]{0,30}", fullmatch=True))
def test_any_platform_argument_parses_or_is_one_usage_error(text):
    from ocipush.errors import UsageError
    from ocipush.select import normalise, parse_platform

    try:
        platform = parse_platform(text)
    except UsageError as e:
        assert str(e).startswith("--platform ") and "\n" not in str(e) and len(str(e)) < 1000  # 60 shown, escaped
        return
    assert text.lower() == str(platform) and str(platform).isascii()
    assert normalise(normalise(platform)) == normalise(platform)


DIRS = Path(__file__).parent.parent / "fixtures" / "dir"


def _dir_copy(tmp_path: Path) -> tuple[Path, dict]:
    import shutil

    target = tmp_path / "d"
    shutil.copytree(DIRS / "skopeo-single", target)
    return target, json.loads((target / "manifest.json").read_bytes())


def _swap_for_link(path: Path, to: str) -> None:
    path.unlink()
    path.symlink_to(to)


DIR_ESCAPES = [
    ("layer linked outside", lambda d, m: _swap_for_link(d / m["layers"][0]["digest"][7:], "/etc/passwd"),
     r"link points outside"),
    ("layer linked outside by ../", lambda d, m: _swap_for_link(d / m["config"]["digest"][7:], "../../../../etc/hosts"),
     r"link points outside"),
    ("manifest.json linked outside", lambda d, m: _swap_for_link(d / "manifest.json", "/etc/passwd"),
     r"manifest.json: link points outside"),
    ("version linked to /dev/zero", lambda d, m: _swap_for_link(d / "version", "/dev/zero"), r"version: link points"),
    ("layer is a FIFO", lambda d, m: (d / m["layers"][0]["digest"][7:]).unlink()
     or __import__("os").mkfifo(d / m["layers"][0]["digest"][7:]), r"FIFO|fifo|not a regular file"),
    ("a digest with a path in it", lambda d, m: (d / "manifest.json").write_text(json.dumps(
        {**m, "layers": [{**m["layers"][0], "digest": "sha256:../../../etc/passwd"}]})), r"digest"),
    ("a digest in upper case", lambda d, m: (d / "manifest.json").write_text(json.dumps(
        {**m, "layers": [{**m["layers"][0], "digest": m["layers"][0]["digest"].upper()}]})), r"digest"),
]


@pytest.mark.parametrize("name, damage, message", DIR_ESCAPES, ids=[e[0] for e in DIR_ESCAPES])
def test_a_dir_never_reads_outside_itself(tmp_path, name, damage, message):
    directory, manifest = _dir_copy(tmp_path)
    damage(directory, manifest)
    with pytest.raises(SourceError, match=message), open_source(f"dir:{directory}") as source:
        image = load_image(source)
        for blob in image.blobs():
            source.open_blob(blob).close()


def test_a_dir_index_of_many_distinct_manifests_is_refused_before_they_are_all_read(tmp_path, monkeypatch):
    """Distinct children, each with a mislabelled layer: every corrected copy is held in
    memory, so the check reads no more of them than the walk would take."""
    from ocipush.sources import base
    from ocipush.sources.dir import DirImage, _Directory

    monkeypatch.setattr(base, "MAX_MANIFESTS", 50)
    directory = tmp_path / "d"
    _fan_out_dir(directory, fan_out=1, depth=0)
    (directory / "manifest.json").unlink(missing_ok=True)
    child = next(p for p in directory.iterdir() if p.name.endswith(".manifest.json"))
    manifest = json.loads(child.read_bytes())
    entries = []
    for i in range(200):
        data = json.dumps({**manifest, "annotations": {"n": str(i)}}).encode()
        digest = hashlib.sha256(data).hexdigest()
        (directory / f"{digest}.manifest.json").write_bytes(data)
        entries.append({"mediaType": OCI_MANIFEST, "digest": f"sha256:{digest}", "size": len(data)})
    (directory / "manifest.json").write_text(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                         "manifests": entries}))
    source = DirImage(_Directory(directory), name="dir:d")
    with pytest.raises(SourceError, match="more than 50 manifests"):
        source.root()
    assert len(source._memory) <= 51


# -- docker-archive: as a destination ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_layout(tmp_path_factory):
    from tests.imagegen import make_layout

    return make_layout(tmp_path_factory.mktemp("small"), [2000], ref="v1")


@pytest.mark.parametrize("kind", ["link to a file", "dangling link", "directory"])
def test_docker_archive_never_writes_through_what_is_at_path(tmp_path, small_layout, capsys, kind):
    """A symlink at PATH (planted in a shared directory, say) is not followed: the file it
    names is untouched, a dangling one creates nothing; a directory stays a directory."""
    from ocipush.cli import main

    victim = tmp_path / "victim"
    path = tmp_path / "out.tar"
    if kind == "link to a file":
        victim.write_text("precious")
        path.symlink_to(victim)
    elif kind == "dangling link":
        path.symlink_to(victim)
    else:
        path.mkdir()
    capsys.readouterr()
    assert main([f"oci:{small_layout.layout}:v1", f"docker-archive:{path}:app:v1", "--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ocipush: {path}: ") and "\n" not in err, err
    assert (victim.read_text() == "precious") if kind == "link to a file" else not victim.exists()
    assert path.is_symlink() or path.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"out.tar", *(["victim"] if victim.exists() else [])})


def test_docker_archive_members_are_plain_relative_names(tmp_path, small_layout):
    import tarfile

    from ocipush.cli import main

    assert main([f"oci:{small_layout.layout}:v1", f"docker-archive:{tmp_path / 'out.tar'}:app:v1", "--no-cache"]) == 0
    with tarfile.open(tmp_path / "out.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in names), names
    assert all(m.isfile() or m.isdir() for m in members)
    blobs = {n for n in names if n.startswith("blobs/sha256/") and len(n) == len("blobs/sha256/") + 64}
    assert set(names) == {"manifest.json", "repositories", "blobs", "blobs/sha256", *blobs}


def test_a_spooled_archive_is_not_read_after_close(spool_dir):
    """The spool's path is /proc/self/fd/N: once closed, N may be another file's."""
    import io

    from ocipush.sources.stdin import spool

    archives = Path(__file__).parent.parent / "fixtures" / "archives"
    tar = spool(io.BytesIO((archives / "skopeo-oci.tar").read_bytes()))
    tar.close()
    with open(spool_dir / "other", "wb") as reuse:  # likely takes the same descriptor number
        reuse.write(b"x" * 100_000)
        reuse.flush()
        with pytest.raises(SourceError, match="temporary copy was closed"):
            tar.open("index.json")


@pytest.fixture
def spool_dir(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(path))
    return path
