"""``--retry N`` as documented: N retries per request, a chunk's resends and its status
``GET``s sharing one budget, N restarts per blob; the waits ``Retry-After`` asks for,
seen through an injected sleep and clock (no test here waits on the wall clock).

Every count is exact, taken from the strict fake's request log: a budget that nests
(the status ``GET`` with its own N, as it once had) or leaks fails these tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ocipush.errors import RegistryError
from ocipush.push import PushOptions, push
from ocipush.registry.retry import RetryPolicy
from tests.fakeregistry import FakeRegistry, LogRecord, Request, html, nth, oci_error
from tests.imagegen import LayerSpec, make_layout

# 1 000 000 000 s after the epoch, as an HTTP-date: what the injected clock says it is.
NOW = 1_000_000_000.0
NOW_PLUS_9S = "Sun, 09 Sep 2001 01:46:49 GMT"


class Waits(list[float]):
    """The injected sleep: records each wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def policy(attempts: int, waits: Waits, max_delay: float = 0.05) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, delay=0.01, max_delay=max_delay, sleeper=waits, clock=lambda: NOW)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    # One layer of 250 kB: three chunks of 100 kB at most, and a config.
    return make_layout(tmp_path_factory.mktemp("img"), [LayerSpec(250_000)], ref="v1")


def push_to(fake: FakeRegistry, image, retry: RetryPolicy) -> None:
    push(f"oci:{image.layout}", f"{fake.host}/r:v1", PushOptions(retry=retry, jobs=1))


def requests(fake: FakeRegistry, method: str, where: Callable[[LogRecord], bool] = lambda r: True) -> list[LogRecord]:
    return [r for r in fake.log if r.method == method and where(r)]


def layer_patch(r: Request | LogRecord) -> bool:
    """A PATCH of the 250 kB layer: the config, uploaded beside it, is far smaller."""
    return r.method == "PATCH" and int(r.headers.get("content-length", "0")) >= 50_000


def first(predicate: Callable[[Request], bool]) -> Callable[[Request], bool]:
    """The first request ``predicate`` matches, and no other."""
    seen = iter(range(1))
    return lambda r: predicate(r) and next(seen, None) is not None


def upload_status(r: LogRecord) -> bool:
    return "/blobs/uploads/" in r.path


def commit(r: Request | LogRecord) -> bool:
    return r.method == "PUT" and "digest" in r.query and "/blobs/" in r.path


# -- Retry-After ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, expected",
    [("7", 7.0), (NOW_PLUS_9S, 9.0), ("3600", 5.0 * 4)],  # seconds; an HTTP-date (the clock's); capped
    ids=["seconds", "http-date", "capped"],
)
def test_retry_after_is_waited(image, header, expected):
    waits = Waits()
    with FakeRegistry(max_chunk=100_000) as fake:
        fake.inject(nth("PATCH", 2), html(503, {"Retry-After": header}))
        push_to(fake, image, policy(3, waits, max_delay=5.0))
        assert fake.tags["r"]["v1"]
    # Our own backoff would be 5-10 ms: only the header makes the wait this long.
    assert waits == [expected]


def test_retry_after_on_a_commit_and_an_idempotent_request_is_waited(image):
    waits = Waits()
    with FakeRegistry() as fake:
        fake.inject(commit, html(503, {"Retry-After": "3"}))
        fake.inject(nth("POST", 1, "/blobs/uploads/"), html(429, {"Retry-After": "4"}))
        push_to(fake, image, policy(3, waits, max_delay=5.0))
        assert fake.tags["r"]["v1"]
    assert sorted(waits) == [3.0, 4.0]


# -- the budget: exact request counts --------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 3])
def test_a_chunk_that_always_fails_is_sent_n_plus_1_times(image, n):
    waits = Waits()
    with FakeRegistry(max_chunk=100_000) as fake:
        fake.inject(layer_patch, html(503), times=1000)
        with pytest.raises(RegistryError, match=r"PATCH \S+: 503"):
            push_to(fake, image, policy(n, waits))
        assert len(requests(fake, "PATCH", layer_patch)) == n + 1
        assert len(requests(fake, "GET", upload_status)) == n  # where does it stand? after each failure
        assert len({r.path for r in requests(fake, "PATCH", layer_patch)}) == 1  # no reason to start over
    assert len(waits) == n


@pytest.mark.parametrize("n", [0, 1, 3])
def test_status_gets_spend_the_chunks_budget(image, n):
    # The chunk fails once; then every "where does it stand?" fails: N retries in all, not N each.
    waits = Waits()
    with FakeRegistry(max_chunk=100_000) as fake:
        fake.inject(first(layer_patch), html(503))
        fake.inject(lambda r: r.method == "GET" and "/blobs/uploads/" in r.path, html(502), times=1000)
        with pytest.raises(RegistryError, match=r"(PATCH \S+: 503|GET \S+: 502)"):
            push_to(fake, image, policy(n, waits))
        assert len(requests(fake, "PATCH", layer_patch)) == 1
        assert len(requests(fake, "GET", upload_status)) == n
    assert len(waits) == n


@pytest.mark.parametrize("n", [0, 1, 3])
def test_a_commit_that_always_fails_is_sent_n_plus_1_times(image, n):
    waits = Waits()
    digest = image.layers[0].digest
    with FakeRegistry() as fake:
        fake.inject(lambda r: commit(r) and r.query["digest"] == digest, html(503), times=1000)
        with pytest.raises(RegistryError, match=r"PUT \S+: 503"):
            push_to(fake, image, policy(n, waits))
        assert len(requests(fake, "PUT", lambda r: commit(r) and r.query["digest"] == digest)) == n + 1
        # One HEAD before the upload, one after each failed PUT (was it committed after all?).
        assert len(requests(fake, "HEAD", lambda r: digest in r.path)) == 1 + n + 1
    assert len(waits) == n


@pytest.mark.parametrize("n", [0, 1, 3])
def test_a_busy_registry_is_pinged_n_plus_1_times(image, n):
    waits = Waits()
    with FakeRegistry() as fake:
        fake.inject(lambda r: r.method == "GET" and r.path == "/v2/", html(503), times=1000)
        with pytest.raises(RegistryError, match="cannot reach registry"):
            push_to(fake, image, policy(n, waits))
        assert len(requests(fake, "GET", lambda r: r.path == "/v2/")) == n + 1
    assert len(waits) == n


@pytest.mark.parametrize("n", [0, 1, 3])
def test_a_blob_starts_over_n_times(image, n):
    waits = Waits()
    with FakeRegistry(max_chunk=100_000) as fake:
        fake.inject(layer_patch, oci_error(404, "BLOB_UPLOAD_UNKNOWN", "upload unknown"), times=1000)
        with pytest.raises(RegistryError, match="BLOB_UPLOAD_UNKNOWN"):
            push_to(fake, image, policy(n, waits))
        # The first upload and N new ones, each gone at its first chunk.
        layer = requests(fake, "PATCH", layer_patch)
        assert len(layer) == n + 1 and len({r.path for r in layer}) == n + 1
    assert len(waits) == n


def test_the_budget_is_per_chunk_not_per_blob(image):
    # Each of three chunks fails 3 times with --retry 3: 9 retries in all, and the push succeeds.
    waits = Waits()
    with FakeRegistry(max_chunk=100_000) as fake:
        for k in range(3):
            fake.inject(lambda r, k=k: layer_chunk(r, k), html(503), times=3)
        push_to(fake, image, policy(3, waits))
        assert fake.tags["r"]["v1"]
        assert len(requests(fake, "PATCH")) == 3 * 4 + 1  # each chunk 4 times, the config once
    assert len(waits) == 9


def layer_chunk(r: Request, k: int) -> bool:
    """The k-th chunk of the 250 kB layer."""
    return layer_patch(r) and r.headers.get("content-range", "").startswith(f"{k * 100_000}-")
