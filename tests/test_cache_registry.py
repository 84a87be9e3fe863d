"""A poisoned blob cache against the real registry (behind nginx): every run either pushes a
correct image — skopeo pulls it back, every layer has its manifest size and decompresses
to its config's diff_id — or fails cleanly.  Never exit 0 with a broken image.

Each test fills the cache with a first push, damages the entries on disk the way a
careless tool, a shared CI cache or an attacker would, then pushes again twice: to the
same repository (the cache says "skip") and to another one (the cache says "mount").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import zstandard

from ocipush.cli import main
from tests.imagegen import LayerSpec, make_layout

pytestmark = pytest.mark.integration

ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """Two gzip layers of different sizes, so swapped entries name a blob that exists."""
    layers = [LayerSpec(400_000, "text"), LayerSpec(150_000, "text")]
    return make_layout(tmp_path_factory.mktemp("img"), layers, ref="v1")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """``$XDG_CACHE_HOME`` of this test; returns the directory that holds the entries."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "ocipush" / "blobs"


def run(image, destination: str, capsys) -> tuple[int, list[str]]:
    code = main([f"oci:{image.layout}", destination, "--compression-format", "zstd", "--retry-delay", "0.01"])
    return code, capsys.readouterr().err.strip().splitlines()


def entries(cache_dir: Path) -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted(cache_dir.glob("*.json"))}


def pulled_image_is_correct(host: str, repo: str, tag: str, tmp_path: Path) -> None:
    """skopeo copies the image back (verifying digests); each layer has the size its manifest
    says and decompresses to its config's diff_id."""
    from tests.services import skopeo_pull

    dest = skopeo_pull(f"{host}/{repo}:{tag}", tmp_path / f"pulled-{repo}-{tag}")
    index = json.loads((dest / "index.json").read_text())

    def blob(d: str) -> bytes:
        return (dest / "blobs" / "sha256" / d.split(":")[1]).read_bytes()

    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        data = blob(layer["digest"])
        assert layer["mediaType"] == ZSTD
        assert len(data) == layer["size"]
        tar = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id


def correct_or_clean_failure(proxy, repo: str, tag: str, code: int, err: list[str], tmp_path: Path) -> None:
    assert not any("Traceback" in line for line in err)
    if code == 0:
        pulled_image_is_correct(proxy.host, repo, tag, tmp_path)
    else:
        assert code in (3, 4) and err[-1].startswith("ocipush: "), err


def push_twice_after(poison, image, proxy, repo, cache_dir, tmp_path, capsys) -> list[str]:
    """First push fills the cache; ``poison(entries)`` damages it; then a push to the same
    repository and one to another.  Returns the notes of the later pushes."""
    code, _ = run(image, f"{proxy.host}/{repo}:v1", capsys)
    assert code == 0
    found = entries(cache_dir)
    assert len(found) == 2
    poison(found)
    notes = []
    for target, tag in ((repo, "v2"), (f"{repo}-other", "v1")):
        code, err = run(image, f"{proxy.host}/{target}:{tag}", capsys)
        correct_or_clean_failure(proxy, target, tag, code, err, tmp_path)
        notes += err
    return notes


def rewrite(path: Path, doc) -> None:
    path.write_text(json.dumps(doc))


def swap(found: dict[Path, dict]) -> None:
    (a, da), (b, db) = found.items()
    rewrite(a, db)
    rewrite(b, da)


def each(change):
    def poison(found: dict[Path, dict]) -> None:
        for path, doc in found.items():
            change(path, doc)

    return poison


def sealed_elsewhere(change, *, how: str = "another key"):
    """``change`` sealed without this user's key: with another one (a cache restored from
    another machine's or branch's CI run), or with a plain sha256 of the fields (a forger
    who can write the cache but not read ``$XDG_STATE_HOME``). Every such entry is a miss."""
    from ocipush.seal import document_sum as _seal

    def poison(found: dict[Path, dict]) -> None:
        change(found)
        for path in found:
            doc = {k: v for k, v in json.loads(path.read_text()).items() if k != "sum"}
            fields = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
            forged = _seal(doc, os.urandom(32)) if how == "another key" else hashlib.sha256(fields).hexdigest()
            rewrite(path, {**doc, "sum": forged})

    return poison


def field(name, value):
    return each(lambda path, doc: rewrite(path, {**doc, name: value(doc) if callable(value) else value}))


def other_blob(found: dict[Path, dict]) -> None:
    """Each entry names the other layer's output, size and all: a blob the registry has."""
    (a, da), (b, db) = found.items()
    rewrite(a, {**da, "digest": db["digest"], "size": db["size"]})
    rewrite(b, {**db, "digest": da["digest"], "size": da["size"]})


def sealed(change):
    """``change`` with the checksum recomputed: what a deliberate (or careful) editor writes.
    Only the key and the registry's HEAD stand between it and the push."""
    from ocipush.cache import BlobCache
    from ocipush.seal import document_sum as _seal

    def poison(found: dict[Path, dict]) -> None:
        change(found)
        for path in found:
            doc = {k: v for k, v in json.loads(path.read_text()).items() if k != "sum"}
            rewrite(path, {**doc, "sum": _seal(doc, BlobCache().key())})

    return poison


POISONS = {
    "untouched": lambda found: None,
    "swapped": swap,
    "size+1": field("size", lambda doc: doc["size"] + 1),
    "size-1": field("size", lambda doc: doc["size"] - 1),
    "size-negative": field("size", -1),
    "size-huge": field("size", 10**400),
    "size-string": field("size", lambda doc: str(doc["size"])),
    "size-float": field("size", lambda doc: doc["size"] + 0.5),
    "size-bool": field("size", True),
    "digest-other-blob": other_blob,
    "digest-random": field("digest", "sha256:" + "0" * 64),
    "digest-not-a-digest": field("digest", "sha256:zz"),
    "digest-number": field("digest", 5),
    "locations-numbers": field("locations", [1, None]),
    "locations-string": field("locations", "abc"),
    "locations-nested": field("locations", [["x"]]),
    "locations-hostile": field("locations", ["localhost:1/../../v2/x?y=z"]),
    "truncated": each(lambda path, doc: path.write_text(json.dumps(doc)[:40])),
    "random-bytes": each(lambda path, doc: path.write_bytes(os.urandom(300))),
    "empty": each(lambda path, doc: path.write_bytes(b"")),
    "a-list": each(lambda path, doc: rewrite(path, [doc])),
    "deep-nesting": each(lambda path, doc: path.write_text("[" * 100_000)),
    "diff-id-other": field("diff_id", "sha256:" + "3" * 64),
    "source-other": field("source", "sha256:" + "4" * 64),
    "sealed-size+1": sealed(field("size", lambda doc: doc["size"] + 1)),
    "sealed-size-1": sealed(field("size", lambda doc: doc["size"] - 1)),
    "sealed-digest-random": sealed(field("digest", "sha256:" + "0" * 64)),
    "sealed-diff-id-other": sealed(field("diff_id", "sha256:" + "3" * 64)),
    "sealed-elsewhere-other-blob": sealed_elsewhere(other_blob),
    "sealed-elsewhere-untouched": sealed_elsewhere(lambda found: None),
    "forged-checksum-other-blob": sealed_elsewhere(other_blob, how="sha256"),
}


@pytest.mark.parametrize("poison", POISONS.values(), ids=POISONS.keys())
def test_poisoned_cache_gives_a_correct_image_or_a_clean_error(poison, image, proxy, repo, cache_dir, tmp_path, capsys):
    push_twice_after(poison, image, proxy, repo, cache_dir, tmp_path, capsys)


def test_swapped_entries_are_noted_and_replaced(image, proxy, repo, cache_dir, tmp_path, capsys):
    notes = push_twice_after(swap, image, proxy, repo, cache_dir, tmp_path, capsys)
    assert any("blob cache" in line and "ignored" in line for line in notes), notes
    # The next push wrote correct entries again: a third push skips every layer.
    code, err = run(image, f"{proxy.host}/{repo}:v3", capsys)
    assert code == 0 and not any("blob cache" in line for line in err), err
    assert len([line for line in err if ": skipped as zstd" in line]) == 2, err


def test_group_writable_cache_directory_is_not_used(image, proxy, repo, cache_dir, tmp_path, capsys):
    def loosen(found):
        swap(found)
        cache_dir.chmod(0o775)

    notes = push_twice_after(loosen, image, proxy, repo, cache_dir, tmp_path, capsys)
    assert any(str(cache_dir) in line and "writable by others" in line for line in notes), notes


def test_group_writable_entry_is_not_used(image, proxy, repo, cache_dir, tmp_path, capsys):
    def loosen(found):
        swap(found)
        for path in found:
            path.chmod(0o666)

    notes = push_twice_after(loosen, image, proxy, repo, cache_dir, tmp_path, capsys)
    assert any("writable by others" in line for line in notes), notes


def test_entry_owned_by_someone_else_is_not_used(image, proxy, repo, cache_dir, tmp_path, capsys):
    if os.getuid() != 0:
        pytest.skip("only root can give a file away")  # CI runs as root; a user has no other uid to test

    def give_away(found):
        swap(found)
        for path in found:
            os.chown(path, 4242, 4242)

    notes = push_twice_after(give_away, image, proxy, repo, cache_dir, tmp_path, capsys)
    assert any("not owned by" in line for line in notes), notes


def test_cache_directory_is_created_private(image, proxy, repo, cache_dir, capsys):
    assert run(image, f"{proxy.host}/{repo}:v1", capsys)[0] == 0
    for directory in (cache_dir.parent, cache_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in cache_dir.iterdir())


def test_full_disk_costs_only_speed(image, proxy, repo, cache_dir, tmp_path, capsys, monkeypatch):
    import ocipush.seal

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ocipush.seal.os, "replace", full)
    code, err = run(image, f"{proxy.host}/{repo}:v1", capsys)
    assert code == 0, err
    pulled_image_is_correct(proxy.host, repo, "v1", tmp_path)
    notes = [line for line in err if "blob cache" in line]
    assert len(notes) == 1 and "No space left on device" in notes[0], err  # said once, not per layer
    assert list(cache_dir.iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize("error", [errno.EROFS, errno.EACCES, errno.EIO])
def test_unwritable_cache_costs_only_speed(image, proxy, repo, cache_dir, tmp_path, capsys, monkeypatch, error):
    """A read-only or broken cache directory (simulated: tests may run as root, who writes anyway)."""
    import ocipush.seal

    def refused(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(ocipush.seal.tempfile, "mkstemp", refused)
    code, err = run(image, f"{proxy.host}/{repo}:v1", capsys)
    assert code == 0, err
    pulled_image_is_correct(proxy.host, repo, "v1", tmp_path)
    assert [line for line in err if "blob cache" in line] == [
        f"blob cache: cannot write {cache_dir}: {os.strerror(error)}; "
        "the push goes on without it (only slower next time)"
    ]
