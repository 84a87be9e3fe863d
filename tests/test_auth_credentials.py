"""Finding a user's login where podman and docker keep it: auth files in their order,
key forms, entry forms, credential helpers."""

from __future__ import annotations

import time

import pytest

from ocipush.errors import AuthenticationError, UsageError
from ocipush.registry import credentials as credentials_module
from ocipush.registry.auth import Credentials
from ocipush.registry.credentials import AuthFiles, normalize_key
from tests.userconfig import HELPER_LEAK, auth_entry

HOST = "registry.example.com:5000"


def find(registry: str = HOST, repository: str = "team/app", authfile=None) -> Credentials | None:
    return AuthFiles.discover(authfile).find(registry, repository)


def logins(config, path, **users: str):
    """An auth file with one entry per key: key=user (password "pw-<user>")."""
    config.write_json(path, {"auths": {k.replace("__", "/"): auth_entry(u, f"pw-{u}") for k, u in users.items()}})


def test_podman_files_then_docker(user_config):
    for path, user in [(user_config.runtime_auth, "run"), (user_config.config_auth, "conf"),
                       (user_config.docker_config, "docker")]:
        user_config.write_json(path, {"auths": {HOST: auth_entry(user, f"pw-{user}")}})
    assert find() == Credentials("run", "pw-run", source=str(user_config.runtime_auth))
    user_config.runtime_auth.unlink()
    assert find().username == "conf"
    user_config.config_auth.unlink()
    assert find().username == "docker"


def test_docker_config_env_replaces_home_docker(user_config, tmp_path, monkeypatch):
    user_config.write_json(user_config.docker_config, {"auths": {HOST: auth_entry("home", "x")}})
    user_config.write_json(tmp_path / "dc/config.json", {"auths": {HOST: auth_entry("env", "x")}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert find().username == "env"


def test_named_auth_file_is_the_only_one(user_config, tmp_path, monkeypatch):
    user_config.write_json(user_config.runtime_auth, {"auths": {HOST: auth_entry("default", "x")}})
    named = user_config.write_json(tmp_path / "named.json", {"auths": {"other.example.com": auth_entry("o", "x")}})
    assert find(authfile=named) is None
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(named))
    assert find() is None
    user_config.write_json(named, {"auths": {HOST: auth_entry("named", "x")}})
    assert find().username == "named"


@pytest.mark.parametrize("how", ["--authfile", "REGISTRY_AUTH_FILE"])
def test_a_named_auth_file_must_exist(user_config, tmp_path, monkeypatch, how):
    missing = tmp_path / "nope.json"
    if how == "REGISTRY_AUTH_FILE":
        monkeypatch.setenv(how, str(missing))
    with pytest.raises(UsageError, match=f"{how} {missing}: no such file"):
        AuthFiles.discover(missing if how == "--authfile" else None)


@pytest.mark.parametrize("key", [HOST, f"https://{HOST}", f"http://{HOST}/v1/", f"https://{HOST}/", f"{HOST}/"])
def test_key_with_or_without_scheme(user_config, key):
    user_config.write_json(user_config.config_auth, {"auths": {key: auth_entry("u", "p")}})
    assert find().username == "u"


@pytest.mark.parametrize("key", ["docker.io", "index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io"])
@pytest.mark.parametrize("registry", ["docker.io", "registry-1.docker.io"])
def test_docker_hub_aliases(user_config, key, registry):
    user_config.write_json(user_config.docker_config, {"auths": {key: auth_entry("hubuser", "p")}})
    assert find(registry, "library/ubuntu").username == "hubuser"


def test_namespaced_keys_longest_prefix_wins(user_config):
    logins(user_config, user_config.config_auth, **{
        "quay.io": "host", "quay.io__team": "team", "quay.io__team__app": "app", "quay.io__tea": "tea"})
    assert find("quay.io", "team/app").username == "app"
    assert find("quay.io", "team/app/sub").username == "app"
    assert find("quay.io", "team/other").username == "team"
    assert find("quay.io", "teamx/app").username == "host"  # prefixes end at a "/"


def test_a_key_written_normally_beats_its_alias(user_config):
    user_config.write_json(user_config.docker_config, {"auths": {
        "https://index.docker.io/v1/": auth_entry("url", "p"), "docker.io": auth_entry("plain", "p")}})
    assert find("docker.io", "library/x").username == "plain"


def test_entry_forms(user_config):
    user_config.write_json(user_config.config_auth, {"auths": {
        "a.example.com": {"username": "ann", "password": "pw"},
        "b.example.com": auth_entry("00000000-0000-0000-0000-000000000000", "", identitytoken="refresh-me"),
        "c.example.com": {"auth": auth_entry("cy", "pw:with:colons")["auth"].rstrip("=")},  # padding dropped
    }})
    assert find("a.example.com") == Credentials("ann", "pw", source=str(user_config.config_auth))
    b = find("b.example.com")
    assert b.identity_token == "refresh-me" and b.password == ""
    assert find("c.example.com").password == "pw:with:colons"


def test_an_entry_without_a_secret_is_no_login(user_config):
    # docker writes {} under auths for logins kept in a credential store.
    user_config.write_json(user_config.runtime_auth, {"auths": {HOST: {}}})
    user_config.write_json(user_config.docker_config, {"auths": {HOST: auth_entry("docker", "x")}})
    assert find().username == "docker"


def test_bad_auth_value_names_file_and_key_not_the_value(user_config):
    user_config.write_json(user_config.config_auth, {"auths": {HOST: {"auth": "c2VjcmV0LXdpdGhvdXQtY29sb24="}}})
    with pytest.raises(AuthenticationError) as e:
        find()
    message = str(e.value)
    assert str(user_config.config_auth) in message and HOST in message and "c2VjcmV0" not in message


def test_malformed_file_is_named(user_config):
    user_config.config_auth.parent.mkdir(parents=True)
    user_config.config_auth.write_text("{not json")
    with pytest.raises(AuthenticationError, match=f"cannot read auth file {user_config.config_auth}"):
        find()


def test_cred_helper_for_the_host(user_config):
    log = user_config.install_helper("test", {HOST: ("helper-user", "helper-secret")})
    user_config.write_json(user_config.docker_config, {
        "credHelpers": {HOST: "test"}, "auths": {HOST: auth_entry("file", "x")}})
    assert find() == Credentials("helper-user", "helper-secret", source="docker-credential-test")
    assert log.read_text() == f"get {HOST}\n"


def test_cred_helper_identity_token(user_config):
    user_config.install_helper("test", {HOST: ("<token>", "refresh-token-1")})
    user_config.write_json(user_config.docker_config, {"credHelpers": {HOST: "test"}})
    found = find()
    assert found.identity_token == "refresh-token-1" and found.username == "" and found.password == ""


def test_creds_store_after_auths_and_hub_server_name(user_config):
    log = user_config.install_helper("store", {"https://index.docker.io/v1/": ("hub", "s")})
    user_config.write_json(user_config.docker_config, {
        "credsStore": "store", "auths": {"https://index.docker.io/v1/": {}, HOST: auth_entry("file", "x")}})
    assert find().username == "file"  # an auths entry with a secret
    assert find("registry-1.docker.io", "library/x").username == "hub"
    assert log.read_text() == "get https://index.docker.io/v1/\n"


def test_helper_without_the_login_falls_through(user_config):
    user_config.install_helper("test", {})
    user_config.write_json(user_config.runtime_auth, {"credHelpers": {HOST: "test"}})
    user_config.write_json(user_config.docker_config, {"auths": {HOST: auth_entry("docker", "x")}})
    assert find().username == "docker"


def test_helper_failures_are_one_line(user_config):
    user_config.install_helper("test", {HOST: ("u", "FAIL")})
    user_config.write_json(user_config.docker_config, {"credHelpers": {HOST: "test", "x.example.com": "absent"}})
    with pytest.raises(AuthenticationError) as e:
        find()
    # Its name, its exit code, its stderr's first line; never its stdout (the secret's place).
    assert str(e.value) == f"docker-credential-test get {HOST} failed with exit code 3: keychain is locked"
    with pytest.raises(AuthenticationError, match="docker-credential-absent, which is not on PATH"):
        find("x.example.com")


def test_a_failing_helper_never_shows_its_stdout(user_config, capsys):
    user_config.install_helper("test", {HOST: ("u", "FAIL")})
    user_config.write_json(user_config.docker_config, {"credHelpers": {HOST: "test"}})
    with pytest.raises(AuthenticationError) as e:
        find()
    assert HELPER_LEAK not in str(e.value) and HELPER_LEAK not in capsys.readouterr().err


@pytest.mark.parametrize("behaviour, message", [
    ("HANG", "no answer in 1 s"),
    ("FLOOD", "its output exceeds 65536 bytes"),
])
def test_a_helper_that_hangs_or_floods_is_stopped(user_config, monkeypatch, behaviour, message):
    monkeypatch.setattr(credentials_module, "_HELPER_TIMEOUT", 1.0)
    user_config.install_helper("test", {HOST: ("u", behaviour)})
    user_config.write_json(user_config.docker_config, {"credHelpers": {HOST: "test"}})
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match=f"^docker-credential-test get {HOST}: {message}$"):
        find()
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("answer", ['{"Username": 5, "Secret": "s"}', '["s"]', "not json", '{"Secret": {"a": 1}}'])
def test_a_helper_answer_not_in_the_protocol_is_refused(user_config, answer):
    script = user_config.bin / "docker-credential-odd"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{answer}'\n")
    script.chmod(0o755)
    user_config.write_json(user_config.docker_config, {"credHelpers": {HOST: "odd"}})
    with pytest.raises(AuthenticationError, match="its answer is not the helper protocol's JSON"):
        find()


@pytest.mark.parametrize("name", ["../../bin/sh", "a/b", "", " x"])
def test_a_helper_name_is_never_a_path(user_config, name):
    user_config.write_json(user_config.docker_config, {"credHelpers": {HOST: name}})
    with pytest.raises(AuthenticationError, match="not a plain name"):
        find()


@pytest.mark.parametrize("key, expected", [
    ("https://index.docker.io/v1/", "docker.io"), ("http://h:1/v2/", "h:1"), ("quay.io/a/b/", "quay.io/a/b"),
    ("index.docker.io/library", "docker.io/library"),
])
def test_normalize_key(key, expected):
    assert normalize_key(key) == expected


def test_credentials_never_show_their_secrets():
    creds = Credentials("alice", "s3cret-pa55", identity_token="tok-s3cret", source="/x/auth.json")
    for text in (repr(creds), str(creds), creds.describe(), Credentials("bob", "s3cret-pa55").describe()):
        assert "s3cret" not in text
    assert Credentials("bob", "p", source="--creds").describe() == "user 'bob' (from --creds)"


@pytest.mark.parametrize("doc, message", [
    ({"auths": ["x"]}, "'auths' is not a JSON object"),
    ({"credHelpers": "pass"}, "'credHelpers' is not a JSON object"),
    ({"credHelpers": {HOST: 5}}, "the credential helper's name is not a plain name"),
    ({"credsStore": ["pass"]}, "the credential helper's name is not a plain name"),
    ({"auths": {HOST: "dXNlcjpwdw=="}}, "not a JSON object"),
])
def test_a_damaged_auth_file_is_one_line_naming_it(user_config, doc, message):
    user_config.write_json(user_config.docker_config, doc)
    with pytest.raises(AuthenticationError, match=message) as e:
        find()
    assert str(user_config.docker_config) in str(e.value) and "dXNlcjpwdw" not in str(e.value)


def _not_an_auth_file(path, kind: str) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:  # a regular file past the cap: 4 MiB of JSON whitespace, then an object
        path.write_bytes(b" " * (4 << 20) + b"{}")


@pytest.mark.parametrize("kind, why", [("dev-zero", "a character device, not a regular file"),
                                       ("fifo", "a FIFO (named pipe), not a regular file"),
                                       ("oversized", "larger than 4 MiB")])
def test_an_auth_file_that_is_no_file_is_a_clean_error(user_config, kind, why):
    """``config.json`` as a symbolic link to ``/dev/zero`` was read until memory ran out, a
    FIFO blocked forever (attack report, finding 7): now one AuthenticationError, at once."""
    import threading

    _not_an_auth_file(user_config.docker_config, kind)
    raised: list[BaseException] = []

    def look() -> None:
        try:
            find()
        except BaseException as e:
            raised.append(e)

    worker = threading.Thread(target=look, daemon=True)  # a hang must fail the test, not stall it
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the FIFO reader, then fail
        with open(user_config.docker_config, "wb"):
            pass
        pytest.fail("reading the auth file hung")
    assert len(raised) == 1 and isinstance(raised[0], AuthenticationError), raised
    assert str(raised[0]) == f"cannot read auth file {user_config.docker_config}: {why}"
