"""docker-archive: and oci-archive: sources, for every generation of archive, against the
committed fixtures (fixtures/archives/, see fixtures/README.md) and broken variants."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import tempfile
from pathlib import Path

import pytest
import zstandard

from ocipush import mediatypes
from ocipush.content import FileContent
from ocipush.errors import BlobVerificationError, SourceError, UsageError
from ocipush.models import Manifest
from ocipush.sources import load_image, open_source
from tests import archivegen
from tests.archivegen import Member
from tests.archivegen import edit_manifest_json as _manifest_json
from tests.archivegen import stored_base as _stored_base
from tests.archivegen import symlink_member as _symlink

FIXTURES = Path(__file__).parent.parent / "fixtures"
ARCHIVES = FIXTURES / "archives"


def read_blob(source, desc) -> bytes:
    return FileContent(lambda: source.open_blob(desc), desc.digest, desc.size, source.describe_blob(desc)).read_all()


def uncompressed(data: bytes) -> bytes:
    if data.startswith(b"\x1f\x8b"):
        return gzip.decompress(data)
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def check_image(source):
    """Load, verify every blob against its digest, and every layer against its config's
    diff_ids (decompressed as its magic bytes say). Returns the image."""
    image = load_image(source)
    blobs = {d.digest: read_blob(source, d) for d in image.blobs()}
    for node in image.walk():
        if isinstance(node.parsed, Manifest):
            diff_ids = json.loads(blobs[node.parsed.config.digest])["rootfs"]["diff_ids"]
            assert len(diff_ids) == len(node.parsed.layers)
            for layer, diff_id in zip(node.parsed.layers, diff_ids, strict=True):
                if not mediatypes.is_foreign_layer(layer.media_type):
                    assert "sha256:" + hashlib.sha256(uncompressed(blobs[layer.digest])).hexdigest() == diff_id
    return image


def oci_config(layout: str, ref: str) -> str:
    """The config digest of the image named ``ref`` in a fixtures/oci layout."""
    blobs = FIXTURES / "oci" / layout / "blobs" / "sha256"
    index = json.loads((FIXTURES / "oci" / layout / "index.json").read_text())
    entry = next(e for e in index["manifests"] if e["annotations"]["org.opencontainers.image.ref.name"] == ref)
    return json.loads((blobs / entry["digest"][7:]).read_bytes())["config"]["digest"]


def opened(spec: str):
    source = open_source(spec)
    return source, check_image(source)


# -- the committed fixtures ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(archivegen.GENERATED))
def test_generated_fixtures_are_what_the_generator_writes(tmp_path, name):
    written = archivegen.GENERATED[name]().write(tmp_path / name)
    assert written.read_bytes() == (ARCHIVES / name).read_bytes(), "rerun fixtures/make-archive-fixtures.sh"


def test_compressed_fixture_is_the_legacy_archive():
    legacy = (ARCHIVES / "docker-legacy.tar").read_bytes()
    assert gzip.decompress((ARCHIVES / "docker-legacy.tar.gz").read_bytes()) == legacy


# Archives without a manifest: one is made, its layers the uncompressed files, their
# digests the config's diff_ids, the config the archive's own.
SYNTHESIZED = [
    ("skopeo-docker.tar", "", oci_config("single", "v1")),
    ("skopeo-docker.tar", ":hello:v1", oci_config("single", "v1")),
    ("skopeo-docker.tar", ":docker.io/library/hello:v1", oci_config("single", "v1")),
    ("skopeo-docker.tar", ":@0", oci_config("single", "v1")),
    ("podman-multi.tar", ":localhost/tworefs:a", oci_config("tworefs", "a")),
    ("podman-multi.tar", ":tworefs:b", oci_config("tworefs", "b")),
    ("podman-multi.tar", ":@1", oci_config("tworefs", "b")),
    ("docker-legacy.tar", ":legacy:v1", archivegen.legacy_docker_save().images[0].config),
    ("docker-legacy.tar", ":example.com/team/legacy:v1", archivegen.legacy_docker_save().images[0].config),
    ("docker-legacy.tar", ":docker.io/library/other:v2", archivegen.legacy_docker_save().images[1].config),
    ("docker-legacy.tar.gz", ":@0", archivegen.legacy_docker_save().images[0].config),
]


@pytest.mark.parametrize("archive, ref, config", SYNTHESIZED)
def test_archives_without_a_manifest_get_one(archive, ref, config):
    with open_source(f"docker-archive:{ARCHIVES / archive}{ref}") as source:
        image = check_image(source)
        manifest = image.parsed
        assert image.descriptor.media_type == manifest.media_type == mediatypes.OCI_MANIFEST
        assert str(manifest.config.digest) == config
        assert manifest.config.media_type == mediatypes.OCI_CONFIG
        diff_ids = json.loads(read_blob(source, manifest.config))["rootfs"]["diff_ids"]
        assert [str(d.digest) for d in manifest.layers] == diff_ids
        assert {d.media_type for d in manifest.layers} == {mediatypes.OCI_LAYER}
        assert "made from" in source.describe_blob(image.descriptor) and source.notes == []


def test_legacy_repeated_layer_is_a_symlink_read_through():
    facts = archivegen.legacy_docker_save().images[0]
    with open_source(f"docker-archive:{ARCHIVES / 'docker-legacy.tar'}:legacy:v1") as source:
        layers = check_image(source).parsed.layers
    assert [str(d.digest) for d in layers] == list(facts.diff_ids)
    assert layers[0] == layers[2]  # the symlinked copy is the same blob


# Archives that hold the manifest the tool wrote push it as it is, read either way.
# docker 25+'s LayerSources lists every layer: they are pushed all the same, none foreign.
OWN_MANIFEST = [
    (f"docker-archive:{ARCHIVES / 'docker25.tar'}", archivegen.docker25_save, mediatypes.OCI_LAYER),
    (f"oci-archive:{ARCHIVES / 'docker25.tar'}:v1", archivegen.docker25_save, mediatypes.OCI_LAYER),
    (f"docker-archive:{ARCHIVES / 'buildkit-docker.tar'}:bkd", archivegen.buildkit_docker, mediatypes.DOCKER_LAYER),
    (f"oci-archive:{ARCHIVES / 'buildkit-docker.tar'}", archivegen.buildkit_docker, mediatypes.DOCKER_LAYER),
]


@pytest.mark.parametrize("spec, build, layer_type", OWN_MANIFEST)
def test_archives_with_the_tools_manifest_push_it(spec, build, layer_type):
    facts = build().images[0]
    with open_source(spec) as source:
        image = check_image(source)
    assert str(image.descriptor.digest) == facts.manifest
    assert [str(d.digest) for d in image.blobs()] == [facts.config, *facts.layers]
    assert {d.media_type for d in image.parsed.layers} == {layer_type}


def test_containerd_export_pushes_the_present_platform_and_says_what_it_skipped():
    archive = archivegen.containerd_save()
    with open_source(f"docker-archive:{ARCHIVES / 'containerd.tar'}:multi:v1") as source:
        image = check_image(source)
        assert str(image.descriptor.digest) == archive.images[0].manifest
        assert str(image.descriptor.platform) == "linux/amd64"
        assert [d.media_type for d in image.parsed.layers] == [mediatypes.OCI_LAYER_GZIP, mediatypes.OCI_LAYER_ZSTD]
        [note] = source.notes
    assert note == (
        f"{ARCHIVES / 'containerd.tar'}: pushing the linux/amd64 image alone; its index also lists "
        "linux/arm64, unknown/unknown, not in the archive"
    )
    # Read as an OCI layout, the index is the image, and its absent children are an error.
    missing = r"blob sha256:\w+ \(.*containerd.tar member blobs/sha256/\w+\): missing from the archive"
    with pytest.raises(SourceError, match=missing):
        load_image(open_source(f"oci-archive:{ARCHIVES / 'containerd.tar'}"))


def test_buildkit_oci_pushes_its_index_with_the_attestation():
    archive = archivegen.buildkit_oci()
    with open_source(f"oci-archive:{ARCHIVES / 'buildkit-oci.tar'}") as source:
        image = check_image(source)
        assert str(image.descriptor.digest) == archive.root and image.is_index
        image_node, attestation = image.children
        assert str(image_node.descriptor.digest) == archive.images[0].manifest
        assert str(attestation.descriptor.platform) == "unknown/unknown"
        assert [d.media_type for d in attestation.parsed.layers] == [archivegen.IN_TOTO]
    hint = r"buildkit-oci.tar: no manifest.json, so not a docker archive; it is an OCI layout: read it as oci-archive:"
    with pytest.raises(SourceError, match=hint):
        open_source(f"docker-archive:{ARCHIVES / 'buildkit-oci.tar'}")


def test_oci_archive_by_skopeo_selects_like_a_layout():
    index = json.loads((FIXTURES / "oci" / "multiarch" / "index.json").read_text())["manifests"][0]["digest"]
    for ref in ("", ":multi", f":@{index}", ":@0"):
        with open_source(f"oci-archive:{ARCHIVES / 'skopeo-oci.tar'}{ref}") as source:
            image = check_image(source)
            assert str(image.descriptor.digest) == index and len(image.children) == 2


def test_index_entry_whole_in_the_archive_is_pushed_whole(tmp_path):
    """buildkit type=docker with attestations: index.json → an index of the image and its
    attestation, all present, named by manifest.json: the index is what is pushed."""
    bk = archivegen.buildkit_oci()
    facts = bk.images[0]
    entry = {"Config": f"blobs/sha256/{facts.config[7:]}", "RepoTags": ["bk:latest"],
             "Layers": [f"blobs/sha256/{d[7:]}" for d in facts.layers]}
    archive = archivegen.Archive((*bk.members, Member("manifest.json", json.dumps([entry]).encode())), bk.images)
    with open_source(f"docker-archive:{archive.write(tmp_path / 'a.tar')}") as source:
        image = check_image(source)
        assert str(image.descriptor.digest) == bk.root and source.notes == []


def test_compressed_layers_without_a_manifest_are_hashed_for_their_digest(tmp_path):
    """crane writes manifest.json with gzip layer files and no manifest: the layer's
    digest is its file's, the media type follows its magic bytes."""
    legacy = archivegen.legacy_docker_save()
    base = legacy.member(_stored_base(legacy))
    archive = legacy.replacing(Member(base.name, archivegen.gzipped(base.data)))
    with open_source(f"docker-archive:{archive.write(tmp_path / 'a.tar')}:other:v2") as source:
        layers = check_image(source).parsed.layers
    assert [d.media_type for d in layers] == [mediatypes.OCI_LAYER_GZIP, mediatypes.OCI_LAYER]
    assert str(layers[0].digest) == archivegen.digest(archivegen.gzipped(base.data))


def test_foreign_layers_keep_their_descriptor_and_need_no_file(tmp_path):
    archive = archivegen.legacy_docker_save(foreign=True)
    with open_source(f"docker-archive:{archive.write(tmp_path / 'a.tar')}:legacy:v1") as source:
        image = check_image(source)
    foreign = image.parsed.layers[1]
    assert foreign.media_type == mediatypes.DOCKER_FOREIGN_LAYER
    assert foreign.urls == ["https://example.com/app.tar.gz"]
    assert foreign not in image.blobs()


def test_temporary_files_are_removed_on_close(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with open_source(f"docker-archive:{ARCHIVES / 'docker-legacy.tar.gz'}:other:v2") as source:
        check_image(source)
        assert list(tmp_path.iterdir()) == []  # the decompressed copy has no name (tarindex.temporary_file)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind, compress", [("xz", lzma.compress), ("zstd", archivegen.zstded)])
def test_whole_archive_compressed_otherwise(tmp_path, kind, compress):
    (tmp_path / "a").write_bytes(compress((ARCHIVES / "docker25.tar").read_bytes()))
    with open_source(f"docker-archive:{tmp_path / 'a'}") as source:
        assert str(check_image(source).descriptor.digest) == archivegen.docker25_save().images[0].manifest


# -- selection and bad input --------------------------------------------------------------


def test_several_images_and_no_ref_lists_them():
    spec = f"docker-archive:{ARCHIVES / 'podman-multi.tar'}"
    with pytest.raises(SourceError, match=(
        rf"manifest.json lists 2 images; choose one as {spec}:REPO:TAG or {spec}:@N, one of: "
        r"@0 \(localhost/tworefs:a\), @1 \(docker.io/library/tworefs:b\)$"
    )):
        open_source(spec)


def _legacy(tmp_path, edit) -> str:
    return f"docker-archive:{edit(archivegen.legacy_docker_save()).write(tmp_path / 'a.tar')}"


BAD = [
    ("not a tar", lambda p: (p / "a.tar").write_text('{"a": 1}') and "", "", r"a.tar: not a tar archive"),
    ("truncated", lambda p: (p / "a.tar").write_bytes((ARCHIVES / "docker-legacy.tar").read_bytes()[:5000]) and "",
     "", r"a.tar: truncated or corrupt tar archive"),
    ("empty", lambda p: (p / "a.tar").write_bytes(archivegen.tar_bytes([])) and "", "", r"a.tar: empty archive$"),
    ("no manifest.json", lambda p: archivegen.Archive((Member("x", b"x"),), ()).write(p / "a.tar") and "", "",
     r"a.tar: no manifest.json, so not a docker archive$"),
    ("missing layer", lambda p: _legacy(p, lambda a: a.without(_stored_base(a))), ":other:v2",
     r"manifest.json: other:v2: layer '\w+/layer.tar' is not in the archive$"),
    ("missing config",
     lambda p: _legacy(p, lambda a: a.without(json.loads(a.member("manifest.json").data)[1]["Config"])),
     ":other:v2", r"manifest.json: other:v2: config '\w+.json' is not in the archive$"),
    ("manifest.json names a missing layer",
     lambda p: _legacy(p, lambda a: _manifest_json(a, lambda d: d[1]["Layers"].__setitem__(1, "nope/layer.tar"))),
     ":other:v2", r"manifest.json: other:v2: layer 'nope/layer.tar' is not in the archive$"),
    ("diff_id count mismatch", lambda p: _legacy(p, lambda a: _manifest_json(a, lambda d: d[1]["Layers"].pop())),
     ":other:v2", r"manifest.json: other:v2: 1 layers, but its config \w+.json lists 2 diff_ids$"),
    ("symlink outside",
     lambda p: _legacy(p, lambda a: a.replacing(Member(_symlink(a).name, symlink="../../../etc/passwd"))),
     ":legacy:v1", r"a.tar member \w+/layer.tar: leads outside the archive$"),
    ("absolute symlink", lambda p: _legacy(p, lambda a: a.replacing(Member(_symlink(a).name, symlink="/etc/passwd"))),
     ":legacy:v1", r"a.tar member \w+/layer.tar: absolute link to '/etc/passwd'; links must stay inside the archive$"),
    ("symlink loop",
     lambda p: _legacy(p, lambda a: a.replacing(Member(_symlink(a).name, symlink="../" + _symlink(a).name))),
     ":legacy:v1", r"a.tar member \w+/layer.tar: more than 40 links deep \(a link loop\?\)$"),
    ("unknown tag", lambda p: _legacy(p, lambda a: a), ":nope:v1",
     r"manifest.json has no image 'nope:v1'; choose one of: "
     r"@0 \(legacy:v1, example.com/team/legacy:v1\), @1 \(other:v2\)$"),
    ("unknown index", lambda p: _legacy(p, lambda a: a), ":@2", r"manifest.json has no image '@2'; choose one of: @0"),
    ("manifest.json not a list", lambda p: _legacy(p, lambda a: a.replacing(Member("manifest.json", b"{}"))), "",
     r"a.tar member manifest.json: not a list of images$"),
    ("manifest.json empty", lambda p: _legacy(p, lambda a: a.replacing(Member("manifest.json", b"[]"))), "",
     r"a.tar member manifest.json: lists no images$"),
    ("manifest.json invalid", lambda p: _legacy(p, lambda a: a.replacing(Member("manifest.json", b"[{"))), "",
     r"a.tar member manifest.json: invalid JSON"),
    ("manifest.json with a 5000-digit number",  # Python's int limit: a ValueError, not a JSONDecodeError
     lambda p: _legacy(p, lambda a: a.replacing(Member("manifest.json", b"[" + b"1" * 5000 + b"]"))), "",
     r"a.tar member manifest.json: invalid JSON: Exceeds the limit"),
    ("entry without Config", lambda p: _legacy(p, lambda a: _manifest_json(a, lambda d: d[0].pop("Config"))), "",
     r"manifest.json: entry 0: Config is not a file name$"),
    ("config without diff_ids", lambda p: _legacy(p, lambda a: a.replacing(
        Member(json.loads(a.member("manifest.json").data)[1]["Config"], b"{}"))), ":other:v2",
     r"a.tar member \w+.json: not an image config \(no rootfs.diff_ids\)$"),
    ("xz layer", lambda p: _legacy(p, lambda a: a.replacing(Member(_stored_base(a), lzma.compress(b"x")))), ":other:v2",
     r"a.tar member \w+/layer.tar: a xz-compressed layer; registries take uncompressed, gzip or zstd layers only$"),
    ("no such file", lambda p: "", "", r"a.tar: no such file$"),
]


@pytest.mark.parametrize("case, make, ref, message", BAD, ids=[c[0] for c in BAD])
def test_bad_docker_archives_give_one_line_errors(tmp_path, case, make, ref, message):
    make(tmp_path)
    with pytest.raises(SourceError) as e:
        load_image(open_source(f"docker-archive:{tmp_path / 'a.tar'}{ref}"))
    assert "\n" not in str(e.value)
    assert __import__("re").search(message, str(e.value)), str(e.value)


def test_layer_that_does_not_match_its_diff_id_fails_while_read(tmp_path):
    archive = archivegen.legacy_docker_save()
    base = _stored_base(archive)
    broken = archive.replacing(Member(base, archivegen.layer("not the base")))
    with open_source(f"docker-archive:{broken.write(tmp_path / 'a.tar')}:other:v2") as source:
        image = load_image(source)  # sizes are all it can check without reading every layer
        layer = image.parsed.layers[0]
        mismatch = rf"blob {layer.digest} \(.*a.tar member {base}\): content does not match its digest"
        with pytest.raises(BlobVerificationError, match=mismatch):
            read_blob(source, layer)


def test_oci_archive_missing_blob(tmp_path):
    archive = archivegen.buildkit_oci()
    layer = archive.images[0].layers[1]
    path = archive.without(f"blobs/sha256/{layer[7:]}").write(tmp_path / "a.tar")
    missing = rf"^blob {layer} \({path} member blobs/sha256/\w+\): missing from the archive$"
    with pytest.raises(SourceError, match=missing):
        load_image(open_source(f"oci-archive:{path}"))


def test_oci_archive_of_a_docker_archive(tmp_path):
    not_layout = r"docker-legacy.tar member oci-layout: missing: .*docker-legacy.tar is not an OCI image layout$"
    with pytest.raises(SourceError, match=not_layout):
        open_source(f"oci-archive:{ARCHIVES / 'docker-legacy.tar'}").root()


@pytest.mark.parametrize(
    "spec, message",
    [
        ("docker-archive:", "'docker-archive:': missing the archive path"),
        ("oci-archive:", "'oci-archive:': missing the archive path"),
        ("docker-daemon:", "missing the image name"),
        ("tarball:x.tar",
         r"unknown source transport in 'tarball:x.tar': use one of oci:PATH\[:REF\], oci-archive:PATH"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(UsageError, match=message):
        open_source(spec)


def test_failed_open_closes_the_spool(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "a.tgz").write_bytes(gzip.compress((ARCHIVES / "podman-multi.tar").read_bytes()))
    with pytest.raises(SourceError, match="lists 2 images"):
        open_source(f"docker-archive:{tmp_path / 'a.tgz'}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.tgz"]


# -- pushed to the real registry through the body-limited proxy ------------------------------


def _amd64_manifest(image) -> Manifest:
    """The image skopeo pulls by default (linux/amd64)."""
    return next(n.parsed for n in image.walk() if isinstance(n.parsed, Manifest)
                and (n is image or str(n.descriptor.platform) == "linux/amd64"))


def _push_and_pull(spec, proxy, repo, tmp_path):
    from ocipush.push import push
    from tests.services import skopeo_pull

    with open_source(spec) as source:
        image = load_image(source)
        result = push(source, f"{proxy.host}/{repo}:v1")
    pulled = open_source(f"oci:{skopeo_pull(f'{proxy.host}/{repo}:v1', tmp_path / 'pulled')}:pulled")
    pulled_image = check_image(pulled)  # every blob verified, every layer against its diff_id
    source = _amd64_manifest(image)
    if source.config.media_type == mediatypes.OCI_CONFIG:  # skopeo rewrites docker configs into oci:
        assert pulled_image.parsed.config.digest == source.config.digest  # the config, unchanged
    return image, result


@pytest.mark.integration
@pytest.mark.parametrize("spec", [
    f"oci-archive:{ARCHIVES / 'skopeo-oci.tar'}",
    f"docker-archive:{ARCHIVES / 'containerd.tar'}",
    f"oci-archive:{ARCHIVES / 'buildkit-oci.tar'}",
    f"docker-archive:{ARCHIVES / 'buildkit-docker.tar'}",
], ids=["skopeo-oci", "containerd", "buildkit-oci", "buildkit-docker"])
def test_push_compressed_archives(proxy, repo, tmp_path, spec):
    image, result = _push_and_pull(spec, proxy, repo, tmp_path)
    assert result.digest == image.descriptor.digest  # the tool's manifest, byte for byte


@pytest.mark.integration
@pytest.mark.parametrize("spec", [
    f"docker-archive:{ARCHIVES / 'docker-legacy.tar'}:legacy:v1",
    f"docker-archive:{ARCHIVES / 'docker-legacy.tar.gz'}:other:v2",
    f"docker-archive:{ARCHIVES / 'docker25.tar'}",
    f"docker-archive:{ARCHIVES / 'skopeo-docker.tar'}",
    f"docker-archive:{ARCHIVES / 'podman-multi.tar'}:tworefs:b",
], ids=["legacy", "legacy-gz", "docker25", "skopeo-docker", "podman-multi"])
def test_push_uncompressed_archives(proxy, repo, tmp_path, spec):
    _push_and_pull(spec, proxy, repo, tmp_path)
