"""What the user names on the command line, parsed once into values.

- A registry ``Reference`` in docker's grammar: ``[docker://]HOST[:PORT]/REPO[:TAG|@DIGEST]``.
- A ``LayoutReference``: ``oci:PATH[:TAG]`` or ``oci-archive:PATH[:TAG]`` on disk.
- ``DestinationRef`` is either one; ``parse_destination`` tells them apart.
- A ``SourceSpec``: ``TRANSPORT:PATH[:REF]`` (or ``TRANSPORT:IMAGE`` for an engine, or
  ``docker://`` and a ``Reference`` for a registry, which ``ocipush.remote`` reads), which
  the readers in ``ocipush.sources`` open without splitting the text again.

Normalisation follows docker and containers/image: a first component that has no ``.``
or ``:`` and is not ``localhost`` (nor has upper case) is a Docker Hub path, so
``ubuntu`` is ``docker.io/library/ubuntu:latest``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TypeAlias

import attrs

from .digest import Digest
from .errors import UsageError

__all__ = [
    "DEFAULT_TAG",
    "DOCKER_HUB",
    "ENGINE_TRANSPORTS",
    "HUB_ALIASES",
    "LAYOUT_TRANSPORTS",
    "SOURCE_TRANSPORTS",
    "STDIN_PATH",
    "STDIN_TRANSPORTS",
    "DestinationRef",
    "LayoutReference",
    "Reference",
    "SourceSpec",
    "check_printable",
    "check_spec",
    "docker_repo_tag",
    "is_loopback_host",
    "parse_destination",
    "parse_source",
    "reads_stdin",
]

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"
# Docker Hub's API does not live at docker.io.
_HUB_API_HOST = "registry-1.docker.io"
# Every name Docker Hub goes by (auth files key it by any of them; docker writes the v1 URL).
HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", "registry-1.docker.io"})

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
    """A registry destination. ``registry`` is as written (normalised for Docker Hub)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        original = text
        masked = _mask_userinfo(text)
        if masked != text:
            raise UsageError(f"invalid reference {masked!r}: credentials do not belong in a reference; "
                             "use --creds, --password-stdin or an auth file")
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
        if registry in HUB_ALIASES:
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


@attrs.frozen
class LayoutReference:
    """``oci:PATH[:TAG]``, ``oci-archive:PATH[:TAG]`` or ``docker-archive:PATH[:REPO:TAG]``
    as a destination (for docker-archive, ``tag`` is the whole ``REPO:TAG``)."""

    transport: str  # one of LAYOUT_TRANSPORTS
    path: str
    tag: str | None = None
    digest: Digest | None = None  # never given by the user; set on the result

    def with_digest(self, digest: Digest) -> LayoutReference:
        return attrs.evolve(self, digest=digest)

    def __str__(self) -> str:
        text = f"{self.transport}:{self.path}" + (f":{self.tag}" if self.tag else "")
        return f"{text}@{self.digest}" if self.digest else text


# Where a push may go: the one reference type of destinations (the writers that open one
# are ``ocipush.destinations``).
DestinationRef: TypeAlias = Reference | LayoutReference

LAYOUT_TRANSPORTS = ("oci", "oci-archive", "docker-archive")
# Transports of containers-transports(5) we read but do not write.
_NOT_WRITABLE = ("docker-daemon", "containers-storage", "dir")


def parse_destination(text: str) -> DestinationRef:
    """A layout on disk when ``text`` starts with its transport, else a registry reference."""
    transport, sep, rest = text.partition(":")
    if sep and transport in LAYOUT_TRANSPORTS:
        check_spec(text, "destination")
        path, _, tag = rest.partition(":")
        check_spec(path, "destination path")
        check_printable(tag, "destination tag")
        if not path:
            raise UsageError(f"{text!r}: missing the path")
        if transport == "docker-archive" and tag:
            tag = docker_repo_tag(tag)
        return LayoutReference(transport, path, tag or None)
    if sep and transport in _NOT_WRITABLE:
        raise UsageError(
            f"destination transport {transport!r} is not supported; "
            "push to a registry, oci:, oci-archive: or docker-archive:"
        )
    return Reference.parse(text)


def docker_repo_tag(text: str) -> str:
    """``docker-archive:PATH:REPO[:TAG]``'s name as ``docker save`` writes it in
    ``RepoTags``: normalised (``:latest`` added, as skopeo does), then familiar (Docker
    Hub's ``docker.io/library/`` dropped); a digest is refused, as skopeo refuses it."""
    ref = Reference.parse(text)
    if ref.digest is not None:
        raise UsageError(f"invalid docker-archive destination name {text!r}: a docker archive names REPO:TAG, "
                         "not a digest")
    name = ref.name.removeprefix(f"{DOCKER_HUB}/")
    if ref.registry == DOCKER_HUB:
        name = name.removeprefix("library/")
    return f"{name}:{ref.tag}"


# An engine names an IMAGE (which may hold colons), not a PATH[:REF].
ENGINE_TRANSPORTS = ("docker-daemon", "containers-storage")
# The transports of containers-transports(5) we read, and how each is written.
_SOURCE_FORMS = {
    "oci": "oci:PATH[:REF]",
    "oci-archive": "oci-archive:PATH[:REF]",
    "docker-archive": "docker-archive:PATH[:REPO:TAG|@N]",
    "docker-daemon": "docker-daemon:IMAGE",
    "containers-storage": "containers-storage:IMAGE",
    "dir": "dir:PATH",
    "docker": "docker://HOST/REPO[:TAG|@DIGEST]",
}
SOURCE_TRANSPORTS = tuple(_SOURCE_FORMS)
_SUPPORTED = ", ".join(_SOURCE_FORMS.values())


@attrs.frozen
class SourceSpec:
    """A source as ``TRANSPORT:PATH[:REF]``, checked and split once; every transport in
    it can be opened (``ocipush.sources.open_source``)."""

    transport: str  # one of the keys of _SOURCE_FORMS
    path: str  # a file or directory; for ENGINE_TRANSPORTS, the engine's IMAGE
    ref: str | None = None  # which image of the layout or archive; None for an engine
    text: str = attrs.field(default="", eq=False)  # as the user wrote it, for messages
    reference: Reference | None = None  # the image on a registry, for ``docker://``

    def __str__(self) -> str:
        return self.text or f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")


def parse_source(text: str) -> SourceSpec:
    """``TRANSPORT:DETAILS`` → a SourceSpec, or a UsageError naming the text.

    PATH and REF split at the first colon, as in containers/image, so paths with colons
    are not supported there either.
    """
    check_spec(text, "source")
    transport, sep, rest = text.partition(":")
    if not sep or transport not in SOURCE_TRANSPORTS:
        raise UsageError(f"unknown source transport in {text!r}: use one of {_SUPPORTED}")
    if transport == "dir":
        return _parse_dir(rest, text)
    if transport == "docker":  # a registry, read by ocipush.remote: docker://HOST/REPO[:TAG|@DIGEST]
        if not rest.startswith("//"):
            raise UsageError(f"{text!r}: a registry source is docker://HOST/REPO[:TAG|@DIGEST]")
        reference = Reference.parse(text)
        return SourceSpec(transport, reference.name, str(reference.digest or reference.tag), text, reference)
    if transport in ENGINE_TRANSPORTS:
        if not rest:
            raise UsageError(f"{text!r}: missing the image name")
        check_printable(rest, "image name")
        return SourceSpec(transport, rest, None, text)
    path, _, ref = rest.partition(":")
    check_spec(path, "source path")
    check_printable(ref, "source REF")
    if not path:
        raise UsageError(f"{text!r}: missing the {'layout' if transport == 'oci' else 'archive'} path")
    return SourceSpec(transport, path, ref or None, text)


# Archives that ``TRANSPORT:-`` reads from standard input (a file named ``-`` is ``./-``).
STDIN_TRANSPORTS = ("docker-archive", "oci-archive")
STDIN_PATH = "-"


def reads_stdin(spec: SourceSpec) -> bool:
    """Whether the source is an archive piped to standard input (``docker-archive:-``)."""
    return spec.transport in STDIN_TRANSPORTS and spec.path == STDIN_PATH


def _parse_dir(path: str, text: str) -> SourceSpec:
    """``dir:PATH``: the whole rest is the path, colons and all, as containers/image reads
    it (a directory holds one image: there is no REF to split off)."""
    check_spec(path, "source path")
    if not path:
        raise UsageError(f"{text!r}: missing the directory path")
    if path == STDIN_PATH:
        raise UsageError(f"{text!r}: a directory cannot come on standard input; name a directory called - as dir:./-")
    return SourceSpec("dir", path, None, text)


def _mask_userinfo(text: str) -> str:
    """``text`` with the password of a URL-style ``USER:PASSWORD@HOST/…`` replaced by
    ``***``, for messages: a reference is echoed in errors and CI logs keep them.  An
    ``@`` before the first ``/`` that is not followed by a digest (``name@sha256:…``)
    starts the host; whatever sits between the first ``:`` and it is the secret."""
    prefix = "docker://" if text.startswith("docker://") else ""
    rest = text[len(prefix):]
    userinfo, at, host = rest.partition("@")
    if not at or "/" in userinfo or _is_digest(host):
        return text
    user, colon, _ = userinfo.partition(":")
    return f"{prefix}{user}{colon}{'***' if colon else ''}@{host}"


def _is_digest(text: str) -> bool:
    try:
        Digest.parse(text)
    except ValueError:
        return False
    return True


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
