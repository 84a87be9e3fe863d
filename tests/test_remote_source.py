"""``docker://`` as a source: images mirrored from a real registry (the CNCF distribution
registry) to another, blobs streamed from the source's GET into the destination's
chunked upload.  skopeo reads every result back and verifies it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ocipush.cli import main
from ocipush.push import PushOptions, push
from ocipush.registry.client import ClientOptions
from ocipush.registry.retry import RetryPolicy
from tests.faultproxy import FaultProxy
from tests.helpers import registry_manifest
from tests.imagegen import LayerSpec, make_layout
from tests.services import skopeo_copy, skopeo_inspect, skopeo_pull, start_registry
from tests.tokenserver import htpasswd_auth
from tests.userconfig import auth_entry

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "oci"
PASSWORD = "Pa55-remote-4b1e-SECRET"
FAST = RetryPolicy(attempts=2, delay=0.01, max_delay=0.02)


def _seed(src: str, ref: str) -> None:
    """Put ``src`` (a skopeo reference) on a registry as ``ref`` (HOST/REPO:TAG), with skopeo."""
    result = skopeo_copy(src, f"docker://{ref}", "--all", "--preserve-digests")
    assert result.returncode == 0, result.stderr


def _raw(ref: str) -> bytes:
    host, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    response = registry_manifest(host, repo, tag)
    assert response.status_code == 200, response.text
    return response.content


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def big_image(tmp_path_factory):
    """One image whose gzip layer is bigger than nginx's 8 MB body limit, plus a small one."""
    return make_layout(tmp_path_factory.mktemp("big"), [LayerSpec(9 << 20), 2048], ref="v1")


@pytest.fixture(scope="module")
def basic_source(tmp_path_factory):
    """An htpasswd registry (user alice) holding the multi-arch fixture as app:multi."""
    workdir = tmp_path_factory.mktemp("htpasswd-source")
    with start_registry(workdir, htpasswd_auth(workdir, {"alice": PASSWORD})) as registry:
        result = skopeo_copy(f"oci:{FIXTURES / 'multiarch'}:multi", f"docker://{registry.host}/app:multi",
                             "--all", "--preserve-digests", f"--dest-creds=alice:{PASSWORD}")
        assert result.returncode == 0, result.stderr
        yield registry


def test_multiarch_index_copied_as_is(make_registry, registry, repo, capsys, user_config, tmp_path):
    """The whole index, every platform, the manifests byte for byte (same digest)."""
    source = make_registry()
    _seed(f"oci:{FIXTURES / 'multiarch'}:multi", f"{source.host}/{repo}:multi")
    src, dst = f"{source.host}/{repo}:multi", f"{registry.host}/mirror/{repo}:multi"
    assert main([f"docker://{src}", dst]) == 0, capsys.readouterr().err
    original = _raw(src)
    digest = "sha256:" + hashlib.sha256(original).hexdigest()
    assert capsys.readouterr().out.strip() == f"{registry.host}/mirror/{repo}@{digest}"
    assert _raw(dst) == original
    assert skopeo_inspect(f"docker://{dst}", raw=True) == skopeo_inspect(f"docker://{src}", raw=True)
    for child in skopeo_inspect(f"docker://{src}", raw=True)["manifests"]:
        child_ref = f"{registry.host}/mirror/{repo}@{child['digest']}"
        skopeo_pull(child_ref, tmp_path / child["digest"][7:19])  # verifies every blob's digest


def test_recompressed_to_zstd_through_the_body_limit(make_registry, proxy, big_image, repo, capsys, user_config,
                                                     tmp_path):
    """gzip → zstd on the way, into nginx's 8 MB limit: the layer goes in chunks."""
    source = make_registry()
    src = f"{source.host}/{repo}:v1"
    _seed(f"oci:{big_image.layout}:v1", src)
    dst = f"{proxy.host}/{repo}:zstd"
    mark = proxy.mark()
    assert main([f"docker://{src}", dst, "--compression-format", "zstd", "--no-cache"]) == 0, capsys.readouterr().err
    patches = [r for r in proxy.requests(mark) if r.method == "PATCH"]
    assert len(patches) > 2 and all(r.status == 202 for r in patches)
    layers = skopeo_inspect(f"docker://{dst}", raw=True)["layers"]
    assert [layer["mediaType"] for layer in layers] == ["application/vnd.oci.image.layer.v1.tar+zstd"] * 2
    skopeo_pull(dst, tmp_path / "pulled")


def test_source_with_basic_auth_by_src_creds_and_none_to_the_destination(basic_source, registry, repo, capsys,
                                                                          user_config, tmp_path):
    """The source's password goes to the source only: the destination (behind a recording
    proxy) never sees an Authorization header."""
    with FaultProxy(registry.host) as dest:
        dst = f"{dest.host}/{repo}:multi"
        code = main([f"docker://{basic_source.host}/app:multi", dst, "--src-creds", f"alice:{PASSWORD}"])
        assert code == 0, capsys.readouterr().err
        seen = dest.requests()
    assert seen and all(e.authorization is None for e in seen)
    assert PASSWORD not in capsys.readouterr().err
    skopeo_pull(f"{registry.host}/{repo}:multi", tmp_path / "pulled")


def test_source_with_basic_auth_from_src_authfile(basic_source, registry, repo, capsys, user_config, tmp_path):
    login = {"auths": {basic_source.host: auth_entry("alice", PASSWORD)}}
    authfile = user_config.write_json(tmp_path / "src-auth.json", login)
    dst = f"{registry.host}/{repo}:multi"
    assert main([f"docker://{basic_source.host}/app:multi", dst, "--src-authfile", str(authfile)]) == 0, \
        capsys.readouterr().err
    assert _raw(dst) == _raw_with_auth(basic_source.host, "app", "multi")


def _raw_with_auth(host: str, repo: str, tag: str) -> bytes:
    import httpx

    from tests.helpers import ACCEPT

    response = httpx.get(f"http://{host}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT},
                         auth=("alice", PASSWORD))
    assert response.status_code == 200
    return response.content


def test_wrong_source_password_is_exit_5_naming_the_source(basic_source, registry, repo, capsys, user_config):
    code = main([f"docker://{basic_source.host}/app:multi", f"{registry.host}/{repo}:x", "--src-creds", "alice:nope"])
    assert code == 5
    line = _error(capsys)
    assert line == (f"ocipush: source registry {basic_source.host}: authentication failed: the registry refused "
                    f"user 'alice' (from --src-creds) for app")


def test_source_without_credentials_names_src_creds(basic_source, registry, repo, capsys, user_config):
    assert main([f"docker://{basic_source.host}/app:multi", f"{registry.host}/{repo}:x"]) == 5
    line = _error(capsys)
    assert line.startswith(f"ocipush: source registry {basic_source.host}: authentication failed")
    assert "--src-creds" in line


def test_missing_tag_is_exit_3_naming_the_source(registry, repo, capsys, user_config):
    assert main([f"docker://{registry.host}/{repo}:nope", f"{registry.host}/{repo}-copy:x"]) == 3
    line = _error(capsys)
    assert line.startswith(f"ocipush: source registry {registry.host}: GET ")
    assert "404" in line and "MANIFEST_UNKNOWN" in line


def test_download_cut_mid_blob_resumes_with_range(make_registry, registry, big_image, repo, capsys, user_config,
                                                  tmp_path):
    """The source's answer ends 3 MB into the 9 MB layer: the next GET asks for the rest
    (Range), and the copy is whole."""
    source = make_registry()
    _seed(f"oci:{big_image.layout}:v1", f"{source.host}/{repo}:v1")
    layer = big_image.layers[0]
    with FaultProxy(source.host) as cut:
        cut.cut_answer(3 << 20, method="GET", path=f"/blobs/{layer.digest}")
        options = PushOptions(retry=FAST, cache=None)
        result = push(f"docker://{cut.host}/{repo}:v1", f"{registry.host}/{repo}:v1", options)
        gets = [e for e in cut.requests() if e.method == "GET" and layer.digest in e.path]
    assert str(result.digest) == big_image.digest
    assert [e.range for e in gets] == [None, f"bytes={3 << 20}-"]
    assert gets[1].status == 206
    skopeo_pull(f"{registry.host}/{repo}:v1", tmp_path / "pulled")


def test_same_registry_mounts_instead_of_copying(registry, big_image, repo, capsys, user_config):
    src = f"{registry.host}/{repo}:v1"
    _seed(f"oci:{big_image.layout}:v1", src)
    with FaultProxy(registry.host) as through:
        # Source and destination behind the same proxy: one origin, as the mount needs.
        result = push(f"docker://{through.host}/{repo}:v1", f"{through.host}/{repo}-mirror:v1",
                      PushOptions(cache=None))
        seen = through.requests()
    assert {b.action for b in result.blobs} == {"mounted"}
    assert not [e for e in seen if e.method in ("PATCH", "PUT") and "/blobs/" in e.path]
    assert not [e for e in seen if e.method == "GET" and "/blobs/sha256:" in e.path and
                e.path.endswith(big_image.layers[0].digest)]
    assert str(result.digest) == big_image.digest


def test_as_is_copy_by_digest_and_dry_run(registry, big_image, repo, capsys, user_config):
    src = f"{registry.host}/{repo}:v1"
    _seed(f"oci:{big_image.layout}:v1", src)
    by_digest = f"docker://{registry.host}/{repo}@{big_image.digest}"
    assert main([by_digest, f"{registry.host}/{repo}-dry:v1", "--dry-run"]) == 0, capsys.readouterr().err
    assert registry_manifest(registry.host, f"{repo}-dry", "v1").status_code == 404
    options = PushOptions(source_client=ClientOptions(), cache=None)
    result = push(by_digest, f"{registry.host}/{repo}-copy:v1", options)
    assert str(result.digest) == big_image.digest


def test_token_source_asks_for_pull_only(tmp_path_factory, registry, repo, capsys, user_config, tmp_path):
    """A Bearer-token source (the registry's auth: token): the token requested for the
    source is for pull alone, with the source's credentials, and the copy verifies."""
    from tests.tokenserver import TokenServer

    server = TokenServer(tmp_path_factory.mktemp("tokens"), users={"alice": PASSWORD})
    with server, start_registry(tmp_path_factory.mktemp("token-source"), server.registry_config()) as source:
        seeded = skopeo_copy(f"oci:{FIXTURES / 'single'}:{_first_ref(FIXTURES / 'single')}",
                             f"docker://{source.host}/app:v1", f"--dest-creds=alice:{PASSWORD}")
        assert seeded.returncode == 0, seeded.stderr
        server.requests.clear()
        code = main([f"docker://{source.host}/app:v1", f"{registry.host}/{repo}:v1", "--src-creds",
                     f"alice:{PASSWORD}"])
        assert code == 0, capsys.readouterr().err
        assert {(r.user, r.scopes) for r in server.requests} == {("alice", ("repository:app:pull",))}
    skopeo_pull(f"{registry.host}/{repo}:v1", tmp_path / "pulled")


def _first_ref(layout: Path) -> str:
    import json

    index = json.loads((layout / "index.json").read_text())
    return index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]


def test_a_chunk_the_destination_needs_again_is_read_again_by_range(make_registry, registry, big_image, repo,
                                                                    capsys, user_config, tmp_path):
    """The destination refuses the second 2 MB chunk once (503, the registry never saw it):
    the chunk goes again, its bytes read again from the source with a Range request, and
    only those."""
    source = make_registry()
    _seed(f"oci:{big_image.layout}:v1", f"{source.host}/{repo}:v1")
    layer = big_image.layers[0]
    with FaultProxy(source.host) as src, FaultProxy(registry.host) as dest:
        dest.respond(503, method="PATCH", nth=3)  # the config's PATCH, the layer's first chunk, its second
        options = PushOptions(chunk_size=2 << 20, retry=FAST, cache=None, jobs=1)
        result = push(f"docker://{src.host}/{repo}:v1", f"{dest.host}/{repo}:v1", options)
        gets = [e for e in src.requests() if e.method == "GET" and layer.digest in e.path]
    assert str(result.digest) == big_image.digest
    assert [e.range for e in gets] == [None, f"bytes={2 << 20}-"]
    skopeo_pull(f"{registry.host}/{repo}:v1", tmp_path / "pulled")


def test_source_password_from_stdin(basic_source, registry, repo, capsys, monkeypatch, user_config):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code = main([f"docker://{basic_source.host}/app:multi", f"{registry.host}/{repo}:multi",
                 "--src-username", "alice", "--src-password-stdin"])
    assert code == 0, capsys.readouterr().err
    assert _raw(f"{registry.host}/{repo}:multi") == _raw_with_auth(basic_source.host, "app", "multi")


def test_ctrl_c_while_the_source_is_silent_exits_130_at_once(make_registry, registry, big_image, repo, user_config):
    """SIGINT while an upload thread waits on the source's blob GET (the source registry
    says nothing for 60 s): one line, exit 130 within the interrupt's grace, no tag."""
    import signal
    import subprocess
    import sys
    import time

    source = make_registry()
    _seed(f"oci:{big_image.layout}:v1", f"{source.host}/{repo}:v1")
    with FaultProxy(source.host) as silent:
        held = silent.stall(60, method="GET", path=f"/blobs/{big_image.layers[0].digest}")
        argv = [sys.executable, "-m", "ocipush", f"docker://{silent.host}/{repo}:v1", f"{registry.host}/{repo}:v1"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert held.fault.holding.wait(30), "the blob GET never came"
            process.send_signal(signal.SIGINT)
            sent = time.monotonic()
            out, err = process.communicate(timeout=20)
            assert out == ""
            took = time.monotonic() - sent
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert (process.returncode, err.strip().splitlines()[-1:]) == (130, ["ocipush: interrupted"]), err
    assert "Traceback" not in err and took < 8, took
    assert registry_manifest(registry.host, repo, "v1").status_code == 404


def test_src_no_creds_reads_anonymously_whatever_the_auth_files_hold(basic_source, registry, repo, capsys,
                                                                     user_config):
    """The login in podman's auth file works for the source; --src-no-creds leaves it unread,
    so the registry that wants it refuses (exit 5, naming the source)."""
    user_config.write_json(user_config.runtime_auth, {"auths": {basic_source.host: auth_entry("alice", PASSWORD)}})
    src, dst = f"docker://{basic_source.host}/app:multi", f"{registry.host}/{repo}:anon"
    assert main([src, dst, "--src-no-creds"]) == 5
    assert _error(capsys).startswith(f"ocipush: source registry {basic_source.host}: authentication failed")
    assert main([src, dst]) == 0, capsys.readouterr().err  # the same login, looked up


def test_dest_no_creds_sends_the_registry_none(basic_source, big_image, capsys, user_config):
    """The login in podman's auth file works for the destination; --dest-no-creds leaves it
    unread, so the registry that wants it refuses (exit 5)."""
    user_config.write_json(user_config.runtime_auth, {"auths": {basic_source.host: auth_entry("alice", PASSWORD)}})
    src, dst = f"oci:{big_image.layout}:v1", f"{basic_source.host}/anon:v1"
    assert main([src, dst, "--dest-no-creds"]) == 5
    assert _error(capsys).startswith(f"ocipush: {basic_source.host}: authentication failed")
    assert main([src, dst]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--src-no-creds", "--src-creds", "a:b"], "--src-no-creds and --src-creds contradict each other"),
    (["--src-no-creds", "--src-authfile", "/x"], "--src-no-creds and --src-authfile contradict each other"),
    (["--dest-no-creds", "--creds", "a:b"], "--dest-no-creds and --creds contradict each other"),
])
def test_no_creds_with_credentials_is_a_usage_error(args, message, capsys, user_config):
    assert main(["docker://registry.example/app:v1", "registry.example/app:v1", *args]) == 2
    assert message in _error(capsys)


def test_src_no_creds_needs_a_registry_source(capsys, user_config, tmp_path):
    assert main([f"oci:{tmp_path}:v1", "registry.example/app:v1", "--src-no-creds"]) == 2
    assert "--src-no-creds is for a docker:// source" in _error(capsys)



def test_the_config_is_fetched_once(make_registry, registry, repo, capsys, user_config, tmp_path):
    """A push reads the config before the plan (its diff_ids, to check the layers) and again
    to upload it: the second read comes from the source's memory, not a second GET."""
    image = make_layout(tmp_path / "small", [2048, 1024], ref="v1")
    source = make_registry()
    _seed(f"oci:{image.layout}:v1", f"{source.host}/{repo}:v1")
    with FaultProxy(source.host) as src:
        result = push(f"docker://{src.host}/{repo}:v1", f"{registry.host}/{repo}:v1", PushOptions(cache=None))
        seen = [(e.method, e.status) for e in src.requests() if e.path.endswith(f"/blobs/{image.config.digest}")]
    assert str(result.digest) == image.digest
    assert seen == [("HEAD", 200), ("GET", 200)]
    skopeo_pull(f"{registry.host}/{repo}:v1", tmp_path / "pulled")


def test_a_config_is_kept_only_whole_verified_and_within_bounds(make_registry, repo, user_config, tmp_path,
                                                                monkeypatch):
    from ocipush import remote
    from ocipush.digest import Digest
    from ocipush.models import Descriptor

    image = make_layout(tmp_path / "small", [1024], ref="v1")
    source = make_registry()
    _seed(f"oci:{image.layout}:v1", f"{source.host}/{repo}:v1")
    config = Descriptor(image.config.media_type, Digest.parse(image.config.digest), image.config.size)
    data = image.config.path.read_bytes()
    with FaultProxy(source.host) as src, remote.open_any_source(f"docker://{src.host}/{repo}:v1", ClientOptions(),
                                                                FAST) as reader:
        with reader.open_blob(config) as f:
            assert f.read(10) == data[:10]  # not whole: not kept
        assert reader._blobs == {} and reader._blob_bytes == 0
        for _ in range(3):
            with reader.open_blob(config) as f:
                assert f.read() == data  # the first whole read is kept, the next from memory
        assert reader._blobs == {config.digest: data} and reader._blob_bytes == len(data)
        gets = [e for e in src.requests() if e.method == "GET" and e.path.endswith(str(config.digest))]
        assert len(gets) == 2
        # Bytes that do not hash to the digest are never kept (the reader, which hashes them too, says so).
        other = Descriptor(config.media_type, Digest.of(b"other"), len(data))
        assert reader._reserve(len(data))
        reader._keep_blob(other, data)
        assert other.digest not in reader._blobs and reader._blob_bytes == len(data)
    monkeypatch.setattr(remote, "BLOB_MEMORY", len(data) - 1)
    with remote.open_any_source(f"docker://{source.host}/{repo}:v1", ClientOptions(), FAST) as reader:
        with reader.open_blob(config) as f:
            assert f.read() == data
        assert reader._blobs == {} and reader._blob_bytes == 0


@pytest.fixture(scope="module")
def ten_platforms(tmp_path_factory):
    """An index of 10 platforms: 20 blobs (a config and a layer each)."""
    from tests.imagegen import make_index_layout

    return make_index_layout(tmp_path_factory.mktemp("ten"), [256],
                             platforms=[("linux", f"arch{i}") for i in range(10)], ref="multi")


def test_blob_heads_go_ahead_of_load_image_a_few_at_once(make_registry, ten_platforms, repo, user_config,
                                                         monkeypatch):
    """``load_image`` asks one blob after the other; the HEADs go out as soon as each
    manifest is read, HEAD_JOBS at once and never more: the first HEAD_JOBS wait until all
    of them are in flight (an event, not a clock), which one HEAD at a time never reaches."""
    import threading

    from ocipush import remote
    from ocipush.registry.pull import Puller
    from ocipush.sources import load_image

    source = make_registry()
    _seed(f"oci:{ten_platforms.layout}:multi", f"{source.host}/{repo}:multi")
    lock, in_flight, most, heads = threading.Lock(), [0], [0], []
    all_in_flight = threading.Event()
    real = Puller.blob_size

    def counted(self, digest):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            heads.append(digest)
            if in_flight[0] == remote.HEAD_JOBS:
                all_in_flight.set()
            first = len(heads) <= remote.HEAD_JOBS
        try:
            if first:
                assert all_in_flight.wait(10), "the HEADs went one at a time"
            return real(self, digest)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(Puller, "blob_size", counted)
    with remote.open_any_source(f"docker://{source.host}/{repo}:multi", ClientOptions(), FAST) as reader:
        root = load_image(reader)
    assert all_in_flight.is_set() and most[0] == remote.HEAD_JOBS
    assert sorted(heads) == sorted(b.digest for b in root.blobs())  # each once, none more


def test_missing_blobs_found_ahead_say_the_first_in_order(make_registry, ten_platforms, repo, capsys,
                                                          user_config):
    """Two blobs missing (404 to their HEADs): one line, exit 3, naming the first one
    load_image asks for, whichever HEAD came back first."""
    source = make_registry()
    _seed(f"oci:{ten_platforms.layout}:multi", f"{source.host}/{repo}:multi")
    first, later = ten_platforms.images[2].layers[0], ten_platforms.images[7].config
    with FaultProxy(source.host) as src:
        src.respond(404, method="HEAD", path=later.digest)
        src.respond(404, method="HEAD", path=first.digest)
        assert main([f"docker://{src.host}/{repo}:multi", f"{source.host}/{repo}-copy:multi"]) == 3
    assert _error(capsys) == (f"ocipush: source registry {src.host}: {repo}@{first.digest}: missing "
                              "(the source registry answered 404)")


def test_close_while_heads_are_held_ends_them(make_registry, ten_platforms, repo, user_config):
    """The source registry holds every HEAD; closing the source (what Ctrl-C does) ends
    the look-ahead's threads at once, and load_image, waiting on one, says interrupted."""
    import threading

    from ocipush import remote
    from ocipush.registry.transport import Interrupted
    from ocipush.sources import load_image

    source = make_registry()
    _seed(f"oci:{ten_platforms.layout}:multi", f"{source.host}/{repo}:multi")
    with FaultProxy(source.host) as silent:
        held = silent.stall(60, method="HEAD", times=None)
        reader = remote.open_any_source(f"docker://{silent.host}/{repo}:multi", ClientOptions(), FAST)
        outcome: list[BaseException] = []

        def walk():
            try:
                load_image(reader)
            except BaseException as e:  # what the walk ended with is the point
                outcome.append(e)

        walker = threading.Thread(target=walk)
        walker.start()
        assert held.fault.holding.wait(30), "no HEAD came"
        reader.close()
        walker.join(20)
        assert not walker.is_alive()
        heads = [t for t in threading.enumerate() if t.name.startswith("ocipush-source-head")]
        for thread in heads:
            thread.join(20)
            assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Interrupted), outcome
