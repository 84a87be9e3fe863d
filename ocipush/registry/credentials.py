"""Where a podman or docker user's registry login already is: auth files and credential helpers.

Files, in podman's order and then docker's; the first file with an entry for the
registry wins:

1. ``--authfile``, else ``$REGISTRY_AUTH_FILE`` — when the user names a file, it is the
   only one (as in podman: a named file must exist);
2. ``$XDG_RUNTIME_DIR/containers/auth.json`` (``/run/containers/UID/auth.json`` without
   it), then ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config``);
3. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``.

In one file: ``credHelpers[host]`` runs that helper; else the ``auths`` entry for the
longest prefix of ``host/repository`` (podman's namespaced keys), keys compared without
``http(s)://`` and with Docker Hub's aliases as one; else ``credsStore`` runs the default
helper.  An entry carries ``auth`` (base64 of ``user:password``), or ``username`` and
``password``, and may carry ``identitytoken`` (an OAuth2 refresh token).

Errors name the file and key, never the value: a malformed entry is still a secret.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import re
import stat
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import attrs

from ..errors import AuthenticationError, UsageError
from ..localfile import MAX_CONFIG, NotRegularFile, file_kind, read_regular
from ..models import load_json
from ..reference import DOCKER_HUB, HUB_ALIASES
from .auth import Credentials
from .tokens import printable

__all__ = ["AuthFiles", "check_authfile", "normalize_key"]

_HUB_HELPER_SERVER = "https://index.docker.io/v1/"
_HELPER_TIMEOUT = 60.0  # a helper may ask the user to unlock a keychain
_HELPER_OUTPUT_LIMIT = 64 * 1024  # an answer is a few hundred bytes of JSON
_HELPER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a name on PATH, never a path


def normalize_key(key: str) -> str:
    """An ``auths``/``credHelpers`` key as ``host[/namespace…]``: a URL key counts by its
    host only (docker once wrote ``https://host/v1/``), Docker Hub is ``docker.io``."""
    stripped = key.removeprefix("https://").removeprefix("http://")
    if stripped != key:
        stripped = stripped.split("/", 1)[0]
    host, sep, path = stripped.rstrip("/").partition("/")
    return (DOCKER_HUB if host in HUB_ALIASES else host) + sep + path


def check_authfile(path: str | os.PathLike[str], option: str = "--authfile") -> None:
    """A file the user names must exist (as in podman); checked before anything else is
    done, so a typo never reaches a registry.  A FIFO or a device (``/dev/zero``) is not
    an auth file: refused here, without opening it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise UsageError(f"{option} {path}: no such file") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{option} {path}: {file_kind(mode)}, not a regular file")


@attrs.frozen
class AuthFiles:
    """The auth files to consult, in order; missing ones are skipped when read."""

    paths: tuple[Path, ...]

    @classmethod
    def discover(cls, authfile: Path | None = None) -> AuthFiles:
        env = os.environ
        named, option = (authfile, "--authfile") if authfile else (env.get("REGISTRY_AUTH_FILE"), "REGISTRY_AUTH_FILE")
        if named:
            check_authfile(named, option)
            return cls((Path(named),))
        home = Path(env.get("HOME") or Path.home())
        runtime = Path(env["XDG_RUNTIME_DIR"]) if env.get("XDG_RUNTIME_DIR") else Path(f"/run/containers/{os.getuid()}")
        config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
        return cls((runtime / "containers/auth.json", config / "containers/auth.json", docker / "config.json"))

    def find(self, registry: str, repository: str) -> Credentials | None:
        """The credentials for pushing to ``registry/repository``, or None."""
        for path in self.paths:
            found = _find_in_file(path, normalize_key(registry), repository)
            if found is not None:
                return found
        return None


def _find_in_file(path: Path, host: str, repository: str) -> Credentials | None:
    try:
        data = read_regular(path, MAX_CONFIG)  # never a hang on a FIFO, nor /dev/zero read whole
    except FileNotFoundError:
        return None
    except NotRegularFile as e:
        raise AuthenticationError(f"cannot read auth file {path}: {e.kind}, not a regular file") from None
    except OSError as e:
        raise AuthenticationError(f"cannot read auth file {path}: {e.strerror or e}") from None
    except ValueError:
        raise AuthenticationError(f"cannot read auth file {path}: larger than {MAX_CONFIG >> 20} MiB") from None
    doc = load_json(data, error=lambda why: AuthenticationError(f"cannot read auth file {path}: {why}"))
    if not isinstance(doc, dict):
        raise AuthenticationError(f"auth file {path}: not a JSON object")
    helpers = {normalize_key(k): v for k, v in _section(doc, "credHelpers", path).items()}
    if host in helpers:
        return _run_helper(helpers[host], host, f"{path} (credHelpers)")
    entries = _auth_entries(_section(doc, "auths", path))
    name = f"{host}/{repository}"
    while True:  # the longest prefix first: host/a/b, host/a, host
        key = entries.get(name)
        if key is not None:
            found = _decode_entry(doc["auths"][key], f"{path} (auths[{key!r}])", str(path))
            if found is not None:
                return found
        if "/" not in name:
            break
        name = name.rsplit("/", 1)[0]
    if doc.get("credsStore"):
        return _run_helper(doc["credsStore"], host, f"{path} (credsStore)")
    return None


def _section(doc: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    """``auths`` or ``credHelpers``: absent, or an object (a file is the user's, but it may
    be damaged or written by another tool)."""
    section = doc.get(name) or {}
    if not isinstance(section, dict):
        raise AuthenticationError(f"auth file {path}: {name!r} is not a JSON object")
    return section


def _auth_entries(auths: Mapping[str, object]) -> dict[str, str]:
    """Normalized key → the key as written; a key written in normal form beats its aliases."""
    entries: dict[str, str] = {}
    for key in sorted(auths, key=lambda k: normalize_key(k) != k):
        entries.setdefault(normalize_key(key), key)
    return entries


def _decode_entry(entry: object, where: str, source: str) -> Credentials | None:
    """None for an entry without a secret: docker writes ``{}`` for logins kept in a helper."""
    if not isinstance(entry, dict):
        raise AuthenticationError(f"{where}: not a JSON object")
    identity = entry.get("identitytoken") or ""
    if entry.get("auth"):
        value = entry["auth"]
        try:
            # Some writers drop the base64 padding.
            raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, TypeError):
            raise AuthenticationError(f"{where}: \"auth\" is not base64 of user:password") from None
        username, sep, password = raw.partition(":")
        if not sep:
            raise AuthenticationError(f"{where}: \"auth\" is not base64 of user:password")
    else:
        username, password = entry.get("username") or "", entry.get("password") or ""
    if not password and not identity:
        return None
    return Credentials(username, password, identity_token=identity, source=source)


def _run_helper(name: str, host: str, where: str) -> Credentials | None:
    """``docker-credential-NAME get`` with the server on stdin, as docker runs it.

    Its stdout may hold the secret, so no message ever shows it: a failure names the
    helper, its exit code and at most the first line of its stderr."""
    if not isinstance(name, str) or not _HELPER_NAME_RE.fullmatch(name):
        raise AuthenticationError(f"{where}: the credential helper's name is not a plain name (letters, digits, ._-)")
    program = f"docker-credential-{name}"
    server = _HUB_HELPER_SERVER if host == "docker.io" else host
    result = _run_bounded([program, "get"], server, where)
    if result.returncode != 0:
        # The helper protocol's "not found" is a message on stdout (docker-credential-helpers).
        if b"credentials not found" in result.stdout.lower():
            return None
        first = result.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
        detail = ": " + printable(first[0], 200) if first else ""
        raise AuthenticationError(f"{program} get {server} failed with exit code {result.returncode}{detail}")
    not_protocol = AuthenticationError(f"{program} get {server}: its answer is not the helper protocol's JSON")
    doc = load_json(result.stdout, error=lambda _: not_protocol)
    if not isinstance(doc, dict):
        raise not_protocol
    username, secret = doc.get("Username") or "", doc.get("Secret") or ""
    if not isinstance(username, str) or not isinstance(secret, str):
        raise not_protocol
    if not secret:
        return None
    if username == "<token>":  # the helper protocol's way of saying "an identity token"
        return Credentials("", identity_token=secret, source=program)
    return Credentials(username, secret, source=program)


def _run_bounded(args: list[str], stdin: str, where: str) -> subprocess.CompletedProcess[bytes]:
    """Run a helper with a deadline and bounded output: one that hangs, or writes without
    end, is killed and reported instead of hanging the push or filling memory."""
    try:
        process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise AuthenticationError(f"{where} names the credential helper {args[0]}, which is not on PATH") from None
    except OSError as e:
        raise AuthenticationError(f"{where}: cannot run the credential helper {args[0]}: {e.strerror}") from None
    outputs = [_BoundedReader(_pipe(process.stdout), process.kill), _BoundedReader(_pipe(process.stderr), process.kill)]
    try:
        with contextlib.suppress(OSError):  # a helper may exit without reading its stdin
            _pipe(process.stdin).write(stdin.encode())
        with contextlib.suppress(OSError):
            _pipe(process.stdin).close()
        process.wait(timeout=_HELPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AuthenticationError(f"{' '.join(args)} {stdin}: no answer in {_HELPER_TIMEOUT:g} s") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for reader in outputs:
            reader.join()
    if any(reader.overflowed for reader in outputs):
        raise AuthenticationError(f"{' '.join(args)} {stdin}: its output exceeds {_HELPER_OUTPUT_LIMIT} bytes")
    return subprocess.CompletedProcess(args, process.returncode, outputs[0].data, outputs[1].data)


def _pipe(stream: IO[bytes] | None) -> io.BufferedIOBase:
    """One of the pipes Popen made (``PIPE``, buffered): typeshed cannot know it is there."""
    if not isinstance(stream, io.BufferedIOBase):
        raise TypeError(f"not a buffered pipe: {stream!r}")
    return stream


class _BoundedReader(threading.Thread):
    """Reads a pipe up to _HELPER_OUTPUT_LIMIT bytes; past that, ``stop`` (kill the
    helper) and drain the rest."""

    def __init__(self, pipe: io.BufferedIOBase, stop: Callable[[], None]):
        super().__init__(daemon=True)
        self.pipe, self.stop, self.data, self.overflowed = pipe, stop, b"", False
        self.start()

    def run(self) -> None:
        with self.pipe:
            while block := self.pipe.read1(65536):
                if len(self.data) + len(block) > _HELPER_OUTPUT_LIMIT:
                    if not self.overflowed:
                        self.overflowed = True
                        with contextlib.suppress(OSError):
                            self.stop()
                else:
                    self.data += block

    def join(self, timeout: float | None = 5.0) -> None:  # a grandchild may keep the pipe open
        super().join(timeout)
