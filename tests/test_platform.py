"""--platform OS/ARCH[/VARIANT]: only the matching images of an index are pushed (select.py).

Pushed to the real registry behind nginx and read back with skopeo inspect --raw: one
platform pushes that manifest itself, several a new index of just those.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.cli import main
from ocipush.errors import UsageError
from ocipush.models import Platform
from ocipush.push import PushOptions, push
from ocipush.select import normalise, parse_platform
from tests.helpers import registry_manifest
from tests.imagegen import make_index_layout, make_layout, rewrite_manifest
from tests.services import skopeo_copy, skopeo_inspect

FIXTURES = Path(__file__).parent.parent / "fixtures" / "oci"
ARCHIVES = Path(__file__).parent.parent / "fixtures" / "archives"
MULTIARCH = f"oci:{FIXTURES / 'multiarch'}:multi"
AMD64 = "sha256:67f17e95020015912d5a88bb3b98ae412b6734b483fd1d1dd6c54356e4d6859d"
ARM64 = "sha256:17e674791b4f54548a58ec2b4ca28491796903f2657f1eb411589617284f6c2d"
MULTIARCH_INDEX = "sha256:dfce42bb0566c5229e7a47f53b924b4d4f98cd28ddb49a75a8e28dee43153372"


def three_platforms(tmp_path: Path):
    return make_index_layout(tmp_path / "three", [300, 200],
                             platforms=(("linux", "amd64"), ("linux", "arm64", "v8"), ("linux", "arm", "v7")))


@pytest.mark.parametrize("wanted", ["linux/arm64", "linux/arm64/v8", "LINUX/aarch64"])
def test_one_platform_pushes_that_manifest_itself(proxy, repo, wanted, capsys):
    assert main([MULTIARCH, f"{proxy.host}/{repo}:v1", "--platform", wanted, "-q"]) == 0
    assert capsys.readouterr().out.strip() == f"{proxy.host}/{repo}@{ARM64}"
    raw = skopeo_inspect(f"{proxy.host}/{repo}:v1", raw=True)
    assert "config" in raw and "manifests" not in raw  # an image manifest, not an index
    assert skopeo_inspect(f"{proxy.host}/{repo}:v1")["Architecture"] == "arm64"
    # Only the chosen image's blobs went: the other platform's layers are not there.
    other = json.loads((FIXTURES / "multiarch" / "blobs" / "sha256" / AMD64[7:]).read_bytes())
    assert registry_manifest(proxy.host, repo, AMD64).status_code == 404
    config = other["config"]["digest"]
    assert registry_manifest(proxy.host, repo, config).status_code == 404


def test_several_platforms_push_a_new_index_of_just_those(proxy, repo, tmp_path):
    info = three_platforms(tmp_path)
    wanted = ("linux/arm/v7", "linux/amd64")
    result = push(f"oci:{info.layout}:multi", f"{proxy.host}/{repo}:v1", PushOptions(platforms=wanted))
    raw = skopeo_inspect(f"{proxy.host}/{repo}:v1", raw=True)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json"
    source = json.loads(info.index.path.read_bytes())
    # The source's entries, as written and in the source's order; arm64 left out.
    assert raw["manifests"] == [source["manifests"][0], source["manifests"][2]]
    assert str(result.digest) != info.digest
    # The same selection gives the same bytes: a second push names the same digest.
    again = push(f"oci:{info.layout}:multi", f"{proxy.host}/{repo}:v2", PushOptions(platforms=wanted[::-1]))
    assert again.digest == result.digest
    # skopeo pulls every image of the new index, verifying each digest.
    copied = skopeo_copy(f"docker://{proxy.host}/{repo}:v1", f"oci:{tmp_path / 'pulled'}:x", "--all")
    assert copied.returncode == 0, copied.stderr


def test_no_match_lists_what_the_index_holds_and_pushes_nothing(proxy, repo, capsys):
    assert main([MULTIARCH, f"{proxy.host}/{repo}:v1", "--platform", "linux/s390x"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("ocipush: --platform linux/s390x: no image of that platform in the source; "
                           "it holds linux/amd64, linux/arm64")
    assert registry_manifest(proxy.host, repo, "v1").status_code == 404


def test_every_platform_must_match(tmp_path, capsys):
    info = three_platforms(tmp_path)
    argv = [f"oci:{info.layout}:multi", f"oci:{tmp_path / 'out'}", "--platform", "linux/amd64",
            "--platform", "linux/arm/v6"]
    assert main(argv) == 2
    assert "--platform linux/arm/v6: no image of that platform in the source; it holds " \
           "linux/amd64, linux/arm64/v8, linux/arm/v7" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_all_platforms_chosen_keep_the_source_index(tmp_path):
    info = three_platforms(tmp_path)
    options = PushOptions(platforms=("linux/amd64", "linux/arm64", "linux/arm"))
    assert str(push(f"oci:{info.layout}:multi", f"oci:{tmp_path / 'out'}", options).digest) == info.digest


def test_several_platforms_keep_the_attestations_of_those_chosen(tmp_path):
    """buildkit links an attestation manifest (platform unknown/unknown) to its image by
    the entry annotation vnd.docker.reference.digest: it goes where its image goes."""
    info = three_platforms(tmp_path)
    att = make_layout(info.layout, [50], ref="att", platform=("unknown", "unknown"), seed="att")
    index = json.loads(info.index.path.read_bytes())
    amd64 = index["manifests"][0]["digest"]
    index["manifests"].append({**att.manifest.descriptor(), "platform": {"architecture": "unknown", "os": "unknown"},
                               "annotations": {"vnd.docker.reference.digest": amd64,
                                               "vnd.docker.reference.type": "attestation-manifest"}})
    rewrite_manifest(info, json.dumps(index).encode())
    source = f"oci:{info.layout}:multi"
    kept = push(source, f"oci:{tmp_path / 'a'}:x", PushOptions(platforms=("linux/amd64", "linux/arm")))
    chosen = skopeo_inspect(f"oci:{tmp_path / 'a'}:x", raw=True)["manifests"]
    assert [m["digest"] for m in chosen] == [amd64, index["manifests"][2]["digest"], att.digest]
    assert att.config.digest in {str(b.source.digest) for b in kept.blobs}
    without = push(source, f"oci:{tmp_path / 'b'}:x", PushOptions(platforms=("linux/arm64", "linux/arm")))
    assert att.config.digest not in {str(b.source.digest) for b in without.blobs}
    with pytest.raises(UsageError, match=r"it holds linux/amd64, linux/arm64/v8, linux/arm/v7$"):
        push(source, f"oci:{tmp_path / 'c'}:x", PushOptions(platforms=("unknown/s390x",)))


def test_nested_indexes_are_looked_through(tmp_path):
    out = tmp_path / "out"
    result = push(f"oci:{FIXTURES / 'nested'}:nested", f"oci:{out}:x", PushOptions(platforms=("linux/amd64",)))
    assert str(result.digest) == AMD64
    raw = skopeo_inspect(f"oci:{out}:x", raw=True)
    assert "config" in raw and "manifests" not in raw


def test_a_single_image_source_is_checked_against_its_config(tmp_path, capsys):
    info = make_layout(tmp_path / "img", [100], platform=("linux", "arm64"))
    ok = push(f"oci:{info.layout}", f"oci:{tmp_path / 'a'}", PushOptions(platforms=("linux/arm64/v8",)))
    assert str(ok.digest) == info.digest
    assert main([f"oci:{info.layout}", f"oci:{tmp_path / 'b'}", "--platform", "linux/amd64"]) == 2
    assert capsys.readouterr().err.strip() == (
        "ocipush: --platform linux/amd64: the source is a single image of linux/arm64, not linux/amd64")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("source, wanted, code", [
    (f"docker-archive:{ARCHIVES / 'docker-legacy.tar'}:legacy:v1", "linux/amd64", 0),
    (f"docker-archive:{ARCHIVES / 'docker-legacy.tar'}:legacy:v1", "linux/arm64", 2),
    (f"oci-archive:{ARCHIVES / 'buildkit-oci.tar'}", "linux/amd64", 0),
    (f"oci-archive:{ARCHIVES / 'buildkit-oci.tar'}", "windows/amd64", 2),
])
def test_every_source(tmp_path, source, wanted, code):
    assert main([source, f"oci:{tmp_path / 'out'}:x", "--platform", wanted, "-q"]) == code


def test_buildkit_attestation_is_left_out_with_one_platform(tmp_path):
    out = tmp_path / "out"
    source = f"oci-archive:{ARCHIVES / 'buildkit-oci.tar'}"
    result = push(source, f"oci:{out}:x", PushOptions(platforms=("linux/amd64",)))
    assert str(result.digest) == "sha256:932a553b7a7a1227940a6f2eca5ed49b34f060b20589620876258728119d1289"
    assert len(result.blobs) == 3  # config and two layers; not the attestation's


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/amd64/v8/x", "linux/amd 64", "linux/amd64\n", ""])
def test_bad_platform_is_a_usage_error(text):
    with pytest.raises(UsageError, match="expected OS/ARCH"):
        parse_platform(text)


@pytest.mark.parametrize("a, b", [
    ("linux/arm64", "linux/arm64/v8"),
    ("linux/aarch64", "linux/arm64"),
    ("linux/x86_64", "linux/amd64"),
    ("linux/armhf", "linux/arm/v7"),
    ("linux/arm", "linux/arm/7"),
    ("linux/i386", "linux/386"),
])
def test_names_of_one_platform_normalise_alike(a, b):
    assert normalise(parse_platform(a)) == normalise(parse_platform(b))


@given(st.sampled_from(["linux", "windows"]), st.sampled_from(["amd64", "arm64", "arm", "386", "riscv64"]),
       st.sampled_from([None, "v5", "v6", "v7", "v8"]))
def test_normalise_is_idempotent(os_name, arch, variant):
    once = normalise(Platform(architecture=arch, os=os_name, variant=variant))
    assert normalise(once) == once
