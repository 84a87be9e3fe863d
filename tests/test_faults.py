"""Pushes that survive faults: a real registry behind a proxy that cuts bodies, loses
answers, stalls, refuses bodies and answers 429/5xx. Every push must end verified by skopeo,
as-is and recompressed to zstd."""

from __future__ import annotations

import hashlib
import random

import pytest

from ocipush.cache import BlobCache
from ocipush.compression import Compression
from ocipush.push import PushOptions, push
from ocipush.registry.retry import RetryPolicy
from tests.faultproxy import html_error_page
from tests.helpers import registry_manifest
from tests.imagegen import LayerSpec, make_layout
from tests.services import skopeo_pull

pytestmark = pytest.mark.integration
WAITS: list[float] = []  # every retry's wait, recorded by the injected sleep instead of slept
FAST = RetryPolicy(attempts=4, delay=0.05, max_delay=0.5, sleeper=WAITS.append)
MODES = {"as-is": Compression(), "zstd": Compression("zstd")}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    # 6 MB of text and 5 MB random: several 2 MB chunks in either mode.
    return make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(6_000_000, "text"), LayerSpec(5_000_000)], ref="v1")


def push_through(proxy, image, repo, mode, tmp_path, **kw):
    options = PushOptions(chunk_size=2_000_000, jobs=2, retry=FAST, compression=MODES[mode],
                          cache=BlobCache(tmp_path / "cache"), **kw)
    result = push(f"oci:{image.layout}", f"{proxy.host}/{repo}:v1", options)
    proxy.clear()  # verify through a healthy proxy
    tmp_path.mkdir(parents=True, exist_ok=True)
    response = registry_manifest(proxy.host, repo, "v1")
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == str(result.digest)
    skopeo_pull(f"{proxy.host}/{repo}:v1", tmp_path / "pulled")
    return result


FAULTS = {
    "cut PATCH body": lambda p: p.cut_body(500_000, method="PATCH", nth=2),
    "lost PATCH answer": lambda p: p.drop_response(method="PATCH", nth=3),
    "lost commit answer": lambda p: p.drop_response(method="PUT", path=r"digest=", nth=1),
    "429 on POST": lambda p: p.respond(429, {"Retry-After": "2"}, method="POST", nth=2),
    "502 HTML on PATCH": lambda p: p.respond(502, {}, html_error_page(502), "text/html", method="PATCH", nth=2),
    "503 on HEAD x3": lambda p: p.respond(503, {"Retry-After": "2"}, method="HEAD", times=3),
    "500 on manifest": lambda p: p.respond(500, method="PUT", path=r"/manifests/", nth=1),
    "stall on PATCH": lambda p: p.stall(3.0, method="PATCH", nth=2),
    "unadvertised 413": lambda p: p.limit_body(1_500_000),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", FAULTS)
def test_push_survives(faulty_proxy, image, repo, tmp_path, fault, mode):
    FAULTS[fault](faulty_proxy)
    timeout = {"timeout": 1.0} if fault == "stall on PATCH" else {}
    mark = faulty_proxy.mark()
    WAITS.clear()
    push_through(faulty_proxy, image, repo, mode, tmp_path, **timeout)
    assert any(r.fault for r in faulty_proxy.requests(mark)), "the fault never fired"
    if fault in ("429 on POST", "503 on HEAD x3"):
        assert 2.0 in WAITS, WAITS  # the Retry-After asked for (within 4 × max_delay), not our backoff


def test_soak_random_faults(faulty_proxy, image, repo, tmp_path):
    """Several pushes with random faults, bounded in count and time; each verified."""
    rng = random.Random(7)
    faults = 0
    for run in range(4):
        faulty_proxy.clear()
        faulty_proxy.random_faults(seed=rng.randrange(10**6), rate=0.15,
                                   kinds=("cut_body", "drop_response", "respond"), max_faults=4)
        mode = "zstd" if run % 2 else "as-is"
        mark = faulty_proxy.mark()
        push_through(faulty_proxy, image, f"{repo}-{run}", mode, tmp_path / str(run))
        faults += sum(1 for r in faulty_proxy.requests(mark) if r.fault)
    assert faults > 0, "the soak injected nothing"


def test_retry_flags(faulty_proxy, image, repo, tmp_path, capsys):
    from ocipush.cli import main

    args = [f"oci:{image.layout}", f"{faulty_proxy.host}/{repo}:v1", "--no-cache", "--chunk-size", "2MB"]
    faulty_proxy.respond(503, method="PATCH", nth=1)
    assert main([*args, "--retry", "0"]) == 4  # no retries: the first 503 is final
    assert "503 Service Unavailable" in capsys.readouterr().err.splitlines()[-1]
    faulty_proxy.clear()
    faulty_proxy.respond(503, method="PATCH", nth=1, times=2)
    assert main([*args, "--retry", "2", "--retry-delay", "10ms"]) == 0
    assert "retried" in capsys.readouterr().err


def test_busy_registry_at_connect_is_asked_again(faulty_proxy, image, repo, tmp_path, capsys, monkeypatch):
    from ocipush.cli import main

    waits: list[float] = []  # the CLI's policy, its sleep recorded instead of slept
    monkeypatch.setattr(RetryPolicy, "sleep", lambda self, attempt, error=None: waits.append(self.wait(attempt, error)))
    faulty_proxy.respond(503, {"Retry-After": "5"}, method="GET", path=r"^/v2/$", times=2)
    args = [f"oci:{image.layout}", f"{faulty_proxy.host}/{repo}:v1", "--retry-delay", "10ms"]
    assert main(args) == 0
    assert capsys.readouterr().err.count("retrying: GET http://") == 2
    assert waits == [5.0, 5.0]


@pytest.mark.parametrize("mode", MODES)
def test_unannounced_limit_is_learnt_without_starting_over(faulty_proxy, image, repo, tmp_path, mode, productions):
    """2 MB chunks through a 1.5 MB limit: each refused chunk goes again in smaller pieces on
    the same upload; every layer is compressed once and uploaded once; few refusals."""
    faulty_proxy.limit_body(1_500_000)
    mark = faulty_proxy.mark()
    result = push_through(faulty_proxy, image, repo, mode, tmp_path)
    requests = faulty_proxy.requests(mark)
    posts = [r for r in requests if r.method == "POST" and r.path.endswith("/blobs/uploads/")]
    assert len(posts) == len([b for b in result.blobs if b.action == "uploaded"])  # one upload per blob
    refused = [r for r in requests if r.status == 413]
    assert 1 <= len(refused) <= 2 and sum(b.refused for b in result.blobs) == len(refused)  # two layers at once
    accepted = [r.body_bytes for r in requests if r.method == "PATCH" and r.status == 202]
    assert max(accepted) <= 1_500_000
    if mode == "zstd":
        assert sorted(productions) == sorted(set(productions)) and len(productions) == len(image.layers)
    # Half the refused 2 MB, or the largest body that had passed by then when larger.
    assert result.chunk_size_learnt is not None and 1_000_000 <= result.chunk_size_learnt <= 1_500_000


def test_nginx_limit_on_a_compressed_stream(make_proxy, repo, tmp_path, productions):
    """A real nginx, 8m limit, no OCI-Chunk-* headers: a 20 MB zstd stream is refused at
    20 MB and 10 MB, then goes in 5 MB pieces on the same upload, compressed once."""
    bare = make_proxy(headers=None)
    info = make_layout(tmp_path / "img", [LayerSpec(20_000_000)], ref="v1")
    mark = bare.mark()
    result = push(f"oci:{info.layout}", f"{bare.host}/{repo}:v1",
                  PushOptions(retry=FAST, compression=Compression("zstd"), cache=None))
    skopeo_pull(f"{bare.host}/{repo}:v1", tmp_path / "pulled")
    requests = bare.requests(mark)
    assert len(productions) == 1
    assert len([r for r in requests if r.method == "POST"]) == 2  # config and layer
    assert [r.status for r in requests if r.method == "PATCH"].count(413) == 2
    [layer] = [b for b in result.blobs if str(b.source.digest) != info.config.digest]
    assert layer.restarts == 0 and layer.refused == 2 and layer.sent["GET"] == 1
