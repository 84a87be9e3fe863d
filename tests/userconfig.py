"""A podman and docker user's configuration, in a temporary home of one test: auth
files, certs.d, registries.conf and ``docker-credential-*`` helpers on PATH.

The ``user_config`` fixture (tests/conftest.py, built by ``isolated_user_config``)
points ``HOME``, ``XDG_RUNTIME_DIR``, ``CONTAINERS_REGISTRIES_CONF`` and ``PATH`` at that
home and clears the other variables ocipush reads, so no test sees the machine's own
logins or registries.conf.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

_CLEARED = ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_CONFIG_HOME")

# Speaks the docker-credential-helpers protocol from a JSON store {server: [user, secret]}.
# Secrets that misbehave: "FAIL" fails the way a locked keychain does, after printing
# HELPER_LEAK on stdout (where a helper's answer, the secret, goes); "HANG" never
# answers; "FLOOD" writes without end.  Every call is logged.
HELPER_LEAK = "helper-stdout-SECRET-4e1b"
_HELPER = """\
#!{python}
import json, sys, time
server = sys.stdin.read().strip()
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + " " + server + "\\n")
store = json.load(open({store!r}))
if server not in store:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = store[server]
if secret == "FAIL":
    print(json.dumps({{"Username": user, "Secret": {leak!r}}}))
    sys.stderr.write("keychain is locked\\nsee the log for {leak}\\n")
    sys.exit(3)
if secret == "HANG":
    time.sleep(3600)
if secret == "FLOOD":
    while True:
        sys.stdout.write("x" * 65536)
print(json.dumps({{"ServerURL": server, "Username": user, "Secret": secret}}))
"""


def auth_entry(user: str, password: str, **extra: str) -> dict:
    """An ``auths`` entry as podman login and docker login write it."""
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode(), **extra}


@dataclass(frozen=True)
class UserConfig:
    home: Path
    runtime_dir: Path  # $XDG_RUNTIME_DIR
    registries_conf: Path  # $CONTAINERS_REGISTRIES_CONF
    bin: Path  # first on PATH

    @property
    def runtime_auth(self) -> Path:
        return self.runtime_dir / "containers/auth.json"

    @property
    def config_auth(self) -> Path:
        return self.home / ".config/containers/auth.json"

    @property
    def docker_config(self) -> Path:
        return self.home / ".docker/config.json"

    def certs_d(self, host: str) -> Path:
        return self.home / ".config/containers/certs.d" / host

    def write_json(self, path: Path, doc: dict) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc))
        return path

    def install_helper(self, name: str, store: dict[str, tuple[str, str]]) -> Path:
        """``docker-credential-NAME``; returns the log of its calls ("get SERVER" lines)."""
        log = self.bin / f"{name}.log"
        store_path = self.write_json(self.bin / f"{name}.json", store)
        script = self.bin / f"docker-credential-{name}"
        script.write_text(_HELPER.format(python=sys.executable, log=str(log), store=str(store_path), leak=HELPER_LEAK))
        script.chmod(0o755)
        return log


def isolated_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> UserConfig:
    """A fresh home under ``tmp_path``, with the environment pointed at it (conftest's
    ``user_config`` fixture; test modules ask for the fixture, never import it)."""
    config = UserConfig(tmp_path / "home", tmp_path / "run", tmp_path / "registries.conf", tmp_path / "bin")
    for directory in (config.home, config.runtime_dir, config.bin):
        directory.mkdir()
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(config.home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(config.runtime_dir))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(config.registries_conf))
    monkeypatch.setenv("PATH", f"{config.bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
    return config
