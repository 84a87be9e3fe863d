"""End-to-end pushes to the real distribution registry, through a real body-limited
nginx, pulled back and verified by skopeo."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ocipush.cli import main
from tests.helpers import registry_manifest
from tests.imagegen import LayerSpec, flip_byte, make_index_layout, make_layout
from tests.services import skopeo_copy, skopeo_pull

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).parent.parent / "fixtures" / "oci"

def assert_pushed(host: str, repo: str, tag: str, digest: str, tmp_path: Path, *, all_platforms=False):
    """The tag serves the source's exact manifest, and skopeo pulls it back verifying every blob."""
    response = registry_manifest(host, repo, tag)
    assert response.status_code == 200, response.text
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    dest = tmp_path / "pulled"
    if all_platforms:
        result = skopeo_copy(f"docker://{host}/{repo}:{tag}", f"oci:{dest}:pulled", "--all")
        assert result.returncode == 0, result.stderr
    else:
        skopeo_pull(f"{host}/{repo}:{tag}", dest)


def ocipush(*args: str, capsys=None) -> int:
    return main([*args, "--jobs", "2"])


def test_skopeo_fails_through_the_limit_and_ocipush_succeeds(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [LayerSpec(20_000_000), 3000], ref="v1")
    # The limit is real: skopeo sends the 20 MB layer in one PATCH and gets 413.
    refused = skopeo_copy(f"oci:{info.layout}:v1", f"docker://{proxy.host}/{repo}-skopeo:v1")
    assert refused.returncode != 0 and "413" in refused.stderr

    mark = proxy.mark()
    assert ocipush(f"oci:{info.layout}:v1", f"{proxy.host}/{repo}:v1") == 0
    out = capsys.readouterr().out.strip()
    assert out == f"{proxy.host}/{repo}@{info.digest}"

    patches = [r for r in proxy.requests(mark) if r.method == "PATCH"]
    big = [r for r in patches if r.body_length == 8_000_000]
    assert len(big) == 2 and all(r.status == 202 for r in patches)  # 8 + 8 + ~4 MB
    assert all(r.body_length <= 8_000_000 for r in patches)
    assert_pushed(proxy.host, repo, "v1", info.digest, tmp_path)


def test_repush_uploads_nothing(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [LayerSpec(9_000_000), 100], ref="v1")
    assert ocipush(f"oci:{info.layout}", f"{proxy.host}/{repo}:v1") == 0
    mark = proxy.mark()
    assert ocipush(f"oci:{info.layout}", f"{proxy.host}/{repo}:v2") == 0
    methods = [r.method for r in proxy.requests(mark)]
    assert "PATCH" not in methods and "POST" not in methods
    assert methods.count("HEAD") == 3  # config + 2 layers
    assert "skipped" in capsys.readouterr().err
    assert_pushed(proxy.host, repo, "v2", info.digest, tmp_path)


@pytest.mark.parametrize("fixture, ref", [("single", "v1"), ("zstd", "v1"), ("tworefs", "b")])
def test_fixtures_made_by_real_tools(proxy, repo, tmp_path, fixture, ref):
    layout = FIXTURES / fixture
    index = json.loads((layout / "index.json").read_text())
    digest = next(
        m["digest"]
        for m in index["manifests"]
        if m["annotations"]["org.opencontainers.image.ref.name"] == ref
    )
    assert ocipush(f"oci:{layout}:{ref}", f"{proxy.host}/{repo}:{ref}") == 0
    assert_pushed(proxy.host, repo, ref, digest, tmp_path)


def test_multi_platform_index(proxy, repo, tmp_path):
    info = make_index_layout(tmp_path / "img", [LayerSpec(10_000_000), 500])
    mark = proxy.mark()
    assert ocipush(f"oci:{info.layout}:multi", f"{proxy.host}/{repo}:multi") == 0
    puts = [r for r in proxy.requests(mark) if r.method == "PUT" and "/manifests/" in r.path]
    # Children by digest first, the index under its tag last.
    assert [p.path.rsplit("/", 1)[1] for p in puts] == [i.digest for i in info.images] + ["multi"]
    assert_pushed(proxy.host, repo, "multi", info.digest, tmp_path, all_platforms=True)


def test_nested_index_fixture(proxy, repo, tmp_path):
    layout = FIXTURES / "nested"
    digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    assert ocipush(f"oci:{layout}", f"{proxy.host}/{repo}:nested") == 0
    response = registry_manifest(proxy.host, repo, "nested")
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    # skopeo cannot copy an index of indexes; pull the inner index it names instead.
    inner = json.loads(response.content)["manifests"][0]["digest"]
    result = skopeo_copy(f"docker://{proxy.host}/{repo}@{inner}", f"oci:{tmp_path / 'p'}:x", "--all")
    assert result.returncode == 0, result.stderr


def test_push_by_digest(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [1000])
    assert ocipush(f"oci:{info.layout}", f"{proxy.host}/{repo}@{info.digest}") == 0
    assert registry_manifest(proxy.host, repo, info.digest).status_code == 200


def test_digest_destination_must_match(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [1000])
    other = "sha256:" + "0" * 64
    assert ocipush(f"oci:{info.layout}", f"{proxy.host}/{repo}@{other}") == 2
    assert f"the source image is {info.digest}" in capsys.readouterr().err


def test_corrupt_layer_fails_before_commit_and_tags_nothing(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [LayerSpec(12_000_000)], ref="v1")
    flip_byte(info.layers[0], offset=11_000_000)  # in the last chunk: two chunks get sent first
    mark = proxy.mark()
    assert ocipush(f"oci:{info.layout}", f"{proxy.host}/{repo}:v1") == 3
    err = capsys.readouterr().err
    assert f"blob {info.layers[0].digest}" in err and "does not match its digest" in err
    requests = proxy.requests(mark)
    # No final PUT of the layer, no manifest; the half-done upload is cancelled.
    assert not [r for r in requests if r.method == "PUT" and info.layers[0].digest in r.query]
    assert not [r for r in requests if "/manifests/" in r.path]
    assert [r for r in requests if r.method == "DELETE"]
    assert registry_manifest(proxy.host, repo, "v1").status_code == 404
    assert httpx.head(f"http://{proxy.host}/v2/{repo}/blobs/{info.layers[0].digest}").status_code == 404


def test_unadvertised_limit_halves_the_chunk_size(make_proxy, repo, tmp_path, capsys):
    bare = make_proxy(headers=None)  # an 8m limit but no OCI-Chunk-* headers: one PATCH per blob first
    info = make_layout(tmp_path / "img", [LayerSpec(10_000_000), LayerSpec(9_000_000)])
    mark = bare.mark()
    assert ocipush(f"oci:{info.layout}", f"{bare.host}/{repo}:v1") == 0
    err = capsys.readouterr().err
    assert err.count("(413)") == 1, err  # said once, kept for the rest of the push
    patches = [r for r in bare.requests(mark) if r.method == "PATCH"]
    refused = [r for r in patches if r.status == 413]
    assert 1 <= len(refused) <= 2  # both big layers may have started before the first 413
    assert all(r.body_length <= 5_100_000 for r in patches if r.status == 202), patches  # half a layer
    assert_pushed(bare.host, repo, "v1", info.digest, tmp_path)


def test_limit_below_the_registry_minimum_fails_clearly_and_tags_nothing(make_proxy, repo, tmp_path, capsys):
    # The registry asks for chunks of at least 6 MB but a proxy refuses bodies over 4 MB.
    tight = make_proxy(client_max_body_size="4m", headers={"OCI-Chunk-Min-Length": "6000000"})
    info = make_layout(tmp_path / "img", [LayerSpec(13_000_000)])
    assert ocipush(f"oci:{info.layout}", f"{tight.host}/{repo}:v1") == 4
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ocipush: ") and "413" in err and "cannot be smaller" in err
    assert registry_manifest(tight.host, repo, "v1").status_code == 404


def test_cli_as_a_process(proxy, repo, tmp_path):
    info = make_layout(tmp_path / "img", [2000])
    digestfile = tmp_path / "digest"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ocipush",
            f"oci:{info.layout}",
            f"docker://{proxy.host}/{repo}:t",
            "--digestfile",
            str(digestfile),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{proxy.host}/{repo}@{info.digest}\n"
    assert result.stderr == ""
    assert digestfile.read_text() == info.digest


def test_unreachable_registry(tmp_path, capsys):
    from tests.services import free_port

    info = make_layout(tmp_path / "img", [100])
    host = f"127.0.0.1:{free_port()}"
    assert ocipush(f"oci:{info.layout}", f"{host}/x:y") == 4
    err = capsys.readouterr().err
    assert err.startswith(f"ocipush: cannot reach registry {host}") and err.count("\n") == 1


def test_dry_run_changes_nothing(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [LayerSpec(300_000), 1000], ref="v1")
    assert ocipush(f"oci:{info.layout}", f"{proxy.host}/{repo}:v1", "--chunk-size", "100kB") == 0
    other = make_layout(tmp_path / "img", [LayerSpec(200_000)], ref="v2", seed=5)
    capsys.readouterr()
    mark = proxy.mark()
    assert ocipush(f"oci:{info.layout}:v2", f"{proxy.host}/{repo}:v2", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"blob {other.layers[0].digest[:19]}" in out and "would upload" in out
    assert "would send 2 of 2 blobs" in out  # a new config and layer
    assert {r.method for r in proxy.requests(mark)} <= {"", "GET", "HEAD"}
    assert registry_manifest(proxy.host, repo, "v2").status_code == 404
    assert ocipush(f"oci:{info.layout}:v1", f"{proxy.host}/{repo}:v1", "--dry-run", "--compression-format", "zstd",
                   "--no-cache") == 0
    assert "would compress to zstd and upload" in capsys.readouterr().out


def test_json_summary(proxy, repo, tmp_path, capsys):
    info = make_layout(tmp_path / "img", [LayerSpec(300_000), 1000], ref="v1")
    assert ocipush(f"oci:{info.layout}", f"{proxy.host}/{repo}:v1", "--json", "--chunk-size", "100kB") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["digest"] == info.digest and doc["reference"] == f"{proxy.host}/{repo}@{info.digest}"
    layer = next(b for b in doc["blobs"] if b["digest"] == info.layers[0].digest)
    # The proxy asks for chunks of at least 1 MiB: 100kB is raised to that, one request.
    assert layer["action"] == "uploaded" and layer["requests"] == 1 and layer["pushed_digest"] == info.layers[0].digest


def test_progress_bars_on_a_terminal(proxy, repo, tmp_path):
    """On a TTY a live display draws bars; piped, plain lines. Run under a real pty."""
    import os
    import pty

    info = make_layout(tmp_path / "img", [LayerSpec(2_000_000)], ref="v1")
    pid, fd = pty.fork()
    if pid == 0:  # the child: ocipush with its stderr on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "ocipush", f"oci:{info.layout}", f"{proxy.host}/{repo}:v1"])
    output = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        output += data
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "\x1b[" in text and "uploaded" in text and "MB" in text  # drawn with escapes
