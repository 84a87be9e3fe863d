"""Broken sources and destinations, as the user meets them: through the command line.

Each case builds its broken input in tmp_path with the generators (tests/imagegen.py,
tests/archivegen.py), runs ``ocipush.cli.main`` in-process and checks what the user gets:
the documented exit code (ocipush/errors.py: 2 usage, 3 source, 4 registry, 5 auth, 6 local
I/O); a
last line of stderr ``ocipush: …``, one printable line naming the file, blob, URL or header
at fault; no traceback; and no tag at the registry.

The readers' own messages are unit-tested in test_oci_layout.py and test_sources_archives.py,
the upload protocol's in test_upload_protocol.py; this table is the end-to-end contract.
Registries: the real one behind nginx (``proxy``), behind the fault proxy (HTML pages,
garbage, bad headers), one with htpasswd (refused credentials), and a closed port.

Full and read-only disks are real: a tiny tmpfs mounted for the case (``Bench.small_disk``)
and unmounted after it. Where mounting is impossible (not root), the case falls back to
RLIMIT_FSIZE, so the file system still refuses the write (EFBIG instead of ENOSPC) and
nothing is skipped; the culprits name paths, not errno texts, so both ways check the same.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import resource
import signal
import stat
import subprocess
import tempfile
import traceback
from pathlib import Path

import httpx
import pytest

from ocipush import mediatypes
from ocipush.cli import main
from tests import archivegen
from tests.archivegen import Member, edit_manifest_json, stored_base, symlink_member
from tests.faultproxy import html_error_page
from tests.helpers import ACCEPT
from tests.imagegen import ImageInfo, flip_byte, make_layout, remove_blob, rewrite_manifest, truncate_blob
from tests.services import free_port, start_registry
from tests.tokenserver import htpasswd_auth

pytestmark = pytest.mark.integration

PASSWORD = "bad-input-secret"
ZERO_DIGEST = "sha256:" + "0" * 64
NOT_JSON = b"{not json"
FAST_RETRIES = ("--retry-delay", "10ms")  # the default 3 retries, milliseconds apart

LEGACY = archivegen.legacy_docker_save()  # two images sharing a base layer; a repeat stored as a symlink
LINK = symlink_member(LEGACY).name
BASE = stored_base(LEGACY)
BUILDKIT = archivegen.buildkit_oci()
BUILDKIT_LAYER = BUILDKIT.images[0].layers[1]


class Bench:
    """What a case builds its input with, and where it pushes. Templates in argv and in the
    expected culprit are formatted with ``b=bench`` once the input is built."""

    def __init__(self, tmp: Path, host: str, repo: str, request: pytest.FixtureRequest):
        self.tmp, self.host, self.repo = tmp, host, repo
        self.info: ImageInfo | None = None  # the image a case broke
        self.broken: str | None = None  # what the damage returned: a new blob's digest
        self.tag_auth: tuple[str, str] | None = None  # to look for the tag on a registry with auth
        self.local_out: Path | None = None  # a local destination, which must not be tagged either
        self._request = request

    @property
    def dest(self) -> str:
        return f"{self.host}/{self.repo}:v1"

    def image(self) -> ImageInfo:
        self.info = make_layout(self.tmp / "img", [2000, 3000], ref="v1")
        return self.info

    def fixture(self, name: str):
        return self._request.getfixturevalue(name)

    def fill(self, templates) -> list[str]:
        return [t.format(b=self) for t in templates]

    def small_disk(self, name: str, size: str = "256k", *, read_only: bool = False) -> Path:
        """A directory on a file system of ``size`` (or read-only), unmounted after the case."""
        path = self.tmp / name
        path.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        try:
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
        except OSError:  # no mount command at all
            mounted = subprocess.CompletedProcess([], 1)
        if mounted.returncode == 0:
            self._request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(path)], check=True))
        else:  # no mount without root: the kernel still refuses the write, by file size
            limit = 0 if read_only else 1 << 17
            old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
            old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))

            def restore() -> None:
                resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
                signal.signal(signal.SIGXFSZ, old_handler)

            self._request.addfinalizer(restore)
        return path

    def tmpdir(self, path: Path) -> None:
        """``$TMPDIR`` for this case (tempfile caches it, so the cache is set too)."""
        monkeypatch = self.fixture("monkeypatch")
        monkeypatch.setenv("TMPDIR", str(path))
        monkeypatch.setattr(tempfile, "tempdir", str(path))


# -- how cases build their input: make(bench) -> argv --------------------------------------------


def oci(damage=lambda info: None, ref: str = "", *options: str):
    """A layout of one two-layer image, broken by damage(info)."""

    def make(b: Bench) -> list[str]:
        b.broken = damage(b.image())
        return [f"oci:{b.info.layout}{ref}", b.dest, *options]

    return make


def archive(transport: str, build, ref: str = ""):
    """build() -> an Archive, or the file's bytes; written to tmp/a.tar."""

    def make(b: Bench) -> list[str]:
        made, path = build(), b.tmp / "a.tar"
        path.write_bytes(made) if isinstance(made, bytes) else made.write(path)
        return [f"{transport}:{path}{ref}", b.dest]

    return make


def legacy(edit=lambda a: a, ref: str = ""):
    """docker ≤ 24's ``docker save`` of two images, edited by edit(Archive)."""
    return archive("docker-archive", lambda: edit(LEGACY), ref)


def source(spec: str):
    return lambda b: [*b.fill([spec]), b.dest]


def to(dest: str, *options: str):
    """A good image pushed to ``dest``."""
    return lambda b: [f"oci:{b.image().layout}", *b.fill([dest, *options])]


def options(*options: str):
    """A good image pushed to the real registry with ``options``."""
    return to("{b.dest}", *options)


def through_faults(install):
    """A good image pushed through the fault proxy in front of the real registry; install(proxy)."""

    def make(b: Bench) -> list[str]:
        proxy = b.fixture("faulty_proxy")
        install(proxy)
        b.host = proxy.host
        return [f"oci:{b.image().layout}", b.dest, *FAST_RETRIES]

    return make


def answer(status: int, body: bytes | str = b"", content_type: str | None = None, headers=None, **match):
    """The fault proxy answers every matching request so, by itself."""
    return through_faults(lambda p: p.respond(status, headers, body, content_type, times=None, **match))


def to_htpasswd_registry(*options: str):
    def make(b: Bench) -> list[str]:
        b.host = b.fixture("htpasswd_registry").host
        b.tag_auth = ("alice", PASSWORD)
        return [f"oci:{b.image().layout}", b.dest, *b.fill(options)]

    return make


def broken_auth_file(b: Bench) -> list[str]:
    """A docker config.json that is not JSON, read when the htpasswd registry asks for credentials."""
    path = b.fixture("user_config").docker_config
    path.parent.mkdir(parents=True)
    write(path, "{")
    b.broken = str(path)
    return to_htpasswd_registry()(b)


def layout_version_2(path: Path) -> Path:
    path.mkdir()
    write(path / "oci-layout", '{"imageLayoutVersion":"2.0.0"}')
    return path


def closed_port(b: Bench) -> list[str]:
    b.host = f"127.0.0.1:{free_port()}"
    return [f"oci:{b.image().layout}", b.dest, *FAST_RETRIES]


# -- ways to break an image ------------------------------------------------------------------------


def write(path: Path, text: str | bytes) -> None:
    path.write_bytes(text.encode() if isinstance(text, str) else text)


def set_media_type(info: ImageInfo, media_type: str) -> None:
    path = info.layout / "index.json"
    doc = json.loads(path.read_bytes())
    doc["manifests"][0]["mediaType"] = media_type
    path.write_text(json.dumps(doc))


def replace_config(info: ImageInfo, data: bytes) -> str:
    """A new config blob, honestly described by a new manifest, so its content is what fails."""
    digest = archivegen.digest(data)
    write(info.layout / "blobs" / "sha256" / digest[7:], data)
    manifest = json.loads(info.manifest.path.read_bytes())
    manifest["config"].update(digest=digest, size=len(data))
    rewrite_manifest(info, json.dumps(manifest).encode())
    return digest


def manifest_saying(info: ImageInfo, media_type: str) -> None:
    """The manifest's own ``mediaType`` contradicts the index entry (which stays an OCI manifest)."""
    manifest = json.loads(info.manifest.path.read_bytes())
    manifest["mediaType"] = media_type
    rewrite_manifest(info, json.dumps(manifest).encode())


def drop_diff_id(info: ImageInfo) -> str:
    config = json.loads(info.config.path.read_bytes())
    config["rootfs"]["diff_ids"].pop()
    return replace_config(info, json.dumps(config).encode())


def symlink_outside(info: ImageInfo) -> None:
    outside = info.layout.parent / "outside"
    outside.write_bytes(info.layers[0].path.read_bytes())
    info.layers[0].path.unlink()
    info.layers[0].path.symlink_to(outside)


def oversized_manifest(info: ImageInfo) -> None:
    manifest = json.loads(info.manifest.path.read_bytes())
    manifest["annotations"] = {"padding": "x" * (4 << 20)}
    rewrite_manifest(info, json.dumps(manifest).encode())


def second_image(info: ImageInfo) -> None:
    make_layout(info.layout, [100], ref="other", seed=1)


def special_file(path: Path, kind: int) -> None:
    """A FIFO or a socket node where a regular file was: opening a FIFO blocks forever."""
    if path.exists():
        path.unlink()
    os.mknod(path, kind | 0o600)


def fifo(relative: str):
    return lambda info: special_file(info.layout / relative, stat.S_IFIFO)


def special_blob(kind: int):
    return lambda info: special_file(info.layers[0].path, kind)


def digestfile_special(kind: int):
    """``--digestfile`` naming a FIFO or socket: refused before the push (a FIFO would block
    the write forever once the tag had moved)."""
    def make(b: Bench) -> list[str]:
        special_file(b.tmp / "digest", kind)
        return to("{b.dest}", "--digestfile", "{b.tmp}/digest")(b)

    return make


def special_archive(transport: str, kind: int):
    def make(b: Bench) -> list[str]:
        path = b.tmp / "a.tar"
        special_file(path, kind)
        return [f"{transport}:{path}", b.dest]

    return make


def noise(n: int) -> bytes:
    return random.Random(n).randbytes(n)


def full_tmpdir_archive(b: Bench) -> list[str]:
    """A gzip-compressed archive is decompressed into $TMPDIR, which is full."""
    path = b.tmp / "a.tar.gz"
    path.write_bytes(gzip.compress(noise(2 << 20), compresslevel=1))
    b.tmpdir(b.small_disk("tmpfs"))  # after the input is written: the fallback limits every file
    return [f"docker-archive:{path}", b.dest]


def full_tmpdir_recompressing(b: Bench) -> list[str]:
    """A 3 MiB layer recompressed to zstd spills its chunk into $TMPDIR, which is full."""
    info = make_layout(b.tmp / "img", [3 << 20, 100], ref="v1")
    b.tmpdir(b.small_disk("tmpfs"))
    return [f"oci:{info.layout}", b.dest, "--compression-format", "zstd", "--chunk-size", "8MiB"]


def local_destination_on(transport: str, read_only: bool):
    """A good image written to oci: or oci-archive: on a full (or read-only) disk."""

    def make(b: Bench) -> list[str]:
        info = make_layout(b.tmp / "img", [300_000], ref="v1")
        disk = b.small_disk("disk", "64k", read_only=read_only)
        b.broken = str(disk / "out")
        b.local_out = disk / "out"
        return [f"oci:{info.layout}", f"{transport}:{disk}/out:v1"]

    return make


def destination_layout_with(name: str):
    """An existing destination layout whose ``name`` is a FIFO."""

    def make(b: Bench) -> list[str]:
        out = b.tmp / "out"
        out.mkdir()
        write(out / "oci-layout", '{"imageLayoutVersion":"1.0.0"}')
        special_file(out / name, stat.S_IFIFO)
        b.local_out = out
        return [f"oci:{b.image().layout}", f"oci:{out}:v1"]

    return make


def legacy_tar(cut_end: int = 0) -> bytes:
    data = archivegen.tar_bytes(LEGACY.members)
    return data[: len(data) - cut_end]


def with_manifest_json(edit):
    return lambda a: edit_manifest_json(a, edit)


# -- the table ----------------------------------------------------------------------------------------


def case(id: str, code: int, culprit: str, make, *marks):
    """``culprit``: a substring of the error line, a template like the argv's."""
    return pytest.param(make, code, culprit, id=id, marks=marks)


SOURCES = [
    # where the image should be
    case("no-such-path", 3, "{b.tmp}/nope: no such directory",
         source("oci:{b.tmp}/nope")),
    case("oci-path-is-a-file", 3, "{b.tmp}/a.tar/oci-layout: Not a directory",
         archive("oci", lambda: b"a file, not a directory\n")),
    case("not-a-layout", 3, "{b.info.layout}/oci-layout: missing",
         oci(lambda i: (i.layout / "oci-layout").unlink())),
    case("oci-layout-version-2", 3, "{b.info.layout}/oci-layout: unsupported imageLayoutVersion '2.0.0'",
         oci(lambda i: write(i.layout / "oci-layout", '{"imageLayoutVersion":"2.0.0"}'))),
    case("oci-archive-not-a-tar", 3, "{b.tmp}/a.tar: not a tar archive",
         archive("oci-archive", lambda: b"hello\n" * 200)),
    case("docker-archive-not-a-tar", 3, "{b.tmp}/a.tar: not a tar archive",
         archive("docker-archive", lambda: b"{}\n")),
    case("docker-archive-is-a-directory", 3, "{b.info.layout}: a directory, not an archive",
         lambda b: [f"docker-archive:{b.image().layout}", b.dest]),
    case("truncated-tar", 3, "{b.tmp}/a.tar: truncated or corrupt tar archive",
         archive("docker-archive", lambda: legacy_tar(cut_end=1500))),
    case("truncated-gzip-archive", 3, "{b.tmp}/a.tar: corrupt gzip data",
         archive("docker-archive", lambda: archivegen.gzipped(legacy_tar())[:-100])),
    case("oci-archive-of-a-docker-save", 3, "{b.tmp}/a.tar is not an OCI image layout",
         archive("oci-archive", lambda: LEGACY)),
    case("docker-archive-of-an-oci-archive", 3, "it is an OCI layout: read it as oci-archive:{b.tmp}/a.tar",
         archive("docker-archive", lambda: BUILDKIT)),
    # blobs
    case("truncated-blob", 3, "blob {b.info.layers[0].digest}",
         oci(lambda i: truncate_blob(i.layers[0]))),
    case("flipped-byte-in-layer", 3, "blob {b.info.layers[1].digest}",
         oci(lambda i: flip_byte(i.layers[1]))),
    case("flipped-byte-in-config", 3, "blob {b.info.config.digest}",
         oci(lambda i: flip_byte(i.config))),
    case("flipped-byte-in-manifest", 3, "blob {b.info.manifest.digest}",
         oci(lambda i: flip_byte(i.manifest))),
    case("missing-blob", 3, "blob {b.info.layers[1].digest}",
         oci(lambda i: remove_blob(i.layers[1]))),
    case("oci-archive-missing-blob", 3, f"blob {BUILDKIT_LAYER}",
         archive("oci-archive", lambda: BUILDKIT.without(f"blobs/sha256/{BUILDKIT_LAYER[7:]}"))),
    case("layer-not-matching-its-diff-id", 3, f"member {BASE}): uncompressed content hashes to",
         legacy(lambda a: a.replacing(Member(BASE, archivegen.layer("not the base"))), ":other:v2")),
    # JSON documents
    case("index-json-invalid", 3, "{b.info.layout}/index.json: invalid JSON",
         oci(lambda i: write(i.layout / "index.json", "{"))),
    case("index-json-nested-too-deep", 3, "{b.info.layout}/index.json",
         oci(lambda i: write(i.layout / "index.json", "[" * 100_000))),
    case("manifest-invalid-json", 3, f"blob {archivegen.digest(NOT_JSON)}",
         oci(lambda i: rewrite_manifest(i, NOT_JSON))),
    case("config-invalid-json", 3, "blob {b.broken}",
         oci(lambda i: replace_config(i, NOT_JSON))),
    case("unknown-manifest-media-type", 3, "unsupported manifest media type 'application/x-unknown'",
         oci(lambda i: set_media_type(i, "application/x-unknown"))),
    case("manifest-media-type-contradicts-its-descriptor", 3,
         f"mediaType '{mediatypes.DOCKER_MANIFEST}' differs from its descriptor's '{mediatypes.OCI_MANIFEST}'",
         oci(lambda i: manifest_saying(i, mediatypes.DOCKER_MANIFEST))),
    case("manifest-calling-itself-an-index", 3,
         f"mediaType '{mediatypes.OCI_INDEX}' differs from its descriptor's '{mediatypes.OCI_MANIFEST}'",
         oci(lambda i: manifest_saying(i, mediatypes.OCI_INDEX))),
    case("manifest-over-4mib", 3, "over the 4194304-byte limit",
         oci(oversized_manifest)),
    case("diff-ids-short-in-docker-archive", 3, "manifest.json: other:v2: 1 layers, but its config",
         legacy(with_manifest_json(lambda d: d[1]["Layers"].pop()), ":other:v2")),
    case("diff-ids-short-recompressing-to-zstd", 3, "config {b.broken}: 1 diff_ids for 2 layers",
         oci(drop_diff_id, "", "--compression-format", "zstd")),
    case("manifest-json-names-a-missing-layer", 3, "layer 'nope/layer.tar' is not in the archive",
         legacy(with_manifest_json(lambda d: d[1]["Layers"].__setitem__(1, "nope/layer.tar")), ":other:v2")),
    # links
    case("symlink-escaping-the-layout", 3, "{b.info.layers[0].path}: link points outside the layout",
         oci(symlink_outside)),
    case("symlink-escaping-an-archive", 3, f"member {LINK}: leads outside the archive",
         legacy(lambda a: a.replacing(Member(LINK, symlink="../../../etc/passwd")), ":legacy:v1")),
    case("symlink-loop-in-an-archive", 3, f"member {LINK}: more than 40 links deep",
         legacy(lambda a: a.replacing(Member(LINK, symlink=f"../{LINK}")), ":legacy:v1")),
    # selection
    case("unknown-tag-in-archive", 3, "manifest.json has no image 'nope:v1'",
         legacy(ref=":nope:v1")),
    case("unknown-index-in-archive", 3, "manifest.json has no image '@2'",
         legacy(ref=":@2")),
    case("unknown-ref-in-layout", 3, "index.json has no image 'nope'; choose one of: v1",
         oci(ref=":nope")),
    case("several-images-in-archive-no-selector", 3, "manifest.json lists 2 images",
         legacy()),
    case("several-images-in-layout-no-selector", 3, "index.json lists 2 images",
         oci(second_image)),
    case("superscript-index-in-archive", 3, "manifest.json has no image '@²'",
         legacy(ref=":@²")),
    case("superscript-index-in-layout", 3, "not a digest: '²'",
         oci(ref=":@²")),
    case("arabic-digit-index-in-archive", 3, "manifest.json has no image '@١'",
         legacy(ref=":@١")),
    case("5000-digit-index-in-archive", 3, "manifest.json has no image '@9999",
         legacy(ref=":@" + "9" * 5000)),
    case("5000-digit-index-in-layout", 3, "index.json has no image '@9999",
         oci(ref=":@" + "9" * 5000)),
    # files that are not regular files: opening a FIFO for reading waits forever
    case("fifo-as-blob", 3, "{b.info.layers[0].path}: a FIFO (named pipe), not a regular file",
         oci(special_blob(stat.S_IFIFO))),
    case("socket-as-blob", 3, "{b.info.layers[0].path}: a socket, not a regular file",
         oci(special_blob(stat.S_IFSOCK))),
    case("fifo-as-index-json", 3, "{b.info.layout}/index.json: a FIFO (named pipe), not a regular file",
         oci(fifo("index.json"))),
    case("fifo-as-oci-layout-file", 3, "{b.info.layout}/oci-layout: a FIFO (named pipe), not a regular file",
         oci(fifo("oci-layout"))),
    case("fifo-as-manifest-blob", 3, "{b.info.manifest.path}: a FIFO (named pipe), not a regular file",
         oci(lambda i: special_file(i.manifest.path, stat.S_IFIFO))),
    case("fifo-as-docker-archive", 3, "{b.tmp}/a.tar: a FIFO (named pipe), not a regular file",
         special_archive("docker-archive", stat.S_IFIFO)),
    case("fifo-as-oci-archive", 3, "{b.tmp}/a.tar: a FIFO (named pipe), not a regular file",
         special_archive("oci-archive", stat.S_IFIFO)),
    case("socket-as-docker-archive", 3, "{b.tmp}/a.tar: a socket, not a regular file",
         special_archive("docker-archive", stat.S_IFSOCK)),
    case("device-as-docker-archive", 3, "/dev/null: a character device, not a regular file",
         source("docker-archive:/dev/null")),
]

USAGE = [
    case("unknown-transport", 2, "unknown source transport in 'tarball:x.tar'",
         source("tarball:x.tar")),
    case("no-transport", 2, "unknown source transport in './img'",
         source("./img")),
    case("dir-on-stdin", 2, "'dir:-': a directory cannot come on standard input",
         source("dir:-")),
    case("unsupported-destination-transport", 2, "destination transport 'docker-daemon' is not supported",
         to("docker-daemon:img:v1")),
    case("destination-layout-version-2", 3, "{b.tmp}/out/oci-layout: unsupported imageLayoutVersion '2.0.0'",
         lambda b: [f"oci:{b.image().layout}", f"oci:{layout_version_2(b.tmp / 'out')}:v1"]),
    case("destination-archive-in-a-missing-directory", 2, "{b.tmp}/no/out.tar: directory {b.tmp}/no does not exist",
         to("oci-archive:{b.tmp}/no/out.tar:v1")),
    case("bad-reference-uppercase-repository", 2, "invalid repository name 'Team/img'",
         to("{b.host}/Team/img:v1")),
    case("bad-reference-tag", 2, "invalid tag 'v1!'",
         to("{b.host}/{b.repo}:v1!")),
    case("bad-reference-digest", 2, "malformed sha256 digest: 'sha256:abc'",
         to("{b.host}/{b.repo}@sha256:abc")),
    case("bad-reference-host", 2, "invalid registry host 'bad_host:5000'",
         to("bad_host:5000/img:v1")),
    case("bad-reference-empty", 2, "empty image reference",
         to("")),
    case("tag-and-digest-destination", 2, "give a tag or a digest, not both",
         to("{b.host}/{b.repo}:v1@" + ZERO_DIGEST)),
    case("digest-destination-not-matching", 2, "but the source image is {b.info.digest}",
         to("{b.host}/{b.repo}@" + ZERO_DIGEST)),
    case("digest-destination-recompressed", 2, "names a digest, but compressing layers changes it",
         to("{b.host}/{b.repo}@{b.info.digest}", "--compression-format", "zstd")),
    case("chunk-size-unit", 2, "--chunk-size: invalid size '10XB'",
         options("--chunk-size", "10XB")),
    case("chunk-size-zero", 2, "--chunk-size: invalid size '0'",
         options("--chunk-size", "0")),
    case("jobs-zero", 2, "--jobs/-j: expected a number from 1 to 64, not '0'",
         options("--jobs", "0")),
    case("compression-level-out-of-range", 2, "--compression-level 30: zstd takes 1 to 22",
         options("--compression-format", "zstd", "--compression-level", "30")),
    case("compression-level-not-a-number", 2, "--compression-level/--dest-compress-level: expected a level such as 6",
         options("--compression-level", "high")),
    case("compression-format-unknown", 2, "--compression-format/--dest-compress-format: invalid choice: 'xz'",
         options("--compression-format", "xz")),
    case("retry-delay-not-a-duration", 2, "--retry-delay: invalid duration 'soon': expected a duration such as 2s",
         options("--retry-delay", "soon")),
    case("retry-delay-negative", 2, "--retry-delay: invalid duration '-1s': must not be negative",
         options("--retry-delay=-1s")),
    case("password-stdin-without-username", 2, "--password-stdin needs --username",
         options("--password-stdin")),
    case("username-without-password-stdin", 2, "--username needs --password-stdin",
         options("--username", "alice")),
    case("creds-without-user", 2, "--creds: empty user name",
         options("--creds", ":secret")),
    case("cert-dir-missing", 2, "--cert-dir {b.tmp}/no-certs",
         options("--cert-dir", "{b.tmp}/no-certs")),
    case("digestfile-in-a-missing-directory", 2, "--digestfile {b.tmp}/no/digest",
         options("--digestfile", "{b.tmp}/no/digest")),
    case("digestfile-a-fifo", 2, "--digestfile {b.tmp}/digest: a FIFO (named pipe), not a file the digest can",
         digestfile_special(stat.S_IFIFO)),
    case("digestfile-a-socket", 2, "--digestfile {b.tmp}/digest: a socket, not a file the digest can",
         digestfile_special(stat.S_IFSOCK)),
    case("digestfile-a-directory", 2, "--digestfile {b.tmp}: a directory, not a file the digest can",
         options("--digestfile", "{b.tmp}")),
    case("authfile-dev-zero", 2, "--authfile /dev/zero: a character device, not a regular file",
         options("--authfile", "/dev/zero")),
    case("unknown-option", 2, "unrecognized arguments: --chunksize",
         options("--chunksize", "5MB")),
    case("missing-destination", 2, "the following arguments are required: destination",
         lambda b: [f"oci:{b.image().layout}"]),
    # references as CI variables deliver them: a stray newline, space or control character
    case("destination-trailing-newline", 2, "invalid reference '{b.host}/{b.repo}:v1\\n': whitespace",
         to("{b.dest}\n")),
    case("destination-trailing-crlf", 2, "invalid reference '{b.host}/{b.repo}:v1\\r\\n': whitespace",
         to("{b.dest}\r\n")),
    case("destination-digest-trailing-newline", 2, "whitespace ('\\n') is not allowed",
         to("{b.host}/{b.repo}@{b.info.digest}\n")),
    case("destination-leading-space", 2, "invalid reference ' {b.host}/{b.repo}:v1': whitespace",
         to(" {b.dest}")),
    case("destination-tab-before-tag", 2, "whitespace ('\\t') is not allowed",
         to("{b.host}/{b.repo}\t:v1")),
    case("destination-escape-sequence", 2, "a control character ('\\x1b') is not allowed",
         to("{b.host}/{b.repo}:v1\x1b[2J")),
    case("destination-no-break-space", 2, "whitespace ('\\xa0') is not allowed",
         to("{b.host}/{b.repo}:v1\u00a0")),
    case("destination-unicode-tag", 2, "invalid tag 'vé'",
         to("{b.host}/{b.repo}:vé")),
    case("destination-port-too-big", 2, "invalid port 99999",
         to("127.0.0.1:99999/{b.repo}:v1")),
    case("local-destination-trailing-newline", 2, "invalid destination 'oci:{b.tmp}/out:v1\\n'",
         to("oci:{b.tmp}/out:v1\n")),
    case("local-destination-trailing-space", 2, "leading or trailing spaces",
         to("oci:{b.tmp}/out:v1 ")),
    case("source-trailing-newline", 2, "invalid source 'oci:{b.info.layout}\\n'",
         oci(ref="\n")),
    case("source-ref-with-space", 2, "invalid source REF 'v 1': whitespace",
         oci(ref=":v 1")),
    case("source-bell-in-archive-path", 2, "a control character ('\\x07') is not allowed",
         source("docker-archive:{b.tmp}/a\x07.tar")),
    case("image-name-with-space", 2, "invalid image name 'busy box'",
         source("docker-daemon:busy box")),
    # numbers: overflow, NaN, infinity, negatives, other scripts' digits
    case("chunk-size-300-digits", 2, "--chunk-size: invalid size '1111",
         options("--chunk-size", "1" * 300)),
    case("chunk-size-over-1tib", 2, "--chunk-size: invalid size '2TiB': at most 1 TiB",
         options("--chunk-size", "2TiB")),
    case("chunk-size-arabic-digits", 2, "--chunk-size: invalid size '٥MB'",
         options("--chunk-size", "٥MB")),
    case("chunk-size-negative", 2, "--chunk-size: invalid size '-5MB'",
         options("--chunk-size=-5MB")),
    case("chunk-size-nan", 2, "--chunk-size: invalid size 'nan'",
         options("--chunk-size", "nan")),
    case("retry-delay-nan", 2, "--retry-delay: invalid duration 'nan'",
         options("--retry-delay", "nan")),
    case("retry-delay-inf", 2, "--retry-delay: invalid duration 'inf'",
         options("--retry-delay", "inf")),
    case("retry-delay-infinity-ms", 2, "--retry-delay: invalid duration 'Infinityms'",
         options("--retry-delay", "Infinityms")),
    case("retry-delay-overflow", 2, "--retry-delay: invalid duration '1e400'",
         options("--retry-delay", "1e400")),
    case("retry-delay-over-a-day", 2, "--retry-delay: invalid duration '25h': at most 24h",
         options("--retry-delay", "25h")),
    case("retry-delay-huge-go-duration", 2, "--retry-delay: invalid duration '100000000m': at most 24h",
         options("--retry-delay", "100000000m")),
    case("retry-delay-negative-go-duration", 2, "--retry-delay: invalid duration '-1m30s': must not be negative",
         options("--retry-delay=-1m30s")),
    case("retry-delay-arabic-digits", 2, "--retry-delay: invalid duration '٣s'",
         options("--retry-delay", "٣s")),
    case("retry-delay-unit-without-number", 2, "--retry-delay: invalid duration 'ms'",
         options("--retry-delay", "ms")),
    case("retry-superscript", 2, "--retry: expected a number from 0 to 100, not '²'",
         options("--retry", "²")),
    case("retry-5000-digits", 2, "--retry: expected a number from 0 to 100, not '1111",
         options("--retry", "1" * 5000)),
    case("jobs-superscript", 2, "--jobs/-j: expected a number from 1 to 64, not '²'",
         options("--jobs", "²")),
    case("jobs-arabic-digit", 2, "--jobs/-j: expected a number from 1 to 64, not '٣'",
         options("--jobs", "٣")),
    case("compression-level-superscript", 2, "--compression-level/--dest-compress-level: expected a level",
         options("--compression-level", "²")),
    case("compression-level-arabic-digit", 2, "--compression-level/--dest-compress-level: expected a level",
         options("--compression-level", "٣")),
    # local destinations that are not what they seem: not a layout we can add to, exit 3 as for a source
    case("destination-oci-layout-is-a-fifo", 3, "{b.tmp}/out/oci-layout: a FIFO (named pipe), not a regular file",
         destination_layout_with("oci-layout")),
    case("destination-index-json-is-a-fifo", 3, "{b.tmp}/out/index.json: a FIFO (named pipe), not a regular file",
         destination_layout_with("index.json")),
]

LOCAL_IO = [
    case("full-tmpdir-decompressing-archive", 6, "{b.tmp}/tmpfs: decompressing {b.tmp}/a.tar.gz:",
         full_tmpdir_archive),
    case("full-tmpdir-recompressing-layer", 6, "{b.tmp}/tmpfs: spilling a compressed chunk of blob",
         full_tmpdir_recompressing),
    case("full-disk-oci-destination", 6, "{b.broken}",
         local_destination_on("oci", read_only=False)),
    case("full-disk-oci-archive-destination", 6, "{b.tmp}/disk/.out.",
         local_destination_on("oci-archive", read_only=False)),
    case("read-only-oci-destination", 6, "{b.broken}",
         local_destination_on("oci", read_only=True)),
    case("read-only-oci-archive-destination", 6, "{b.tmp}/disk/",
         local_destination_on("oci-archive", read_only=True)),
]

UPLOADS = "POST http://{b.host}/v2/{b.repo}/blobs/uploads/"
REGISTRY = [
    case("registry-answers-html-500", 4, UPLOADS + ": 500 Internal Server Error",
         answer(500, html_error_page(500), "text/html", method="POST")),
    case("registry-answers-non-json-400", 4, UPLOADS + ": 400 Bad Request",
         answer(400, "<html>oops</html>", "application/json", method="POST")),
    case("registry-answers-garbage-400", 4, "PUT http://{b.host}/v2/{b.repo}/manifests/v1: 400 Bad Request",
         answer(400, b"\x00\xff\x1b[2J\x07garbage\r\n\x1b]0;pwned\x07", method="PUT", path="/manifests/")),
    case("registry-is-not-a-registry", 4, "http://{b.host}/v2/: 404 Not Found",
         answer(404, html_error_page(404), "text/html")),
    case("registry-chunk-header-not-a-number", 4, "header OCI-Chunk-Max-Length from " + UPLOADS + ": 'lots' is not",
         answer(202, headers={"Location": "/v2/x/blobs/uploads/1", "OCI-Chunk-Max-Length": "lots"}, method="POST")),
    case("registry-upload-without-location", 4, UPLOADS + ": 202 without a Location header",
         answer(202, method="POST")),
    case("registry-unreachable", 4, "cannot reach registry {b.host}",
         closed_port),
    case("wrong-password", 5, "{b.host}: authentication failed: the registry refused user 'alice' (from --creds)",
         to_htpasswd_registry("--creds", "alice:wrong")),
    case("no-credentials", 5, "{b.host}: authentication failed",
         to_htpasswd_registry()),
    case("auth-file-invalid-json", 5, "cannot read auth file {b.broken}",
         broken_auth_file),
    case("authfile-missing", 2, "--authfile {b.tmp}/auth.json: no such file",
         to_htpasswd_registry("--authfile", "{b.tmp}/auth.json")),
]


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("htpasswd-registry")
    with start_registry(workdir, htpasswd_auth(workdir, {"alice": PASSWORD})) as registry:
        yield registry


@pytest.fixture(autouse=True)
def _isolated_home(user_config):
    pass


def run_cli(argv: list[str], capsys) -> tuple[int | None, str, str]:
    """main(argv) as the entry point runs it: an exception that escapes is a traceback on stderr."""
    try:
        code = main(argv)
    except Exception:
        code = None
        traceback.print_exc()
    out, err = capsys.readouterr()
    return code, out, err


def tag_status(host: str, repo: str, auth: tuple[str, str] | None) -> int:
    response = httpx.get(f"http://{host}/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT}, auth=auth)
    return response.status_code


@pytest.mark.parametrize("make, code, culprit", SOURCES + USAGE + LOCAL_IO + REGISTRY)
def test_bad_input_fails_in_one_line_and_tags_nothing(make, code, culprit, proxy, registry, repo, tmp_path,
                                                      capsys, request):
    bench = Bench(tmp_path, proxy.host, repo, request)
    got, out, err = run_cli(make(bench), capsys)
    assert "Traceback" not in out + err, err
    last = err.rstrip("\n").rpartition("\n")[2]
    assert (got, last.startswith("ocipush: ")) == (code, True), err
    assert last.isprintable(), f"control characters in {last!r}"
    assert culprit.format(b=bench) in last, last
    # Wherever the case pushed, the registry behind it has no tag.
    registry_host = bench.host if bench.tag_auth else registry.host
    assert tag_status(registry_host, repo, bench.tag_auth) == 404
    if bench.local_out is not None:  # an oci-archive: not written; an oci: layout: no index entry
        index = bench.local_out / "index.json"
        assert not bench.local_out.is_file() and (index.is_fifo() or not index.exists())
        if bench.local_out.parent.name == "disk":  # and a full disk keeps no temporary file
            assert [p.name for p in bench.local_out.parent.rglob(".*")] == []


def test_missing_authfile_is_refused_before_any_request(tmp_path, capsys):
    """As podman does: even a registry that never asks for credentials is not contacted."""
    from tests.imagegen import make_layout
    from tests.services import free_port

    info = make_layout(tmp_path / "img", [100])
    assert main([f"oci:{info.layout}", f"127.0.0.1:{free_port()}/x:y", "--authfile", str(tmp_path / "nope.json")]) == 2
    assert capsys.readouterr().err == f"ocipush: --authfile {tmp_path / 'nope.json'}: no such file\n"


def test_full_tmpdir_while_recompressing_cancels_the_open_upload(proxy, registry, repo, tmp_path, capsys, request):
    """The spill fails mid-upload: every upload the push began is committed or cancelled
    (DELETE answered 204), and there is no tag.

    Checked in the proxy's log rather than in the registry's ``_uploads`` directory: the
    CNCF registry (2.8) answers the DELETE of an upload that has received no bytes with
    204 but then writes the upload's hash state again ("error closing blobwriter: …
    file already closed"), leaving ``_uploads/UUID/hashstates/sha256/0`` behind."""
    bench = Bench(tmp_path, proxy.host, repo, request)
    argv = full_tmpdir_recompressing(bench)
    since = proxy.mark()
    got, _, err = run_cli(argv, capsys)
    assert got == 6 and "Traceback" not in err, err
    last: dict[str, tuple[str, int]] = {}  # upload URL path -> its last request
    for r in proxy.requests(since):
        if "/blobs/uploads/" in r.path and not r.path.endswith("/uploads/"):
            last[r.path] = (r.method, r.status)
    cancelled = [p for p, (method, status) in last.items() if (method, status) == ("DELETE", 204)]
    assert cancelled, f"no upload was cancelled: {last}"
    assert all((method, status) in (("PUT", 201), ("DELETE", 204)) for method, status in last.values()), last
    assert tag_status(registry.host, repo, None) == 404


@pytest.mark.parametrize("dest", ["user:SECRET-PASSWORD@127.0.0.1:5000/repo:v1",
                                  "docker://user:SECRET-PASSWORD@registry.test/repo",
                                  "user:SECRET-PASSWORD@registry.test"])
def test_a_password_in_the_reference_is_refused_masked(dest, tmp_path, capsys):
    """A reference written as a URL with credentials is a usage error whose line shows
    ``user:***@…``: the password never reaches the log (attack report, finding 14)."""
    info = make_layout(tmp_path / "img", [100])
    got, out, err = run_cli([f"oci:{info.layout}", dest], capsys)
    assert got == 2 and "SECRET" not in out + err, err
    assert err.startswith("ocipush: invalid reference '") and "user:***@" in err and err.count("\n") == 1, err


def test_a_digestfile_that_fails_after_the_push_says_the_image_is_there(registry, repo, tmp_path, capsys):
    """``/dev/full`` passes the check (a character device) and fails the write: the tag has
    moved by then, so it is a local I/O error (exit 6) naming the pushed digest, not a usage
    error."""
    info = make_layout(tmp_path / "img", [100], ref="v1")
    got, out, err = run_cli([f"oci:{info.layout}", f"{registry.host}/{repo}:v1", "--digestfile", "/dev/full", "-q"],
                            capsys)
    assert got == 6 and out == "", err
    assert err == f"ocipush: --digestfile /dev/full: No space left on device (the image was pushed as {info.digest})\n"
