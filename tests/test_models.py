"""models.py: the one JSON parser (load_json), image configs, and the --json summary's shape."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ocipush.cli import main
from ocipush.digest import Digest
from ocipush.models import (
    BlobSummary,
    DockerImageEntry,
    PushSummary,
    converter,
    load_json,
    parse_image_config,
    strict,
)
from tests.imagegen import ImageInfo, make_layout

D1 = "sha256:" + "1" * 64


@pytest.mark.parametrize("data, reason", [
    (b"{", "invalid JSON: Expecting property name"),
    (b"\xff", "invalid JSON: 'utf-8' codec can't decode"),
    (b"[" * 100_000, "invalid JSON: nested too deeply"),
    (b"[" + b"1" * 5000 + b"]", "invalid JSON: Exceeds the limit (4300 digits)"),
    (b" " * 200_001, "larger than 200000 bytes"),
])
def test_load_json_fails_in_one_line_naming_the_document(data, reason):
    with pytest.raises(ValueError) as e:
        load_json(data, "img/index.json", limit=200_000)
    assert str(e.value).startswith(f"img/index.json: {reason}") and "\n" not in str(e.value)


def test_load_json_raises_the_callers_error():
    class Refused(Exception):
        pass

    with pytest.raises(Refused, match=r"^invalid JSON: NaN is not JSON$"):
        load_json(b"[NaN]", error=Refused, allow_nan=False)
    assert load_json(b"[1]", allow_nan=False) == [1]


@pytest.mark.parametrize("doc, message", [
    ({}, "cfg: not an image config (no rootfs.diff_ids)"),
    ({"rootfs": []}, "cfg: not an image config (no rootfs.diff_ids)"),
    ({"rootfs": {"diff_ids": D1}}, "cfg: rootfs.diff_ids: expected a list, got str"),
    ({"rootfs": {"diff_ids": [5]}}, "cfg: rootfs.diff_ids: expected str, got int"),
    ({"rootfs": {"diff_ids": ["sha256:x"]}}, "cfg: rootfs.diff_ids: malformed sha256 digest: 'sha256:x'"),
])
def test_image_config_without_usable_diff_ids(doc, message):
    with pytest.raises(ValueError) as e:
        parse_image_config(json.dumps(doc).encode(), "cfg")
    assert str(e.value) == message


def test_image_config_diff_ids():
    config = parse_image_config(json.dumps({"rootfs": {"type": "layers", "diff_ids": [D1]}}).encode(), "cfg")
    assert config.diff_ids == (Digest.parse(D1),)


def test_docker_entry_takes_no_number_for_a_name():
    """The strict converter: cattrs' default would make "5" of 5 and a tuple of a string's letters."""
    for bad in ({"Config": 5, "Layers": []}, {"Config": "c.json", "Layers": "l.tar"}):
        with pytest.raises(Exception, match="While structuring DockerImageEntry"):
            strict.structure(bad, DockerImageEntry)
    entry = strict.structure({"Config": "c.json", "Layers": ["l.tar"], "RepoTags": None}, DockerImageEntry)
    assert entry == DockerImageEntry("c.json", ("l.tar",))


def test_summary_keys_and_order():
    """``--json`` is read by CI scripts: these keys, in this order."""
    blob = BlobSummary(Digest.parse(D1), 3, "m", "uploaded", Digest.parse(D1), 3, 2, 0)
    doc = converter.unstructure(PushSummary("r", None, False, 1.25, (blob,)))
    # New keys go at the end: a script reading the old ones by position still works.
    assert list(doc) == ["reference", "digest", "dry_run", "seconds", "blobs", "chunk_size_learnt", "notes"]
    assert doc["digest"] is None
    assert list(doc["blobs"][0]) == ["digest", "size", "media_type", "action", "pushed_digest", "pushed_size",
                                     "requests", "retries", "requests_by_method", "restarts", "refused",
                                     "pushed_media_type", "resumed_at",
                                     "compression"]
    assert doc["blobs"][0]["digest"] == D1


def _replace_config(info: ImageInfo, data: bytes) -> None:
    """A new config blob, honestly described by a new manifest and index, so its content is what fails."""
    blobs = info.layout / "blobs" / "sha256"
    config_digest = hashlib.sha256(data).hexdigest()
    (blobs / config_digest).write_bytes(data)
    manifest = json.loads(info.manifest.path.read_bytes())
    manifest["config"].update(digest=f"sha256:{config_digest}", size=len(data))
    manifest_bytes = json.dumps(manifest).encode()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    (blobs / manifest_digest).write_bytes(manifest_bytes)
    index = json.loads((info.layout / "index.json").read_bytes())
    index["manifests"][0].update(digest=f"sha256:{manifest_digest}", size=len(manifest_bytes))
    (info.layout / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("config, message", [
    (b'{"rootfs": {}}', "not an image config (no rootfs.diff_ids)"),
    (b'{"rootfs": {"diff_ids": ["sha256:x"]}}', "rootfs.diff_ids: malformed sha256 digest: 'sha256:x'"),
    (b"[" + b"1" * 5000 + b"]", "invalid JSON: Exceeds the limit"),
])
def test_push_reads_configs_through_the_one_model(tmp_path: Path, config, message, capsys):
    """push.py and the docker archive reader word a config without diff_ids alike."""
    info = make_layout(tmp_path / "img", [1000])
    _replace_config(info, config)
    assert main([f"oci:{info.layout}", f"oci:{tmp_path / 'out'}:v1"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "blob sha256:" in err, err
