"""TLS settings without a network: cert directories and registries.conf."""

from __future__ import annotations

import ssl

import pytest

from ocipush.errors import UsageError
from ocipush.registry import tls
from ocipush.registry.tls import find_cert_dir, marked_insecure, registry_tls
from tests.pki import make_ca, make_leaf

HOST = "registry.example.com:5000"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    return make_ca(directory), make_leaf(directory, make_ca(directory / "other"), "client", client=True)


def test_users_certs_d_before_the_systems(user_config, tmp_path, monkeypatch):
    system = tmp_path / "etc-containers-certs.d"
    monkeypatch.setattr(tls, "_SYSTEM_CERTS_D", (system, tmp_path / "etc-docker-certs.d"))
    assert find_cert_dir(HOST) is None
    (system / HOST).mkdir(parents=True)
    assert find_cert_dir(HOST) == system / HOST
    user_config.certs_d(HOST).mkdir(parents=True)
    assert find_cert_dir(HOST) == user_config.certs_d(HOST)
    assert find_cert_dir("other.example.com") is None


def test_cert_dir_cas_and_client_certificate(user_config, tmp_path, ca):
    authority, client = ca
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "ca.crt").write_bytes(authority.cert.read_bytes())
    (directory / "client.cert").write_bytes(client.cert.read_bytes())
    (directory / "client.key").write_bytes(client.key.read_bytes())
    settings = registry_tls(HOST, cert_dir=directory)
    assert settings.cert_dir == directory and not settings.insecure
    assert settings.context.verify_mode == ssl.CERT_REQUIRED and settings.context.check_hostname
    subjects = [dict(x[0] for x in c["subject"]) for c in settings.context.get_ca_certs()]
    assert {"commonName": "ocipush-test-ca"} in subjects


@pytest.mark.parametrize("files, error", [
    ({"client.key": "key"}, "client.key: key without its client certificate client.cert"),
    ({"client.cert": "cert"}, "client.cert: client certificate without its key client.key"),
    ({"ca.crt": b"not a certificate"}, "ca.crt: not a usable PEM certificate or key"),
])
def test_cert_dir_mistakes_name_the_file(user_config, tmp_path, ca, files, error):
    _, client = ca
    directory = tmp_path / "certs"
    directory.mkdir()
    for name, content in files.items():
        data = {"key": client.key, "cert": client.cert}.get(content)
        (directory / name).write_bytes(data.read_bytes() if data else content)
    with pytest.raises(UsageError, match=error):
        registry_tls(HOST, cert_dir=directory)


def test_cert_dir_must_exist(user_config, tmp_path):
    with pytest.raises(UsageError, match=f"--cert-dir {tmp_path / 'nope'}: not a directory"):
        registry_tls(HOST, cert_dir=tmp_path / "nope")


def write_conf(user_config, text: str) -> None:
    user_config.registries_conf.write_text(text)


def test_registries_conf_insecure(user_config):
    write_conf(user_config, f"""
unqualified-search-registries = ["docker.io"]
[[registry]]
location = "{HOST}"
insecure = true
[[registry]]
prefix = "secure.example.com"
location = "mirror.example.com"
[[registry]]
prefix = "*.insecure.example.com"
insecure = true
[[registry]]
prefix = "*.a.insecure.example.com"
[[registry]]
prefix = "team.example.com/namespace"
insecure = true
""")
    assert marked_insecure(HOST)
    assert not marked_insecure("registry.example.com")  # another port, another registry
    assert not marked_insecure("secure.example.com")
    assert not marked_insecure("mirror.example.com")  # mirrors are not followed
    assert marked_insecure("b.insecure.example.com:443")
    assert not marked_insecure("x.a.insecure.example.com")  # the longer wildcard wins
    assert not marked_insecure("team.example.com")  # a namespace is not the whole registry


def test_tls_verify_decides_over_registries_conf(user_config):
    write_conf(user_config, f'[[registry]]\nlocation = "{HOST}"\ninsecure = true\n')
    assert registry_tls(HOST).insecure
    assert not registry_tls(HOST, verify=True).insecure
    assert registry_tls("other.example.com", verify=False).insecure
    context = registry_tls(HOST).context
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_users_registries_conf_replaces_the_systems_and_drop_ins_follow(user_config, tmp_path, monkeypatch):
    system = tmp_path / "etc/registries.conf"
    (system.parent / "registries.conf.d").mkdir(parents=True)
    system.write_text(f'[[registry]]\nlocation = "{HOST}"\ninsecure = true\n')
    monkeypatch.setattr(tls, "_SYSTEM_REGISTRIES_CONF", system)
    monkeypatch.delenv("CONTAINERS_REGISTRIES_CONF")
    assert marked_insecure(HOST)
    user = user_config.home / ".config/containers/registries.conf"
    user.parent.mkdir(parents=True)
    user.write_text("")
    assert not marked_insecure(HOST)
    (system.parent / "registries.conf.d/50-test.conf").write_text(f'[[registry]]\nprefix = "{HOST}"\ninsecure = true\n')
    assert marked_insecure(HOST)
    (user.parent / "registries.conf.d").mkdir()
    (user.parent / "registries.conf.d/99-mine.conf").write_text(f'[[registry]]\nprefix = "{HOST}"\ninsecure = false\n')
    assert not marked_insecure(HOST)  # a later drop-in replaces the entry


def test_malformed_registries_conf_is_named(user_config):
    write_conf(user_config, "[[registry]\n")
    with pytest.raises(UsageError, match=f"cannot read {user_config.registries_conf}"):
        marked_insecure(HOST)


def _marked_insecure_within(seconds: float, unblock) -> BaseException | bool:
    """marked_insecure(HOST) in a thread: its answer or exception; a hang fails the test."""
    import threading

    got: list[BaseException | bool] = []

    def look() -> None:
        try:
            got.append(marked_insecure(HOST))
        except BaseException as e:
            got.append(e)

    worker = threading.Thread(target=look, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        unblock()
        pytest.fail("reading registries.conf hung")
    return got[0]


@pytest.mark.parametrize("kind, why", [("dev-zero", "a character device, not a regular file"),
                                       ("fifo", "a FIFO (named pipe), not a regular file"),
                                       ("oversized", "larger than 4 MiB")])
def test_registries_conf_that_is_no_file_is_a_clean_error(user_config, tmp_path, monkeypatch, kind, why):
    """``CONTAINERS_REGISTRIES_CONF=/dev/zero`` was a traceback, a FIFO a hang (attack
    report, finding 7): now one UsageError naming the file, at once."""
    import os

    path = tmp_path / "registries.conf"
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_text("#" * (4 << 20) + "\n")
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(path))
    got = _marked_insecure_within(10, lambda: open(path, "wb").close())
    assert isinstance(got, UsageError) and str(got) == f"cannot read {path}: {why}", got


def test_an_oversized_cert_dir_file_is_refused(user_config, tmp_path):
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "ca.crt").write_bytes(b"#" * ((4 << 20) + 1))
    with pytest.raises(UsageError, match=f"cannot read {directory / 'ca.crt'}: larger than 4 MiB"):
        registry_tls(HOST, cert_dir=directory)
