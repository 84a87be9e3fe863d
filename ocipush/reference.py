"""Registry references in docker's grammar: ``[docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]``.

Normalisation follows docker and containers/image: a first component that has no ``.``
or ``:`` and is not ``localhost`` (nor has upper case) is a Docker Hub path, so
``ubuntu`` is ``docker.io/library/ubuntu:latest``.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from .digest import Digest
from .errors import UsageError

__all__ = ["DEFAULT_TAG", "DOCKER_HUB", "Reference", "check_printable", "check_spec", "is_loopback_host"]

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"
# Docker Hub's API does not live at docker.io.
_HUB_API_HOST = "registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

# Every pattern is used with fullmatch: ``$`` also matches before a trailing newline, so
# ``host/img:v1\n`` from a CI variable would pass and break later. ASCII only: ``\w`` would
# otherwise take any letter of any script, and docker's grammar is ASCII.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*", re.ASCII)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(
    rf"(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?", re.ASCII
)
_MAX_NAME = 255


@attrs.frozen
class Reference:
    """A parsed destination. ``registry`` is as written (normalised for Docker Hub)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        original = text
        check_printable(text, "reference")
        text = text.removeprefix("docker://")
        if not text:
            raise UsageError("empty image reference")

        def bad(why: str) -> UsageError:
            return UsageError(f"invalid reference {original!r}: {why}")

        name, digest = text, None
        if "@" in text:
            name, _, dig = text.partition("@")
            try:
                digest = Digest.parse(dig)
            except ValueError as e:
                raise bad(str(e)) from None
        tag = None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:  # a colon after the last slash is a tag, not a port
            name, tag = name[:colon], name[colon + 1 :]
            if not _TAG_RE.fullmatch(tag):
                raise bad(f"invalid tag {tag!r}")
        if tag and digest:
            # containers/image refuses these for destinations too: which one would we push?
            raise bad("give a tag or a digest, not both")

        first, sep, rest = name.partition("/")
        if sep and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
            registry, path = first, rest
            if not _HOST_RE.fullmatch(registry):
                raise bad(f"invalid registry host {registry!r}")
            port = registry.rpartition(":")[2] if not registry.endswith("]") else ""
            if port.isascii() and port.isdigit() and not 0 < int(port) < 65536:
                raise bad(f"invalid port {port} (1 to 65535)")
        else:
            registry, path = DOCKER_HUB, name
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
            if "/" not in path:
                path = f"library/{path}"
        if not _PATH_RE.fullmatch(path):
            raise bad(f"invalid repository name {path!r} (lower case letters, digits, separators)")
        if len(registry) + 1 + len(path) > _MAX_NAME:
            raise bad(f"name longer than {_MAX_NAME} characters")
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry, path, tag, digest)

    @property
    def api_host(self) -> str:
        """The host:port that serves ``/v2/`` for this registry."""
        return _HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def is_loopback(self) -> bool:
        host = self.registry.rsplit(":", 1)[0] if not self.registry.endswith("]") else self.registry
        return is_loopback_host(host)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: Digest) -> Reference:
        return attrs.evolve(self, tag=None, digest=digest)

    def __str__(self) -> str:
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}"


def check_printable(text: str, what: str, *, spaces: bool = False) -> None:
    """UsageError unless ``text`` is free of control characters and of whitespace (but
    plain spaces, with ``spaces``: a path may hold them), naming ``what`` and the text
    escaped. A newline or a tab pasted from a CI variable is the usual culprit; quoted
    whole, the message shows it as ``\\n`` instead of breaking the line."""
    for c in text:
        if c.isprintable() and not c.isspace():
            continue
        if c == " " and spaces:
            continue
        kind = "whitespace" if c.isspace() else "a control character"
        raise UsageError(f"invalid {what} {text!r}: {kind} ({c!r}) is not allowed in it")


def check_spec(text: str, what: str) -> None:
    """A ``TRANSPORT:PATH[:REF]`` as the user wrote it: a path may hold inner spaces, but
    no control characters, and nothing leads or trails (a CI variable's stray newline or
    space would otherwise name another file)."""
    check_printable(text, what, spaces=True)
    if text != text.strip(" "):
        raise UsageError(f"invalid {what} {text!r}: leading or trailing spaces")


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (``[::1]`` brackets allowed), without a port."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
