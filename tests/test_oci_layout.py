"""Reading OCI layouts: selection, verification and every malformed input we refuse."""

import json
import re
from pathlib import Path

import pytest

from ocipush.errors import BlobVerificationError, SourceError, UsageError
from ocipush.mediatypes import DOCKER_MANIFEST, OCI_MANIFEST
from ocipush.sources import load_image, open_source
from tests.imagegen import flip_byte, make_index_layout, make_layout, remove_blob, rewrite_manifest, truncate_blob

FIXTURES = Path(__file__).parent.parent / "fixtures" / "oci"


def test_single_fixture_reads_without_ref():
    image = load_image(open_source(f"oci:{FIXTURES / 'single'}"))
    assert not image.is_index
    assert len(image.blobs()) == 3  # config + 2 layers


def test_multiarch_fixture_walks_children_first():
    image = load_image(open_source(f"oci:{FIXTURES / 'multiarch'}:multi"))
    nodes = list(image.walk())
    assert nodes[-1] is image and image.is_index
    assert len(nodes) == 3
    assert {str(n.descriptor.platform) for n in nodes[:-1]} == {"linux/amd64", "linux/arm64"}


def test_nested_indexes(tmp_path):
    image = load_image(open_source(f"oci:{FIXTURES / 'nested'}"))
    assert image.is_index and any(n.is_index for n in image.children)


def test_selection_by_name_digest_and_position(tmp_path):
    a = make_layout(tmp_path, [100], ref="a", seed=1)
    b = make_layout(tmp_path, [100], ref="b", seed=2)
    assert str(open_source(f"oci:{tmp_path}:b").root().digest) == b.digest
    assert str(open_source(f"oci:{tmp_path}:@{a.digest}").root().digest) == a.digest
    assert str(open_source(f"oci:{tmp_path}:@1").root().digest) == b.digest


def test_several_images_without_ref_lists_them(tmp_path):
    make_layout(tmp_path, [100], ref="a", seed=1)
    make_layout(tmp_path, [100], ref="b", seed=2)
    with pytest.raises(SourceError, match=r"lists 2 images.*REF one of: a, b"):
        open_source(f"oci:{tmp_path}").root()


def test_unknown_ref_names_the_choices(tmp_path):
    make_layout(tmp_path, [100], ref="a")
    with pytest.raises(SourceError, match=r"no image 'nope'; choose one of: a"):
        open_source(f"oci:{tmp_path}:nope").root()
    with pytest.raises(SourceError, match="no image '@7'"):
        open_source(f"oci:{tmp_path}:@7").root()


def test_manifest_verified_while_read(tmp_path):
    info = make_layout(tmp_path, [5000])
    flip_byte(info.manifest)
    with pytest.raises(BlobVerificationError, match=f"blob {info.manifest.digest}.*does not match its digest"):
        load_image(open_source(f"oci:{tmp_path}"))


def _layout(tmp_path):
    return make_layout(tmp_path, [2000, 3000])


def _write(path, text):
    Path(path).write_text(text)


def _manifest_saying(info, media_type: str) -> None:
    """The manifest's own mediaType says ``media_type``; the index entry still says OCI manifest."""
    manifest = json.loads(info.manifest.path.read_bytes())
    rewrite_manifest(info, json.dumps({**manifest, "mediaType": media_type}).encode())


BAD_LAYOUTS = [
    ("no oci-layout", lambda i: (i.layout / "oci-layout").unlink(), r"oci-layout: missing"),
    ("bad version", lambda i: _write(i.layout / "oci-layout", '{"imageLayoutVersion":"2.0.0"}'),
     r"oci-layout: unsupported imageLayoutVersion '2.0.0'"),
    ("oci-layout not json", lambda i: _write(i.layout / "oci-layout", "{"), r"oci-layout: invalid JSON"),
    ("no index.json", lambda i: (i.layout / "index.json").unlink(), r"index.json: missing"),
    ("index.json not json", lambda i: _write(i.layout / "index.json", "nope"), r"index.json: invalid JSON"),
    ("index.json no list", lambda i: _write(i.layout / "index.json", '{"manifests":{}}'),
     r"index.json: not an image index"),
    ("index.json empty", lambda i: _write(i.layout / "index.json", '{"manifests":[]}'), r"index.json: lists no images"),
    ("index entry bad digest", lambda i: _write(i.layout / "index.json", json.dumps(
        {"manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:xyz", "size": 1}]})),
     r"index.json: malformed entry"),
    ("manifest missing", lambda i: remove_blob(i.manifest), r"missing from the layout"),
    ("layer missing", lambda i: remove_blob(i.layers[1]), r"blob {d}.*missing from the layout"),
    ("layer truncated", lambda i: truncate_blob(i.layers[0]), r"bytes on disk, descriptor says"),
    ("manifest invalid json", lambda i: rewrite_manifest(i, b"{not json"), r"invalid JSON"),
    ("manifest mediaType contradicts its descriptor", lambda i: _manifest_saying(i, DOCKER_MANIFEST),
     rf"blob sha256:\w+ \(.*\): mediaType '{re.escape(DOCKER_MANIFEST)}' differs "
     rf"from its descriptor's '{re.escape(OCI_MANIFEST)}'"),
]


@pytest.mark.parametrize("case, damage, message", BAD_LAYOUTS, ids=[c[0] for c in BAD_LAYOUTS])
def test_bad_layouts_give_one_line_errors(tmp_path, case, damage, message):
    info = _layout(tmp_path)
    damage(info)
    with pytest.raises(SourceError) as e:
        load_image(open_source(f"oci:{tmp_path}"))
    text = str(e.value)
    assert "\n" not in text
    assert re.search(message.replace("{d}", info.layers[1].digest), text), text


def test_symlink_outside_layout_refused(tmp_path):
    info = make_layout(tmp_path / "img", [1000])
    outside = tmp_path / "secret"
    outside.write_bytes(info.layers[0].path.read_bytes())
    info.layers[0].path.unlink()
    info.layers[0].path.symlink_to(outside)
    with pytest.raises(SourceError, match="link points outside the layout"):
        load_image(open_source(f"oci:{tmp_path / 'img'}"))


def test_symlink_inside_layout_is_fine(tmp_path):
    info = make_layout(tmp_path, [1000])
    copy = tmp_path / "blobs" / "layer-copy"
    info.layers[0].path.rename(copy)
    info.layers[0].path.symlink_to(copy)
    load_image(open_source(f"oci:{tmp_path}"))


def test_manifest_over_4mib_refused(tmp_path):
    info = _layout(tmp_path)
    doc = json.loads(info.manifest.path.read_bytes())
    doc["annotations"] = {"padding": "x" * (4 * 1024 * 1024)}
    rewrite_manifest(info, json.dumps(doc).encode())
    with pytest.raises(SourceError, match="over the 4194304-byte limit"):
        load_image(open_source(f"oci:{tmp_path}"))


def test_unknown_manifest_media_type(tmp_path):
    _layout(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    index["manifests"][0]["mediaType"] = "application/x-unknown"
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(SourceError, match="unsupported manifest media type 'application/x-unknown'"):
        load_image(open_source(f"oci:{tmp_path}"))


def test_index_child_missing(tmp_path):
    info = make_index_layout(tmp_path, [500])
    remove_blob(info.images[1].manifest)
    with pytest.raises(SourceError, match=f"blob {info.images[1].digest}.*missing"):
        load_image(open_source(f"oci:{tmp_path}"))


@pytest.mark.parametrize(
    "spec, message",
    [("oci", "unknown source transport"), ("foo:bar", "unknown source transport"),
     ("./layout", "unknown source transport"), ("oci:", "missing the layout path"),
     ("dir:", "missing the directory path")],
)
def test_bad_source_specs(spec, message):
    with pytest.raises(UsageError, match=message):
        open_source(spec)


def test_nonexistent_path():
    with pytest.raises(SourceError, match="/does/not/exist: no such directory"):
        open_source("oci:/does/not/exist").root()
