"""HTTPS against the real distribution registry serving TLS with a CA made here: trusted
through --cert-dir or certs.d, refused without, insecure only by the user's choice, and a
client certificate where the registry asks for one."""

from __future__ import annotations

import hashlib
import shutil
import ssl

import httpx
import pytest

from ocipush.cli import main
from tests.imagegen import make_layout
from tests.pki import make_ca, make_leaf
from tests.services import start_registry
from tests.tokenserver import htpasswd_auth

pytestmark = pytest.mark.integration

PASSWORD = "tls-test-password"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory)
    return ca, make_leaf(directory, ca, "server"), make_leaf(directory, ca, "client", client=True)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("image"), [4000], ref="v1")


def _https_registry(workdir, pki, **tls):
    _, server, _ = pki
    config = {"http": {"tls": {"certificate": str(server.cert), "key": str(server.key), **tls}},
              **htpasswd_auth(workdir, {"alice": PASSWORD})}
    return start_registry(workdir, config)


@pytest.fixture(scope="module")
def https_registry(tmp_path_factory, pki):
    with _https_registry(tmp_path_factory.mktemp("https-registry"), pki) as registry:
        yield registry


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory, pki):
    ca, _, _ = pki
    with _https_registry(tmp_path_factory.mktemp("mtls-registry"), pki, clientcas=[str(ca.cert)]) as registry:
        yield registry


def ocipush(image, registry, repo, *args: str) -> int:
    return main([f"oci:{image.layout}:v1", f"{registry.host}/{repo}:v1", "--creds", f"alice:{PASSWORD}", *args])


def cert_dir(path, pki, *, client: bool = False):
    ca, _, client_pair = pki
    path.mkdir(parents=True)
    shutil.copy(ca.cert, path / "ca.crt")
    if client:
        shutil.copy(client_pair.cert, path / "client.cert")
        shutil.copy(client_pair.key, path / "client.key")
    return path


def test_untrusted_certificate_is_refused(https_registry, image, repo, capsys, user_config):
    assert ocipush(image, https_registry, repo) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach registry {https_registry.host}" in err
    assert "CERTIFICATE_VERIFY_FAILED" in err and "--cert-dir" in err


def test_trusted_through_cert_dir_option(https_registry, image, repo, capsys, user_config, tmp_path, pki):
    assert ocipush(image, https_registry, repo, "--cert-dir", str(cert_dir(tmp_path / "certs", pki))) == 0
    assert capsys.readouterr().out.strip() == f"{https_registry.host}/{repo}@{image.digest}"
    context = ssl.create_default_context(cafile=str(pki[0].cert))
    response = httpx.get(f"https://{https_registry.host}/v2/{repo}/manifests/v1", verify=context,
                         auth=("alice", PASSWORD), headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == image.digest


def test_trusted_through_the_users_certs_d(https_registry, image, repo, user_config, pki):
    cert_dir(user_config.certs_d(https_registry.host), pki)
    assert ocipush(image, https_registry, repo) == 0


def test_insecure_by_tls_verify_false(https_registry, image, repo, user_config):
    assert ocipush(image, https_registry, repo, "--tls-verify=false") == 0


def test_insecure_by_registries_conf_unless_tls_verify_true(https_registry, image, repo, user_config):
    user_config.registries_conf.write_text(f'[[registry]]\nlocation = "{https_registry.host}"\ninsecure = true\n')
    assert ocipush(image, https_registry, repo) == 0
    assert ocipush(image, https_registry, repo, "--tls-verify=true") == 4


def test_client_certificate(mtls_registry, image, repo, capsys, user_config, tmp_path, pki):
    assert ocipush(image, mtls_registry, repo, "--cert-dir", str(cert_dir(tmp_path / "ca-only", pki))) == 4
    assert f"cannot reach registry {mtls_registry.host}" in capsys.readouterr().err
    assert ocipush(image, mtls_registry, repo, "--cert-dir", str(cert_dir(tmp_path / "full", pki, client=True))) == 0


def test_a_docker_source_trusted_through_src_cert_dir(https_registry, image, repo, capsys, user_config, tmp_path,
                                                      pki):
    """--src-cert-dir is what lets a docker:// source over HTTPS be read: refused without it,
    read with it (the destination's --cert-dir is not asked for an OCI layout)."""
    assert ocipush(image, https_registry, repo, "--cert-dir", str(cert_dir(tmp_path / "certs", pki))) == 0
    capsys.readouterr()
    source = [f"docker://{https_registry.host}/{repo}:v1", f"oci:{tmp_path / 'out'}:v1",
              "--src-creds", f"alice:{PASSWORD}"]
    assert main(source) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"source registry {https_registry.host}" in err
    assert "CERTIFICATE_VERIFY_FAILED" in err
    assert "--src-cert-dir DIR" in err and "--src-tls-verify=false" in err  # the source's own options
    assert main([*source, "--src-cert-dir", str(tmp_path / "certs")]) == 0
    assert capsys.readouterr().out.strip().endswith(image.digest)
