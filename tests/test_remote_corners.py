"""``docker://`` sources: the protocol corners a real registry will not produce on demand
(a registry without ranges, a lying Content-Range, a redirect to blob storage, corrupt
bytes), with the strict fake registry, and the blob reader's seeks against the real one."""

from __future__ import annotations

import hashlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocipush.cli import main
from ocipush.errors import BlobVerificationError, RegistryError, SourceError
from ocipush.push import PushOptions, push
from ocipush.reference import Reference, parse_source
from ocipush.registry.client import ClientOptions, RegistryClient
from ocipush.registry.pull import BlobReader
from ocipush.registry.retry import RetryPolicy
from ocipush.remote import RemoteSource
from tests.fakeregistry import Alter, FakeRegistry, nth
from tests.faultproxy import FaultProxy
from tests.imagegen import make_layout

FAST = RetryPolicy(attempts=2, delay=0.01, max_delay=0.02)
SIZE = 300_000


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("image"), [SIZE, 1000], ref="v1")


@pytest.fixture
def fake(image):
    """A fake registry holding the image as src:v1."""
    with FakeRegistry() as fake:
        push(f"oci:{image.layout}:v1", f"{fake.host}/src:v1", PushOptions(cache=None))
        yield fake


def _reader(host: str, repo: str, digest: str, size: int) -> BlobReader:
    client = RegistryClient(host, ClientOptions(), loopback=True, retry=FAST, actions="pull")
    client.connect()
    return BlobReader(client, client.url(f"/v2/{repo}/blobs/{digest}"), size)


def test_parse_source_docker():
    spec = parse_source("docker://127.0.0.1:5000/team/app:v2")
    assert spec.transport == "docker" and spec.reference == Reference("127.0.0.1:5000", "team/app", "v2")
    assert parse_source("docker://127.0.0.1:5000/app").reference.tag == "latest"
    with pytest.raises(Exception, match="docker://HOST/REPO"):
        parse_source("docker:127.0.0.1/app")


def test_a_registry_without_ranges_restarts_the_blob_and_drops_what_it_had(fake, image):
    """The fake ignores Range (200, the whole blob): after the cut, the bytes already read
    are read again and dropped; the stream is the blob, whole and in order."""
    layer = image.layers[0]
    with FaultProxy(fake.host) as cut:
        cut.cut_answer(100_000, method="GET", path=f"/blobs/{layer.digest}")
        reader = _reader(cut.host, "src", layer.digest, layer.size)
        data = b"".join(iter(lambda: reader.read(1 << 16), b""))
        gets = [e for e in cut.requests() if e.method == "GET" and "/blobs/" in e.path]
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
    assert [e.range is not None for e in gets] == [False, True] and gets[1].status == 200
    assert reader.requests == 2 and reader.ranged == 1


def test_a_content_range_that_is_not_what_was_asked_is_an_error(fake, image):
    layer = image.layers[0]
    fake.inject(nth("GET", 1, "/blobs/"), Alter(206, {"Content-Range": f"bytes 5-{layer.size - 1}/{layer.size}",
                                                      "Content-Length": None}), times=3)
    reader = _reader(fake.host, "src", layer.digest, layer.size)
    reader.seek(10)
    with pytest.raises(RegistryError, match=r"Content-Range from GET .*'bytes 5-"):
        reader.read(10)


def test_a_source_blob_that_breaks_on_every_try_is_exit_3_naming_the_source(fake, image, capsys):
    layer = image.layers[0]
    with FaultProxy(fake.host) as cut, FakeRegistry() as dest:
        cut.cut_answer(50_000, method="GET", path=f"/blobs/{layer.digest}", times=None)
        code = main([f"docker://{cut.host}/src:v1", f"{dest.host}/copy:v1", "--retry", "1", "--retry-delay", "0",
                     "--no-cache"])
        assert "v1" not in dest.tags.get("copy", {})
    assert code == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"ocipush: source registry {cut.host}: GET http://{cut.host}/v2/src/blobs/{layer.digest}")


def test_corrupt_bytes_from_the_source_fail_the_blob_and_tag_nothing(fake, image):
    layer = image.layers[0]
    good = fake.blobs["src"][layer.digest]
    fake.blobs["src"][layer.digest] = good[:-1] + bytes([good[-1] ^ 1])
    with FakeRegistry() as dest:
        with pytest.raises(BlobVerificationError, match=rf"source registry {fake.host}: src@{layer.digest}"):
            push(f"docker://{fake.host}/src:v1", f"{dest.host}/copy:v1", PushOptions(cache=None, retry=FAST))
        assert "v1" not in dest.tags.get("copy", {})


def test_a_missing_blob_fails_before_any_upload(fake, image):
    del fake.blobs["src"][image.layers[1].digest]
    with FakeRegistry() as dest:
        with pytest.raises(SourceError, match="missing"):
            push(f"docker://{fake.host}/src:v1", f"{dest.host}/copy:v1", PushOptions(cache=None, retry=FAST))
        assert not [r for r in dest.log if r.method in ("POST", "PATCH", "PUT")]


def test_a_manifest_that_is_not_the_digest_asked_for(fake, image):
    media_type, body = fake.manifests["src"][image.digest]
    fake.manifests["src"][image.digest] = (media_type, body + b" ")
    with pytest.raises(SourceError, match=f"served a manifest of digest .* not {image.digest} asked for"):
        push(f"docker://{fake.host}/src@{image.digest}", f"{fake.host}/copy:v1", PushOptions(cache=None))


def test_a_redirect_to_blob_storage_carries_no_credentials(image):
    """The source registry (Basic auth) redirects the layer's GET to another origin: the
    download goes there without Authorization, and the copy is whole."""
    layer = image.layers[0]
    with FakeRegistry(require_basic=("alice", "pw-src")) as fake, FakeRegistry() as storage, \
            FaultProxy(storage.host) as recorder, FakeRegistry() as dest:
        options = PushOptions(cache=None, credentials=None)
        seeding = PushOptions(cache=None, credentials=_alice())
        push(f"oci:{image.layout}:v1", f"{fake.host}/src:v1", seeding)
        storage.add_blob("src", fake.blobs["src"][layer.digest])
        fake.inject(lambda r: r.method == "GET" and r.path.endswith(layer.digest),
                    Alter(307, {"Location": f"{recorder.url}/v2/src/blobs/{layer.digest}"}, b""), times=5)
        options = PushOptions(cache=None, source_client=ClientOptions(credentials=_alice()))
        result = push(f"docker://{fake.host}/src:v1", f"{dest.host}/copy:v1", options)
        seen = recorder.requests()
    assert str(result.digest) == image.digest
    assert [e.method for e in seen] == ["GET"] and seen[0].authorization is None


def _alice():
    from ocipush.registry.auth import Credentials

    return Credentials("alice", "pw-src", source="--src-creds")


def test_the_source_client_asks_for_pull_only(fake):
    source = RemoteSource(Reference.parse(f"{fake.host}/src:v1"), ClientOptions(), FAST, None)
    with source:
        assert source.client.auth.actions == "pull"
        assert source.location == f"{fake.host}/src"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(0, SIZE + 100), st.integers(1, 200_000)), min_size=1, max_size=6))
def test_seeks_and_reads_give_the_blob_s_bytes(registry, image, steps):
    """Against the real registry (which serves ranges): any seek then read gives exactly
    the file's bytes there, through as many Range requests as the seeks need."""
    layer = image.layers[0]
    repo = "remote-corners/seeks"
    _seed_once(registry, image, repo)
    data = layer.path.read_bytes()
    reader = _reader(registry.host, repo, layer.digest, layer.size)
    for offset, n in steps:
        reader.seek(offset)
        assert _read_exactly(reader, n) == data[offset : offset + n]
    reader.close()


def _read_exactly(reader: BlobReader, n: int) -> bytes:
    """Up to ``n`` bytes: a raw reader's ``read`` may return fewer, and b"" only at the end."""
    parts = []
    while n > 0 and (block := reader.read(n)):
        parts.append(block)
        n -= len(block)
    return b"".join(parts)


_seeded: set[str] = set()


def _seed_once(registry, image, repo: str) -> None:
    if (registry.host, repo) not in _seeded:
        push(f"oci:{image.layout}:v1", f"{registry.host}/{repo}:v1", PushOptions(cache=None))
        _seeded.add((registry.host, repo))


def test_reader_is_a_file_for_readinto(registry, image):
    layer = image.layers[0]
    _seed_once(registry, image, "remote-corners/seeks")
    reader = _reader(registry.host, "remote-corners/seeks", layer.digest, layer.size)
    buffered = io.BufferedReader(reader, 1 << 16)
    assert hashlib.sha256(buffered.read()).hexdigest() == layer.digest[7:]


def test_a_source_registry_that_is_not_there_is_exit_3(capsys):
    with FakeRegistry() as dest:
        host = dest.host
    assert main([f"docker://{host}/src:v1", f"{host}/copy:v1", "--retry", "0"]) == 3
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"ocipush: source registry {host}: ")


def test_src_options_need_a_docker_source(capsys):
    assert main(["oci:/nonexistent:v1", "127.0.0.1:1/x:y", "--src-creds", "a:b"]) == 2
    assert capsys.readouterr().err.strip() == "ocipush: --src-creds is for a docker:// source, not oci:/nonexistent:v1"


def test_src_cert_dir_usage(tmp_path, capsys):
    """--src-cert-dir is for a docker:// source, and a folder that is not there is a usage error
    naming it, before any connection."""
    assert main([f"oci:{tmp_path}:v1", "127.0.0.1:1/x:y", "--src-cert-dir", str(tmp_path)]) == 2
    expected = f"ocipush: --src-cert-dir is for a docker:// source, not oci:{tmp_path}:v1"
    assert capsys.readouterr().err.strip() == expected
    missing = tmp_path / "no-certs"
    assert main(["docker://127.0.0.1:1/x:y", "127.0.0.1:1/x:z", "--src-cert-dir", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--src-cert-dir {missing}: not a directory" in err


def test_a_registry_source_into_an_oci_layout(fake, image, tmp_path):
    result = push(f"docker://{fake.host}/src:v1", f"oci:{tmp_path / 'out'}:v1", PushOptions(cache=None))
    assert str(result.digest) == image.digest
    layer = image.layers[0]
    assert (tmp_path / "out" / "blobs" / "sha256" / layer.digest[7:]).read_bytes() == layer.path.read_bytes()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--src-password-stdin"], "--src-password-stdin needs --src-username"),
        (["--src-username", "a"], "--src-username needs --src-password-stdin (or use --src-creds USER:PASS)"),
        (["--src-username", "a", "--src-password-stdin", "--username", "b", "--password-stdin"],
         "only one password can come from standard input"),
        (["--src-username", "a", "--src-password-stdin", "--src-creds", "a:b"], "give either --src-creds or"),
        (["--src-creds", ":pw"], "--src-creds: empty user name"),
        (["--src-creds", "user"], "--src-creds has no password and there is no terminal to ask for one"),
    ],
)
def test_src_password_stdin_usage(args, message, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert main(["docker://127.0.0.1:1/x:y", "127.0.0.1:1/x:z", *args]) == 2
    assert message in capsys.readouterr().err
