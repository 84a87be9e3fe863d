"""Local destinations: oci:PATH[:TAG] and oci-archive:PATH[:TAG], read back by skopeo."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import threading
from pathlib import Path

import pytest

from ocipush.cli import main
from ocipush.compression import Compression
from ocipush.destinations.layout import LayoutDestination
from ocipush.digest import Digest
from ocipush.push import PushOptions, push
from tests.imagegen import LayerSpec, flip_byte, make_index_layout, make_layout
from tests.services import skopeo_copy, skopeo_inspect

ARCHIVES = Path(__file__).parent.parent / "fixtures" / "archives"
FIXTURES = Path(__file__).parent.parent / "fixtures" / "oci"


def index_refs(layout: Path) -> dict[str, str]:
    index = json.loads((layout / "index.json").read_text())
    ref_name = "org.opencontainers.image.ref.name"
    return {(m.get("annotations") or {}).get(ref_name): m["digest"] for m in index["manifests"]}


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def test_docker_archive_converted_to_oci_layout(tmp_path):
    out = tmp_path / "out"
    result = push(f"docker-archive:{ARCHIVES / 'docker-legacy.tar'}:legacy:v1", f"oci:{out}:v1")
    assert index_refs(out) == {"v1": str(result.digest)}
    manifest = json.loads(blob(out, str(result.digest)))
    config = json.loads(blob(out, manifest["config"]["digest"]))
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        assert "sha256:" + hashlib.sha256(gzip.decompress(blob(out, layer["digest"]))).hexdigest() == diff_id
    # skopeo reads what we wrote, verifying every digest.
    copied = skopeo_copy(f"oci:{out}:v1", f"oci:{tmp_path / 'again'}:v1")
    assert copied.returncode == 0, copied.stderr


def test_layout_gains_and_replaces_refs(tmp_path):
    a = make_layout(tmp_path / "a", [1000], ref="x", seed=1)
    b = make_layout(tmp_path / "b", [1000], ref="x", seed=2)
    out = tmp_path / "out"
    push(f"oci:{a.layout}", f"oci:{out}:one")
    push(f"oci:{b.layout}", f"oci:{out}:two")
    assert index_refs(out) == {"one": a.digest, "two": b.digest}
    push(f"oci:{b.layout}", f"oci:{out}:one")  # retag: the old entry goes
    assert index_refs(out) == {"one": b.digest, "two": b.digest}
    assert not list(out.rglob(".tmp-*"))


def test_multi_platform_to_oci_archive_in_zstd(tmp_path):
    info = make_index_layout(tmp_path / "img", [LayerSpec(200_000, "text")])
    archive = tmp_path / "out.tar"
    result = push(f"oci:{info.layout}", f"oci-archive:{archive}:multi", PushOptions(compression=Compression("zstd")))
    raw = skopeo_inspect(f"oci-archive:{archive}:multi", raw=True)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json" and len(raw["manifests"]) == 2
    copied = skopeo_copy(f"oci-archive:{archive}:multi", f"oci:{tmp_path / 'x'}:m", "--all")
    assert copied.returncode == 0, copied.stderr
    assert index_refs(tmp_path / "x") == {"m": str(result.digest)}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # work dir removed


def test_failed_conversion_leaves_the_layout_as_it_was(tmp_path, capsys):
    good = make_layout(tmp_path / "good", [1000], ref="x")
    out = tmp_path / "out"
    push(f"oci:{good.layout}", f"oci:{out}:keep")
    before = (out / "index.json").read_bytes()
    bad = make_layout(tmp_path / "bad", [LayerSpec(100_000)], ref="x", seed=3)
    flip_byte(bad.layers[0])
    assert main([f"oci:{bad.layout}", f"oci:{out}:new"]) == 3
    assert (out / "index.json").read_bytes() == before
    assert not (out / "blobs" / "sha256" / bad.layers[0].digest.split(":")[1]).exists()
    assert not list(out.rglob(".tmp-*"))
    assert "does not match its digest" in capsys.readouterr().err


def test_failed_archive_leaves_no_file(tmp_path, capsys):
    bad = make_layout(tmp_path / "bad", [LayerSpec(100_000)], ref="x")
    flip_byte(bad.layers[0])
    archive = tmp_path / "out.tar"
    assert main([f"oci:{bad.layout}", f"oci-archive:{archive}"]) == 3
    assert list(tmp_path.iterdir()) == [tmp_path / "bad"]


@pytest.mark.parametrize("spec, message", [
    ("containers-storage:img", "destination transport 'containers-storage' is not supported"),
    ("oci:", "missing the path"),
    ("oci-archive:/no/such/dir/x.tar", "directory /no/such/dir does not exist"),
])
def test_bad_local_destinations(tmp_path, spec, message, capsys):
    info = make_layout(tmp_path / "img", [100])
    assert main([f"oci:{info.layout}", spec]) == 2
    assert message in capsys.readouterr().err


def test_cli_prints_the_local_result(tmp_path, capsys):
    info = make_layout(tmp_path / "img", [100])
    assert main([f"oci:{info.layout}", f"oci:{tmp_path / 'o'}:t", "--quiet"]) == 0
    assert capsys.readouterr().out == f"oci:{tmp_path / 'o'}:t@{info.digest}\n"


@pytest.mark.integration
def test_format_v2s2_from_a_docker_archive(proxy, repo, tmp_path):
    result = push(f"docker-archive:{ARCHIVES / 'skopeo-docker.tar'}", f"{proxy.host}/{repo}:v1",
                  PushOptions(manifest_format="v2s2"))
    raw = skopeo_inspect(f"{proxy.host}/{repo}:v1", raw=True)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert raw["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert {layer["mediaType"] for layer in raw["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    copied = skopeo_copy(f"docker://{proxy.host}/{repo}@{result.digest}", f"oci:{tmp_path / 'p'}:x")
    assert copied.returncode == 0, copied.stderr


def test_format_oci_converts_a_docker_manifest(tmp_path):
    out = tmp_path / "out"
    result = push(f"docker-archive:{ARCHIVES / 'buildkit-docker.tar'}", f"oci:{out}:v1",
                  PushOptions(manifest_format="oci"))
    manifest = json.loads(blob(out, str(result.digest)))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert skopeo_copy(f"oci:{out}:v1", f"oci:{tmp_path / 'again'}:v1").returncode == 0


def test_format_v2s2_refuses_zstd_and_artifacts(tmp_path, capsys):
    info = make_layout(tmp_path / "img", [1000])
    zstd = ["--compression-format", "zstd"]
    assert main([f"oci:{info.layout}", f"oci:{tmp_path / 'o'}", "--format", "v2s2", *zstd]) == 2
    assert "--format v2s2 cannot carry zstd layers" in capsys.readouterr().err
    assert main([f"oci:{FIXTURES / 'zstd'}:v1", f"oci:{tmp_path / 'z'}", "--format", "v2s2"]) == 2
    assert "is zstd, which a Docker schema 2 manifest cannot carry (--format v2s2)" in capsys.readouterr().err
    assert not (tmp_path / "z" / "index.json").exists()


@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
def test_dry_run_writes_nothing_locally(tmp_path, transport, capsys):
    info = make_layout(tmp_path / "img", [1000])
    out = tmp_path / "out"
    assert main([f"oci:{info.layout}", f"{transport}:{out}:t", "--dry-run"]) == 0
    assert "would send 2 of 2 blobs" in capsys.readouterr().out
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["img"]


EVERY_ARCHIVE = [
    f"docker-archive:{ARCHIVES / 'docker-legacy.tar'}:legacy:v1",
    f"docker-archive:{ARCHIVES / 'docker-legacy.tar.gz'}:other:v2",
    f"docker-archive:{ARCHIVES / 'docker25.tar'}",
    f"docker-archive:{ARCHIVES / 'containerd.tar'}",
    f"docker-archive:{ARCHIVES / 'buildkit-docker.tar'}",
    f"docker-archive:{ARCHIVES / 'skopeo-docker.tar'}",
    f"docker-archive:{ARCHIVES / 'podman-multi.tar'}:tworefs:b",
    f"oci-archive:{ARCHIVES / 'skopeo-oci.tar'}",
    f"oci-archive:{ARCHIVES / 'buildkit-oci.tar'}",
]


@pytest.mark.parametrize("spec", EVERY_ARCHIVE, ids=lambda s: Path(s.split(":")[1]).name + s.split(".tar")[1])
def test_every_archive_converts_to_a_layout_skopeo_reads(tmp_path, spec):
    out = tmp_path / "out"
    push(spec, f"oci:{out}:conv")
    copied = skopeo_copy(f"oci:{out}:conv", f"oci:{tmp_path / 'again'}:conv", "--all")
    assert copied.returncode == 0, copied.stderr


@pytest.mark.integration
def test_digest_destination_with_a_conversion_is_refused(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [1000])
    assert main([f"oci:{info.layout}", f"{proxy.host}/{repo}@{info.digest}", "--format", "v2s2"]) == 2
    assert "names a digest, but the pushed manifest would be" in capsys.readouterr().err


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a directory): what "unchanged" means."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


_LAYOUT_1 = '{"imageLayoutVersion":"1.0.0"}'
_ENTRY = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": "sha256:" + "a" * 64}

# An oci: destination that is not a layout we can add to: each is refused when it is opened,
# before a blob is written (the index.json ones were a traceback after every blob was written).
MALFORMED_DESTINATIONS = [
    ("index-a-list", {"index.json": "[]"}, "index.json: not an image index (a JSON list)"),
    ("manifests-a-number", {"index.json": '{"manifests": 5}'}, "index.json: not an image index"),
    ("manifests-an-object", {"index.json": '{"manifests": {}}'}, "index.json: not an image index"),
    ("entry-without-digest", {"index.json": json.dumps({"manifests": [{**_ENTRY, "digest": None}]})},
     "index.json: not an image index"),
    ("entry-with-bad-digest", {"index.json": json.dumps({"manifests": [{**_ENTRY, "digest": "sha256:x"}]})},
     "index.json: not an image index"),
    ("entry-a-string", {"index.json": '{"manifests": ["sha256:x"]}'}, "index.json: not an image index"),
    ("index-invalid-json", {"index.json": "{"}, "index.json: invalid JSON"),
    ("index-nested-too-deep", {"index.json": "[" * 100_000}, "index.json: invalid JSON: nested too deeply"),
    ("index-5000-digit-number", {"index.json": '{"schemaVersion": ' + "2" * 5000 + "}"}, "index.json: invalid JSON"),
    ("index-a-directory", {"index.json/": ""}, "index.json: a directory, not a regular file"),
    ("oci-layout-a-list", {"oci-layout": "[]"}, "oci-layout: unsupported imageLayoutVersion"),
    ("oci-layout-version-2", {"oci-layout": '{"imageLayoutVersion":"2.0.0"}'},
     "oci-layout: unsupported imageLayoutVersion '2.0.0'"),
    ("oci-layout-invalid-json", {"oci-layout": "{"}, "oci-layout: invalid JSON"),
]


@pytest.mark.parametrize("files, culprit", [pytest.param(f, c, id=i) for i, f, c in MALFORMED_DESTINATIONS])
@pytest.mark.parametrize("dry_run", [False, True], ids=["push", "dry-run"])
def test_malformed_destination_layout_is_refused_before_any_blob(tmp_path, files, culprit, dry_run, capsys):
    info = make_layout(tmp_path / "img", [1000, 2000])
    out = tmp_path / "out"
    out.mkdir()
    layout = {"oci-layout": _LAYOUT_1, **files}
    for name, text in layout.items():
        if name.endswith("/"):
            (out / name).mkdir()
        else:
            (out / name).write_text(text)
    before = _tree(out)
    assert main([f"oci:{info.layout}", f"oci:{out}:v1", *(["--dry-run"] if dry_run else [])]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ocipush: ") and "Traceback" not in err, err
    assert f"{out}/{culprit}" in err, err
    assert _tree(out) == before  # no blob, no oci-layout, no temporary file


def test_malformed_index_without_oci_layout_writes_no_oci_layout(tmp_path, capsys):
    info = make_layout(tmp_path / "img", [1000])
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.json").write_text("[]")
    assert main([f"oci:{info.layout}", f"oci:{out}:v1"]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["index.json"]
    assert "index.json: not an image index" in capsys.readouterr().err


def test_adding_to_an_index_keeps_what_ocipush_does_not_model(tmp_path):
    """index.json is written back as read, only ``manifests`` changed: other tools' fields stay."""
    info = make_layout(tmp_path / "img", [1000])
    out = tmp_path / "out"
    out.mkdir()
    (out / "oci-layout").write_text(_LAYOUT_1)
    other = {**_ENTRY, "annotations": {"org.opencontainers.image.ref.name": "other"}, "data": "e30="}
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "annotations": {"k": "v"}, "manifests": [other]}))
    result = push(f"oci:{info.layout}", f"oci:{out}:v1")
    index = json.loads((out / "index.json").read_text())
    assert index["annotations"] == {"k": "v"} and index["schemaVersion"] == 2
    assert index["manifests"] == [other, {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                          "digest": str(result.digest), "size": index["manifests"][1]["size"],
                                          "annotations": {"org.opencontainers.image.ref.name": "v1"}}]


def _special(path: Path, kind: str, tmp_path: Path) -> object:
    """Make ``path`` a ``kind`` of non-regular file; what must stay as it is afterwards."""
    import os
    import socket
    import stat

    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "symlink-to-file":
        (tmp_path / "victim").write_bytes(b"keep me")
        path.symlink_to(tmp_path / "victim")
        return (tmp_path / "victim").read_bytes()
    elif kind == "symlink-to-device":
        path.symlink_to("/dev/null")
        return stat.S_ISCHR(os.stat("/dev/null").st_mode)
    return stat.S_IFMT(path.lstat().st_mode)


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket", "symlink-to-file", "symlink-to-device"])
def test_oci_archive_replaces_only_a_regular_file(tmp_path, kind, capsys):
    """``oci-archive:PATH`` never swaps a FIFO, socket, directory or symbolic link (as root,
    ``oci-archive:/dev/null`` would have destroyed the device) for its tar: exit 2, one
    line, nothing replaced, nothing left beside it (attack report, finding 4)."""
    import os
    import stat

    info = make_layout(tmp_path / "img", [100])
    target = tmp_path / "out" / "x.tar"
    target.parent.mkdir()
    kept = _special(target, kind, tmp_path)
    assert main([f"oci:{info.layout}", f"oci-archive:{target}:v1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ocipush: {target}: ") and "not a regular file" in err and err.count("\n") == 1, err
    assert os.listdir(target.parent) == ["x.tar"]
    if kind == "symlink-to-file":
        assert (tmp_path / "victim").read_bytes() == kept and target.is_symlink()
    elif kind == "symlink-to-device":
        assert target.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    else:
        assert stat.S_IFMT(target.lstat().st_mode) == kept


def test_oci_layout_with_a_symlinked_blobs_dir_is_refused(tmp_path, capsys):
    """Through a symbolic link ``blobs/sha256``, blobs would be written wherever it points."""
    info = make_layout(tmp_path / "img", [100])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    (out / "blobs").mkdir(parents=True)
    (out / "blobs" / "sha256").symlink_to(elsewhere)
    assert main([f"oci:{info.layout}", f"oci:{out}:v1"]) == 3
    err = capsys.readouterr().err
    assert "blobs/sha256: a symbolic link, not a directory; not adding to it" in err and err.count("\n") == 1
    assert list(elsewhere.iterdir()) == []


def test_oci_layout_with_a_blobs_file_is_refused(tmp_path, capsys):
    """A regular file named ``blobs`` is named as a file, not a directory: exit 3, one line."""
    info = make_layout(tmp_path / "img", [100])
    out = tmp_path / "out"
    out.mkdir()
    (out / "blobs").write_bytes(b"not a folder")
    assert main([f"oci:{info.layout}", f"oci:{out}:v1"]) == 3
    err = capsys.readouterr().err
    assert f"{out / 'blobs'}: a file, not a directory; not adding to it" in err and err.count("\n") == 1, err
    assert (out / "blobs").read_bytes() == b"not a folder"


def test_oci_layout_rewrites_damaged_or_linked_blobs_it_finds(tmp_path, capsys):
    """A blob already in the layout is skipped only when it is a regular file hashing to its
    digest: a layer with one flipped byte (same size) and a manifest that is a symbolic link
    (even to the right bytes) are written again (attack report, finding 8)."""
    info = make_layout(tmp_path / "img", [LayerSpec(50_000)], ref="v1")
    out = tmp_path / "out"
    assert main([f"oci:{info.layout}", f"oci:{out}:v1", "--quiet"]) == 0
    manifest = out / "blobs" / "sha256" / str(info.digest).split(":")[1]
    layer = json.loads(manifest.read_bytes())["layers"][0]["digest"]
    flip_byte(out / "blobs" / "sha256" / layer.split(":")[1])
    copy = tmp_path / "copy"
    copy.write_bytes(manifest.read_bytes())
    manifest.unlink()
    manifest.symlink_to(copy)
    capsys.readouterr()
    assert main([f"oci:{info.layout}", f"oci:{out}:v1", "--quiet"]) == 0
    for digest in (str(info.digest), layer):
        path = out / "blobs" / "sha256" / digest.split(":")[1]
        assert not path.is_symlink() and "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert copy.read_bytes() == manifest.read_bytes()  # the link's target was not written through


class _HeldBlob:
    """A 5-byte blob whose stream stops after its first bytes (``streaming`` set) until
    ``release``: a layout upload caught mid-write."""

    def __init__(self) -> None:
        self.digest, self.size = Digest.of(b"never"), 5
        self.streaming, self.release = threading.Event(), threading.Event()

    def stream(self):
        yield b"nev"
        self.streaming.set()
        self.release.wait(5)
        yield b"er"

    def finish(self):
        return self.digest

    def close(self):
        pass


def test_layout_abort_leaves_no_temporary_file_whatever_the_timing(tmp_path, monkeypatch):
    """abort() (SIGINT, SIGTERM) running between upload()'s interrupted check and its
    mkstemp used to miss the file mkstemp then made; the process then exits at once
    (os._exit) and the ``.tmp-`` file stayed (attack report, finding 10).  Here abort()
    is started exactly there; once it has returned no temporary file may exist."""
    import tempfile
    dest = LayoutDestination(tmp_path / "out", None).__enter__()
    real = tempfile.mkstemp
    aborter = threading.Thread(target=dest.abort)

    racing, blob = threading.Event(), _HeldBlob()

    def racing_mkstemp(*args, **kw):
        aborter.start()
        racing.set()
        aborter.join(0.3)  # without the lock, abort() finishes here, before the file exists
        return real(*args, **kw)

    def upload():
        with contextlib.suppress(Exception):  # interrupted, or its file removed: either is right
            dest.upload(blob)

    monkeypatch.setattr(tempfile, "mkstemp", racing_mkstemp)
    worker = threading.Thread(target=upload)
    worker.start()
    assert racing.wait(5)
    aborter.join(5)
    blob.streaming.wait(1)  # the upload is writing, if it got that far
    left = [p.name for p in (tmp_path / "out").rglob(".tmp-*")]
    blob.release.set()
    worker.join(5)
    assert left == []


def test_leaving_the_layout_by_an_exception_removes_the_temporary_files(tmp_path):
    """A signal can reach the main thread where the push has not armed its abort() yet
    (while it starts its upload threads); the exception still leaves the destination's
    ``with``, and that must remove what the threads are writing: the entry point exits
    with os._exit at once, so they never get to (t18 of the attack report: 2 runs in 16)."""
    blob = _HeldBlob()

    def upload(dest):
        with contextlib.suppress(Exception):
            dest.upload(blob)

    with pytest.raises(KeyboardInterrupt), LayoutDestination(tmp_path / "out", None) as dest:
        worker = threading.Thread(target=upload, args=(dest,))
        worker.start()
        assert blob.streaming.wait(5)
        raise KeyboardInterrupt  # as Interrupted would, from the signal handler
    left = [p.name for p in (tmp_path / "out").rglob(".tmp-*")]
    blob.release.set()
    worker.join(5)
    assert left == []
