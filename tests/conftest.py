"""Fixtures for real services (see tests/services.py).

Missing tools or services that do not start FAIL the tests that need them,
never skip: CI must not go green without the integration tests having run.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest
from hypothesis import settings

from tests.services import (
    MissingTool,
    ProxyService,
    RegistryService,
    ServiceError,
    start_proxy,
    start_registry,
    unique_repo,
)
from tests.userconfig import UserConfig, isolated_user_config

# No per-example wall-clock deadline: on a loaded 2-core CI machine an example that takes
# 20 ms alone can take 300 ms, and hypothesis calls that a failure (FlakyFailure). What the
# properties check is behaviour; the time a run may take is bounded by the run's own limits.
settings.register_profile("ocipush", deadline=None)
settings.load_profile("ocipush")


@pytest.fixture(scope="session", autouse=True)
def _private_state_home(tmp_path_factory):
    """The blob cache's sealing key (``$XDG_STATE_HOME/ocipush/cache-key``) lives in a
    directory of this test run, never in the machine's home; children inherit it."""
    # The blob cache and the record of open uploads (``$XDG_CACHE_HOME/ocipush``) too: a test
    # whose push fails keeps its upload's record, which must not land in the machine's home.
    names = ("XDG_STATE_HOME", "XDG_CACHE_HOME")
    old = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(tmp_path_factory.mktemp(name.lower()))
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def _running(start, *args, **kwargs):
    try:
        service = start(*args, **kwargs)
    except (MissingTool, ServiceError) as error:
        # pytest.fail() would chain onto `error` and print the message twice.
        raise pytest.fail.Exception(str(error), pytrace=False) from None
    with service:
        yield service


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> RegistryService:
    """A plain registry shared by the whole session; use unique repository names."""
    with _running(start_registry, tmp_path_factory.mktemp("registry")) as service:
        yield service


@pytest.fixture(scope="session")
def proxy(registry, tmp_path_factory) -> ProxyService:
    """nginx in front of `registry`: 8m body limit, default OCI-Chunk-* headers."""
    with _running(start_proxy, tmp_path_factory.mktemp("proxy"), registry) as service:
        yield service


@pytest.fixture
def make_registry(tmp_path_factory):
    """make_registry(extra_config=None) -> a registry of its own, stopped after the test."""
    with contextlib.ExitStack() as stack:

        def make(extra_config=None) -> RegistryService:
            workdir = tmp_path_factory.mktemp("registry")
            return stack.enter_context(_running(start_registry, workdir, extra_config))

        yield make


@pytest.fixture
def make_proxy(registry, tmp_path_factory):
    """make_proxy(upstream=registry, client_max_body_size="8m", headers=DEFAULT_CHUNK_HEADERS)
    -> an nginx of its own, stopped after the test."""
    with contextlib.ExitStack() as stack:

        def make(upstream=None, **options) -> ProxyService:
            workdir = tmp_path_factory.mktemp("proxy")
            return stack.enter_context(_running(start_proxy, workdir, upstream or registry, **options))

        yield make


@pytest.fixture
def repo(request) -> str:
    """A fresh repository name derived from the test's name (readable in registry logs)."""
    prefix = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    return unique_repo(prefix or "test")


@pytest.fixture
def faulty_proxy(registry):
    """A FaultProxy (tests/faultproxy.py) in front of `registry`; faults are the test's to install."""
    from tests.faultproxy import FaultProxy

    with FaultProxy(registry.host) as proxy:
        yield proxy


@pytest.fixture
def nginx(make_proxy) -> ProxyService:
    """An nginx of this test's own in front of the shared registry (its access log is the test's alone)."""
    return make_proxy()


@pytest.fixture
def front(nginx):
    """A FaultProxy in front of ``nginx``: where a push that is to meet faults goes."""
    from tests.faultproxy import FaultProxy

    with FaultProxy(nginx.host) as proxy:
        yield proxy


@pytest.fixture
def cache_home(tmp_path, user_config, monkeypatch) -> Path:
    """``$XDG_CACHE_HOME`` of this test (children inherit it): upload records live in ``ocipush/uploads``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "ocipush" / "uploads"


@pytest.fixture
def user_config(tmp_path, monkeypatch) -> UserConfig:
    """A podman and docker user's configuration in a home of this test's own (tests/userconfig.py):
    no machine logins, cache or registries.conf reach the test, or a child it starts."""
    return isolated_user_config(tmp_path, monkeypatch)


@pytest.fixture
def productions(monkeypatch) -> list[str]:
    """Every time a layer's compressed stream is produced from its first byte: one entry,
    its source's name (a restart of the blob produces it again)."""
    from ocipush.transcode import TranscodedContent

    started: list[str] = []
    original = TranscodedContent.stream

    def counted(self):
        started.append(self.what)
        return original(self)

    monkeypatch.setattr(TranscodedContent, "stream", counted)
    return started
