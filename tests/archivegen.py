"""Build image archives to the documented layouts of tools that cannot run here.

docker's engine and buildkit do not run in CI, so the archives they write (the
formats of prior-art §4) are assembled here member by member, with the names, order
and quirks those tools have:

==================  ==========================================================================
legacy_docker_save  docker ≤ 24 ``docker save`` (moby v24 image/tarexport/save.go): a
                    ``<v1id>/{VERSION,json,layer.tar}`` directory per layer, uncompressed;
                    a layer repeated at another depth is a symlink ``../<v1id>/layer.tar``;
                    ``<config-hex>.json``; ``manifest.json`` and ``repositories`` after them
                    (the daemon tars a directory, in name order)
docker25_save       docker ≥ 25, classic store: an OCI layout (uncompressed
                    ``application/vnd.oci.image.layer.v1.tar`` blobs, ``index.json`` with
                    containerd/OCI name annotations) that is also a docker archive
                    (``manifest.json`` with ``Layers: blobs/sha256/<diff_id>`` and a
                    ``LayerSources`` entry for every layer)
containerd_save     docker with the containerd store: blobs copied verbatim (a gzip and a
                    zstd layer), ``index.json`` → a multi-platform index whose arm64 image
                    and attestation are not in the archive; entries sorted by name
buildkit_oci        buildkit ``--output type=oci``: no manifest.json; an index of the image
                    and its attestation manifest (platform ``unknown/unknown``, an in-toto
                    layer)
buildkit_docker     buildkit ``--output type=docker``: Docker schema 2 media types, gzip
                    layers, ``manifest.json`` beside the OCI layout
==================  ==========================================================================

Each returns an ``Archive``: its members, which a test may edit to break it, and the
facts tests check against. ``Archive.write(path)`` writes the tar without the 10 KiB
record padding tarfile adds, so committed fixtures stay small; the same call always
gives the same bytes. ``python -m tests.archivegen DIR`` writes the committed set.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from ocipush.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
)
from tests.imagegen import CREATED, EPOCH

IN_TOTO = "application/vnd.in-toto+json"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass(frozen=True)
class Member:
    """A tar member: a file (``data``), a symlink, a hard link or a directory."""

    name: str
    data: bytes = b""
    symlink: str | None = None
    hardlink: str | None = None
    directory: bool = False

    def header(self) -> bytes:
        info = tarfile.TarInfo(self.name)
        info.mtime, info.mode = EPOCH, 0o644
        if self.directory:
            info.type, info.mode = tarfile.DIRTYPE, 0o755
        elif self.symlink is not None:
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, self.symlink, 0o777
        elif self.hardlink is not None:
            info.type, info.linkname = tarfile.LNKTYPE, self.hardlink
        else:
            info.size = len(self.data)
        return info.tobuf(tarfile.PAX_FORMAT)


def tar_bytes(members) -> bytes:
    """A tar of ``members`` in order, ended by the two zero blocks and nothing more."""
    out = io.BytesIO()
    for m in members:
        out.write(m.header())
        out.write(m.data)
        out.write(b"\0" * (-len(m.data) % tarfile.BLOCKSIZE))
    out.write(b"\0" * (2 * tarfile.BLOCKSIZE))
    return out.getvalue()


@dataclass(frozen=True)
class ImageFacts:
    """What a test can check an image read from an archive against."""

    repo_tags: tuple[str, ...]
    config: str  # digest of the config blob
    diff_ids: tuple[str, ...]
    layers: tuple[str, ...]  # digests of the layer files as stored (compressed or not)
    manifest: str | None  # the manifest the tool wrote; None when it wrote none (legacy)


@dataclass(frozen=True)
class Archive:
    members: tuple[Member, ...]
    images: tuple[ImageFacts, ...]
    root: str | None = None  # the index.json entry a reader pushes, where it is not an image's manifest
    absent: tuple[str, ...] = ()  # platforms the index lists whose blobs are not here

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(tar_bytes(self.members))
        return path

    def without(self, name: str) -> Archive:
        kept = tuple(m for m in self.members if m.name != name)
        assert len(kept) < len(self.members), f"no member {name}"
        return dataclasses.replace(self, members=kept)

    def replacing(self, member: Member) -> Archive:
        return dataclasses.replace(self, members=tuple(member if m.name == member.name else m for m in self.members))

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)


def stored_base(archive: Archive) -> str:
    """The member holding the shared base layer of a legacy save (which the symlink points to)."""
    return next(m.name for m in archive.members if m.name.endswith("layer.tar") and m.data and m.symlink is None
                and digest(m.data) == archive.images[0].diff_ids[0])


def symlink_member(archive: Archive) -> Member:
    """The first symlink member (a legacy save's repeated layer)."""
    return next(m for m in archive.members if m.symlink)


def edit_manifest_json(archive: Archive, edit: Callable[[list[dict[str, Any]]], object]) -> Archive:
    """The archive with its ``manifest.json`` parsed, changed in place by ``edit`` and written back."""
    doc = json.loads(archive.member("manifest.json").data)
    edit(doc)
    return archive.replacing(Member("manifest.json", json.dumps(doc).encode()))


# -- content ----------------------------------------------------------------------------


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(text: str) -> bytes:
    """A tiny uncompressed layer: one file saying ``text``."""
    return tar_bytes([Member("etc/", directory=True), Member(f"etc/{text.split()[0]}.txt", f"{text}\n".encode())])


def config(diff_ids, architecture: str = "amd64", os: str = "linux") -> bytes:
    return _json({
        "architecture": architecture,
        "os": os,
        "created": CREATED,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": CREATED, "created_by": f"layer {i}"} for i in range(len(diff_ids))],
    })


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def zstded(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(data)


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": digest(data), "size": len(data), **extra}


def manifest(media_type: str, config_type: str, config_data: bytes, layers: list[dict]) -> bytes:
    return _json({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(config_type, config_data),
        "layers": layers,
    })


def _json(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _blob(data: bytes) -> Member:
    return Member(f"blobs/sha256/{digest(data)[7:]}", data)


def _layout(blobs: list[bytes], index_entries: list[dict], manifest_json: list[dict] | None) -> tuple[Member, ...]:
    """An OCI layout's members sorted by name, as containerd's exporter and docker write them."""
    members = [Member("blobs/", directory=True), Member("blobs/sha256/", directory=True)]
    members += {m.name: m for m in map(_blob, blobs)}.values()
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries}
    members.append(Member("index.json", _json(index)))
    if manifest_json is not None:
        members.append(Member("manifest.json", _json(manifest_json)))
    members.append(Member("oci-layout", OCI_LAYOUT))
    return tuple(sorted(members, key=lambda m: m.name))


def _names(name: str, tag: str) -> dict:
    """index.json annotations naming an image, as containerd and docker write them."""
    return {"io.containerd.image.name": f"docker.io/library/{name}:{tag}", "org.opencontainers.image.ref.name": tag}


# -- formats ----------------------------------------------------------------------------


def legacy_docker_save(*, foreign: bool = False) -> Archive:
    """Two images sharing a base layer; the first repeats its base layer on top, which
    docker stores as a symlink. ``foreign=True``: the first image's middle layer is a
    foreign layer (``LayerSources`` with URLs), left out of the archive."""
    base, app, extra = layer("base layer"), layer("app layer"), layer("extra layer")
    specs = [(("legacy:v1", "example.com/team/legacy:v1"), [base, app, base]), (("other:v2",), [base, extra])]
    members: dict[str, Member] = {}
    saved: dict[str, str] = {}  # diff_id → the layer.tar holding it
    entries, images, repositories = [], [], {}
    for tags, layers in specs:
        diff_ids = [digest(data) for data in layers]
        cfg = config(diff_ids)
        paths, chain, parent = [], "", ""
        sources = {}
        for i, data in enumerate(layers):
            chain = diff_ids[i] if i == 0 else digest(f"{chain} {diff_ids[i]}".encode())
            v1id = hashlib.sha256(f"v1 {chain}".encode()).hexdigest()
            path = f"{v1id}/layer.tar"
            paths.append(path)
            if foreign and len(entries) == 0 and i == 1:
                compressed = gzipped(data)
                sources[diff_ids[i]] = descriptor(DOCKER_FOREIGN_LAYER, compressed, urls=["https://example.com/app.tar.gz"])
            elif diff_ids[i] in saved and saved[diff_ids[i]] != path:
                members[path] = Member(path, symlink=f"../{saved[diff_ids[i]]}")
            else:
                members[path] = Member(path, data)
                saved.setdefault(diff_ids[i], path)
            members[f"{v1id}"] = Member(f"{v1id}/", directory=True)
            members[f"{v1id}/VERSION"] = Member(f"{v1id}/VERSION", b"1.0")
            v1 = {"id": v1id, "created": CREATED, **({"parent": parent} if parent else {})}
            members[f"{v1id}/json"] = Member(f"{v1id}/json", _json(v1))
            parent = v1id
        members[f"{digest(cfg)[7:]}.json"] = Member(f"{digest(cfg)[7:]}.json", cfg)
        entry = {"Config": f"{digest(cfg)[7:]}.json", "RepoTags": list(tags), "Layers": paths}
        if sources:
            entry["LayerSources"] = sources
        entries.append(entry)
        for tag in tags:
            repo, _, t = tag.rpartition(":")
            repositories.setdefault(repo, {})[t] = parent
        stored = [sources[d]["digest"] if d in sources else d for d in diff_ids]
        images.append(ImageFacts(tags, digest(cfg), tuple(diff_ids), tuple(stored), None))
    members["manifest.json"] = Member("manifest.json", _json(entries))
    members["repositories"] = Member("repositories", _json(repositories))
    return Archive(tuple(sorted(members.values(), key=lambda m: m.name)), tuple(images))


def docker25_save() -> Archive:
    layers = [layer("hybrid base"), layer("hybrid app")]
    diff_ids = [digest(data) for data in layers]
    cfg = config(diff_ids)
    descs = [descriptor(OCI_LAYER, data) for data in layers]
    man = manifest(OCI_MANIFEST, OCI_CONFIG, cfg, descs)
    entry = {**_entry(cfg, "hybrid:v1", layers), "LayerSources": {d["digest"]: d for d in descs}}  # none foreign
    members = _layout([cfg, *layers, man], [descriptor(OCI_MANIFEST, man, annotations=_names("hybrid", "v1"))], [entry])
    members += (Member("repositories", _json({"hybrid": {"v1": digest(cfg)[7:]}})),)
    image = ImageFacts(("hybrid:v1",), digest(cfg), tuple(diff_ids), tuple(diff_ids), digest(man))
    return Archive(members, (image,))


def containerd_save() -> Archive:
    cfg, blobs, man, facts = _image("multi", (gzipped, zstded), OCI_MANIFEST, OCI_CONFIG,
                                    (OCI_LAYER_GZIP, OCI_LAYER_ZSTD))
    # The other platform and the attestation were never pulled: only their descriptors exist.
    arm64 = manifest(OCI_MANIFEST, OCI_CONFIG, config(facts.diff_ids, "arm64"), [descriptor(OCI_LAYER_GZIP, blobs[0])])
    index = _index(_platform(man, "amd64"), _platform(arm64, "arm64"), _attestation_entry(_attestation(man)[0], man))
    members = _layout([cfg, *blobs, man, index], [descriptor(OCI_INDEX, index, annotations=_names("multi", "v1"))],
                      [_entry(cfg, "multi:v1", blobs)])
    facts = dataclasses.replace(facts, repo_tags=("multi:v1",))
    return Archive(members, (facts,), absent=("linux/arm64", "unknown/unknown"))


def buildkit_oci() -> Archive:
    cfg, blobs, man, facts = _image("buildkit", (gzipped, gzipped), OCI_MANIFEST, OCI_CONFIG, (OCI_LAYER_GZIP,) * 2)
    attestation, att_config, statement = _attestation(man)
    index = _index(_platform(man, "amd64"), _attestation_entry(attestation, man))
    members = _layout([cfg, *blobs, man, attestation, att_config, statement, index],
                      [descriptor(OCI_INDEX, index, annotations=_names("bk", "latest"))], None)
    return Archive(members, (facts,), root=digest(index))


def buildkit_docker() -> Archive:
    cfg, blobs, man, facts = _image("docker", (gzipped, gzipped), DOCKER_MANIFEST, DOCKER_CONFIG, (DOCKER_LAYER,) * 2)
    members = _layout([cfg, *blobs, man], [descriptor(DOCKER_MANIFEST, man, annotations=_names("bkd", "latest"))],
                      [_entry(cfg, "bkd:latest", blobs)])
    return Archive(members, (dataclasses.replace(facts, repo_tags=("bkd:latest",)),))


def _image(word: str, compressors, manifest_type: str, config_type: str, layer_types):
    """A two-layer linux/amd64 image, its layers compressed by ``compressors``: its config,
    layer blobs, manifest, and the facts about it."""
    tars = [layer(f"{word} base"), layer(f"{word} app")]
    blobs = [compress(t) for compress, t in zip(compressors, tars, strict=True)]
    diff_ids = tuple(digest(t) for t in tars)
    cfg = config(diff_ids)
    man = manifest(manifest_type, config_type, cfg, [descriptor(t, b) for t, b in zip(layer_types, blobs, strict=True)])
    return cfg, blobs, man, ImageFacts((), digest(cfg), diff_ids, tuple(digest(b) for b in blobs), digest(man))


def _entry(cfg: bytes, tag: str, layers: list[bytes]) -> dict:
    """A manifest.json entry of an archive that is also an OCI layout."""
    return {"Config": f"blobs/sha256/{digest(cfg)[7:]}", "RepoTags": [tag],
            "Layers": [f"blobs/sha256/{digest(b)[7:]}" for b in layers]}


def _index(*entries: dict) -> bytes:
    return _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(entries)})


def _platform(man: bytes, architecture: str) -> dict:
    return descriptor(OCI_MANIFEST, man, platform={"architecture": architecture, "os": "linux"})


def _attestation_entry(attestation: bytes, subject: bytes) -> dict:
    return descriptor(OCI_MANIFEST, attestation, platform={"architecture": "unknown", "os": "unknown"},
                      annotations={"vnd.docker.reference.digest": digest(subject),
                                   "vnd.docker.reference.type": "attestation-manifest"})


def _attestation(subject: bytes) -> tuple[bytes, bytes, bytes]:
    """buildkit's provenance attestation for the image manifest ``subject``: the
    manifest, its config, its in-toto statement."""
    statement = _json({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "pkg:docker/bk@latest", "digest": {"sha256": digest(subject)[7:]}}],
        "predicate": {"builder": {"id": ""}, "buildType": "https://mobyproject.org/buildkit@v1"},
    })
    att_config = _json({"architecture": "unknown", "os": "unknown", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": [digest(statement)]}})
    layers = [descriptor(IN_TOTO, statement, annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"})]
    return manifest(OCI_MANIFEST, OCI_CONFIG, att_config, layers), att_config, statement


GENERATED = {
    "docker-legacy.tar": legacy_docker_save,
    "docker25.tar": docker25_save,
    "containerd.tar": containerd_save,
    "buildkit-oci.tar": buildkit_oci,
    "buildkit-docker.tar": buildkit_docker,
}


def main(out: str) -> None:
    for name, build in GENERATED.items():
        build().write(Path(out) / name)


if __name__ == "__main__":
    main(sys.argv[1])
