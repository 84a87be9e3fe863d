"""TLS for one registry the way podman and docker set it up: which CAs and client
certificates, and whether the user made the registry insecure.

- Verification against the system store, always, plus the CAs of the registry's cert
  directory: ``--cert-dir``, else the first of ``~/.config/containers/certs.d/HOST:PORT``,
  ``/etc/containers/certs.d/HOST:PORT``, ``/etc/docker/certs.d/HOST:PORT`` that exists.
  In it, ``*.crt`` are CAs, and ``NAME.cert`` with ``NAME.key`` a client certificate.
- Insecure (unverified HTTPS, then plain HTTP) only by the user's choice:
  ``--tls-verify=false``, or ``insecure = true`` for the host in registries.conf
  (``$CONTAINERS_REGISTRIES_CONF``, else ``~/.config/containers/registries.conf`` or
  else ``/etc/containers/registries.conf``, plus the ``registries.conf.d`` drop-ins).
  An explicit ``--tls-verify=true`` wins over registries.conf, as in podman.
"""

from __future__ import annotations

import os
import ssl
import tomllib
from pathlib import Path
from typing import Any

import attrs

from ..errors import UsageError
from ..localfile import MAX_CONFIG, NotRegularFile, read_regular

__all__ = ["RegistryTLS", "find_cert_dir", "marked_insecure", "registry_tls"]

_SYSTEM_CERTS_D = (Path("/etc/containers/certs.d"), Path("/etc/docker/certs.d"))
_SYSTEM_REGISTRIES_CONF = Path("/etc/containers/registries.conf")


@attrs.frozen(eq=False)
class RegistryTLS:
    context: ssl.SSLContext
    insecure: bool  # the user allows unverified HTTPS and plain HTTP for this registry
    cert_dir: Path | None  # where its CAs and client certificate came from


def registry_tls(
    host: str, *, verify: bool | None = None, cert_dir: Path | None = None, flags: str = "--"
) -> RegistryTLS:
    """``verify`` None: verify unless registries.conf marks ``host`` insecure; ``flags``: how
    this side's options start, for messages (``--src-`` for a docker:// source)."""
    insecure = not verify if verify is not None else marked_insecure(host)
    if cert_dir is not None and not cert_dir.is_dir():
        raise UsageError(f"{flags}cert-dir {cert_dir}: not a directory")
    cert_dir = cert_dir or find_cert_dir(host)
    context = ssl.create_default_context()  # the system store, like podman and docker
    if cert_dir:
        _load_cert_dir(context, cert_dir)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return RegistryTLS(context, insecure, cert_dir)


def find_cert_dir(host: str) -> Path | None:
    """The registry's own directory under certs.d: the user's before the system's, as in podman."""
    roots = (_home() / ".config/containers/certs.d", *_SYSTEM_CERTS_D)
    return next((root / host for root in roots if (root / host).is_dir()), None)


def _load_cert_dir(context: ssl.SSLContext, directory: Path) -> None:
    files = sorted(p for p in directory.iterdir() if p.is_file())
    names = {p.name for p in files}
    for path in files:
        if path.suffix in (".crt", ".cert", ".key"):
            try:
                _read_config(path)  # regular and bounded, before OpenSSL reads it whole
            except OSError as e:
                raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
        try:
            if path.suffix == ".crt":
                context.load_verify_locations(cafile=path)
            elif path.suffix == ".cert":
                key = path.with_suffix(".key")
                if key.name not in names:
                    raise UsageError(f"{path}: client certificate without its key {key.name}")
                context.load_cert_chain(path, key)
            elif path.suffix == ".key" and path.with_suffix(".cert").name not in names:
                raise UsageError(f"{path}: key without its client certificate {path.with_suffix('.cert').name}")
        except ssl.SSLError as e:
            raise UsageError(f"{path}: not a usable PEM certificate or key ({e.reason or e})") from None


def marked_insecure(host: str) -> bool:
    """``insecure`` of the registries.conf entry for ``host``: an exact ``prefix`` (or
    ``location``) first, else the longest ``*.domain`` wildcard.  Entries with a path
    (``host/namespace``) name repositories, which TLS settings cannot tell apart; and
    mirrors and rewrites are not followed: ocipush pushes where it is told."""
    exact: bool | None = None
    wildcard: tuple[int, bool] | None = None
    name = host.rsplit(":", 1)[0] if ":" in host and not host.endswith("]") else host
    for entry in _registry_entries():
        prefix = entry.get("prefix") or entry.get("location") or ""
        insecure = bool(entry.get("insecure", False))
        if prefix == host:
            exact = insecure  # a later file's entry replaces an earlier one
        elif (
            prefix.startswith("*.")
            and "/" not in prefix
            and name.endswith(prefix[1:])
            and (wildcard is None or len(prefix) >= wildcard[0])
        ):
            wildcard = (len(prefix), insecure)
    if exact is not None:
        return exact
    return wildcard[1] if wildcard else False


def _registry_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for path in _registries_conf_files():
        try:
            doc = tomllib.loads(_read_config(path).decode())
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise UsageError(f"cannot read {path}: {e}") from None
        entries.extend(e for e in doc.get("registry", []) if isinstance(e, dict))
    return entries


def _read_config(path: Path) -> bytes:
    """A registries.conf or certs.d file: a regular file (a FIFO would block, ``/dev/zero``
    never end) of at most MAX_CONFIG bytes; UsageError naming it otherwise."""
    try:
        return read_regular(path, MAX_CONFIG)
    except NotRegularFile as e:
        raise UsageError(f"cannot read {path}: {e.kind}, not a regular file") from None
    except ValueError:
        raise UsageError(f"cannot read {path}: larger than {MAX_CONFIG >> 20} MiB") from None


def _registries_conf_files() -> list[Path]:
    if os.environ.get("CONTAINERS_REGISTRIES_CONF"):  # what podman's tests and ours use to isolate
        return [Path(os.environ["CONTAINERS_REGISTRIES_CONF"])]
    user = _home() / ".config/containers/registries.conf"
    main = user if user.exists() else _SYSTEM_REGISTRIES_CONF
    dropins = [d / "registries.conf.d" for d in (_SYSTEM_REGISTRIES_CONF.parent, user.parent)]
    return [main, *(p for d in dropins if d.is_dir() for p in sorted(d.glob("*.conf")))]


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())
