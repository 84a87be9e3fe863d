"""A body limit nobody announced (a proxy's 413): the refused chunk goes again in smaller
pieces on the same upload, a compressed layer is compressed once, the blob starts over
only where the equal-chunk rule forces it, and ``--json`` counts every request exactly."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocipush.chunks import HostLimits
from ocipush.compression import Compression
from ocipush.push import PushOptions, push
from ocipush.registry.retry import RetryPolicy
from tests.fakeregistry import FakeRegistry, Reply, html
from tests.imagegen import LayerSpec, make_layout

FAST = RetryPolicy(attempts=3, delay=0.01, max_delay=0.05, sleeper=lambda seconds: None)


def options(**kw) -> PushOptions:
    return PushOptions(retry=FAST, jobs=kw.pop("jobs", 1), **kw)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(300_000), LayerSpec(1000, "text")], ref="v1")


def stored(fake: FakeRegistry, repo: str, info) -> None:
    for blob in [info.config, *info.layers]:
        assert blob.digest in fake.blobs[repo]
    assert fake.tags[repo][info.ref] == info.digest


def of(fake: FakeRegistry, method: str, status: int | None = None) -> list:
    return [r for r in fake.log if r.method == method and (status is None or r.status == status)]


def test_refused_chunk_is_sent_again_in_pieces_on_the_same_upload(image):
    with FakeRegistry(body_limit=100_000) as fake:
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options())
        stored(fake, "r", image)
        big = image.layers[0].digest
        # One upload per blob: nothing started over (the old code POSTed the big layer 3 times).
        assert len([r for r in of(fake, "POST") if "/blobs/uploads/" in r.path]) == 3
        size = image.layers[0].size  # 307 248: 300 000 random bytes in a tar, gzipped
        refused = of(fake, "PATCH", 413)
        assert [r.body_length for r in refused] == [size, size // 2]  # halved, then it passes
        layer = next(b for b in result.blobs if str(b.source.digest) == big)
        accepted = [r.body_length for r in of(fake, "PATCH", 202) if r.body_length > 1000]
        assert accepted == [size // 4] * 4 and layer.requests == 4 and layer.refused == 2
        assert layer.sent["GET"] == 1  # asked once where the upload stands (a proxy's 413 changes nothing)
        assert layer.restarts == 0 and layer.retries == 0
        assert result.chunk_size_learnt == size // 4
        said = [n for n in result.notes if "413" in n]
        assert len(said) == 1 and f"--chunk-size {size // 4}" in said[0], result.notes


def test_transcoded_layer_is_compressed_once(tmp_path, productions):
    info = make_layout(tmp_path / "img", [LayerSpec(1_000_000)], ref="v1")
    with FakeRegistry(body_limit=150_000) as fake:
        result = push(f"oci:{info.layout}", f"{fake.host}/r:v1",
                      options(chunk_size=400_000, compression=Compression("zstd")))
        [layer] = [b for b in result.blobs if str(b.source.digest) == info.layers[0].digest]
        assert str(layer.pushed.digest) in fake.blobs["r"]
        assert productions == [productions[0]]  # produced once: no restart, no second compression
        assert layer.refused == 2 and layer.restarts == 0  # 400 000 and 200 000 refused, 100 000 passes
        sizes = [r.body_length for r in of(fake, "PATCH", 202)]
        assert max(sizes) == 100_000 and sum(sizes[:-1]) + sizes[-1] == layer.pushed.size + info.config.size
        assert fake.tags["r"]["v1"]


def test_equal_chunk_registry_that_refuses_the_smaller_pieces_is_started_over(image):
    """A 413 in the middle of an upload to a registry whose chunks must all equal the
    first (it announced nothing): the smaller pieces are refused with 416, the blob
    starts over once, with equal chunks of the size learnt, and the rule is learnt."""
    with FakeRegistry(equal_chunks=True) as fake:
        fake.inject(lambda r: r.method == "PATCH" and r.headers.get("content-range", "").startswith("100000-"),
                    html(413))
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options(chunk_size=100_000))
        stored(fake, "r", image)
        layer = next(b for b in result.blobs if str(b.source.digest) == image.layers[0].digest)
        assert layer.restarts == 1 and layer.refused == 1 and layer.sent["POST"] == 2
        assert len(of(fake, "PATCH", 416)) == 1  # the rule showed itself once
        last = [r.body_length for r in of(fake, "PATCH", 202) if r.body_length > 1000][-7:]
        assert last == [50_000] * 6 + [7_248]  # the new upload: equal chunks of the learnt size


def test_announced_limits_recut_at_offset_zero_into_equal_pieces(image):
    """serverless-registry announces OCI-Chunk-Max-Length and wants equal chunks: a proxy
    limit below it is met at offset 0, where pieces that divide the chunk keep the rule."""
    with FakeRegistry(max_chunk=200_000, body_limit=90_000) as fake:
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options())
        stored(fake, "r", image)
        layer = next(b for b in result.blobs if str(b.source.digest) == image.layers[0].digest)
        assert layer.restarts == 0 and layer.refused == 2 and layer.requests == 7
        assert [r.body_length for r in of(fake, "PATCH", 202) if r.body_length > 1000] == [50_000] * 6 + [7_248]


def test_announced_limits_and_a_refusal_past_offset_zero_start_over(image):
    with FakeRegistry(max_chunk=100_000) as fake:
        fake.inject(lambda r: r.method == "PATCH" and r.headers.get("content-range", "").startswith("100000-"),
                    html(413))
        result = push(f"oci:{image.layout}", f"{fake.host}/r:v1", options())
        stored(fake, "r", image)
        layer = next(b for b in result.blobs if str(b.source.digest) == image.layers[0].digest)
        assert layer.restarts == 1 and layer.sent["POST"] == 2 and "GET" not in layer.sent  # no GET: it cannot go on
        assert not of(fake, "PATCH", 416)


def blob_segments(fake: FakeRegistry) -> dict[str, list]:
    """With one job, each blob's requests run from its first HEAD to the next blob's."""
    segments: dict[str, list] = {}
    current: list | None = None
    for r in fake.log:
        if r.method == "HEAD" and "/blobs/sha256:" in r.path and r.path.rsplit("/", 1)[1] not in segments:
            current = segments[r.path.rsplit("/", 1)[1]] = []
        elif "/manifests/" in r.path:
            current = None
        if current is not None:
            current.append(r)
    return segments


def test_json_counts_every_request_exactly(image, capsys, user_config):
    from ocipush.cli import main

    with FakeRegistry(body_limit=100_000) as fake:
        # One commit PUT answered 503 once: a retried PUT, which the old count missed.
        fake.inject(lambda r: r.method == "PUT" and "/blobs/" in r.path, Reply(503, {}, b""))
        code = main([f"oci:{image.layout}", f"{fake.host}/r:v1", "--json", "--jobs", "1", "--no-cache",
                     "--retry-delay", "1ms"])
        assert code == 0
        doc = json.loads(capsys.readouterr().out)
        logged = blob_segments(fake)
        assert set(logged) == {b["digest"] for b in doc["blobs"]}
        for blob in doc["blobs"]:
            records = logged[blob["digest"]]
            assert list(blob["requests_by_method"]) == ["HEAD", "POST", "PATCH", "GET", "PUT", "DELETE"]
            sent = {m: n for m, n in blob["requests_by_method"].items() if n}
            assert sent == {m: sum(1 for r in records if r.method == m) for m in {r.method for r in records}}, blob
            assert blob["requests"] == sum(1 for r in records if r.method == "PATCH" and r.status == 202)
        assert sum(b["retries"] for b in doc["blobs"]) == 1  # the PUT
        assert sum(b["refused"] for b in doc["blobs"]) == len(of(fake, "PATCH", 413)) == 2
        assert doc["chunk_size_learnt"] == image.layers[0].size // 4
        assert [n for n in doc["notes"] if "413" in n] and list(doc)[-2:] == ["chunk_size_learnt", "notes"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 400_000), limit=st.integers(20_000, 200_000), chunk=st.none() | st.integers(20_000, 300_000))
def test_any_unannounced_limit_one_upload_per_blob(tmp_path_factory, size, limit, chunk):
    info = make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(size)], ref="v1")
    with FakeRegistry(body_limit=limit, equal_chunks=False) as fake:
        result = push(f"oci:{info.layout}", f"{fake.host}/r:v1", options(chunk_size=chunk))
        stored(fake, "r", info)
        assert len(of(fake, "POST")) == 2  # config and layer: one upload each, nothing started over
        assert all(b.restarts == 0 for b in result.blobs)
        assert len(of(fake, "PATCH", 413)) <= 5  # halving from at most 400 000 to at least 20 000


def test_host_limits_never_go_below_a_size_that_passed():
    limits = HostLimits(None)
    limits.accepted(6_000_000)
    assert limits.too_large(8_000_000, None) == 6_000_000  # not 4 000 000: 6 000 000 passed
    assert limits.too_large(6_500_000, None) == 6_000_000
    assert limits.learnt == 6_000_000
