"""Strict readers of what a registry (or anything between us and it) sends.

Everything from the network is untrusted: a header value is parsed by an exact grammar,
numbers are ASCII digits of bounded length (``int("²")`` and 5,000-digit numbers never
reach arithmetic), and a body is read up to a limit chosen for its purpose.  Anything
that does not parse is a ``RegistryError`` that names the header or the body, never a
traceback.

The grammars (docs/chunked-upload.md lists them for users):

- ``Range``:  ``0-END`` (``bytes=0-END``, ``bytes 0-END`` tolerated), END at most 18 ASCII digits, or
  ``0--1``, serverless-registry's "nothing stored yet";
- ``OCI-Chunk-Min-Length`` / ``OCI-Chunk-Max-Length``: 1 to 18 ASCII digits, not 0;
- ``Retry-After``: delta-seconds (ASCII digits) or an IMF-fixdate, capped at an hour;
  anything else is *ignored*, not an error: the header only ever comes with a failure we
  are already retrying, and our own backoff is a sound answer to it;
- ``Location``: printable ASCII, at most 8 KiB, resolvable against the request's URL to an
  ``http``/``https`` URL with a host;
- ``Docker-Content-Digest``: the OCI digest grammar (sha256 or sha512, lower-case hex).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import httpx

from ..digest import Digest
from ..errors import RegistryError, UploadError

__all__ = [
    "BODY_LIMITS",
    "MAX_RETRY_AFTER",
    "chunk_length",
    "content_digest",
    "location",
    "parse_range",
    "read_bounded",
    "redact_text",
    "redact_url",
    "resolve_location",
    "retry_after",
    "strict_int",
    "what_of",
]

# The most we read of a body, by purpose; past it the answer is refused.  Registries
# answer errors in a few hundred bytes, tokens in a few KB, manifests in at most 4 MiB
# (distribution's own limit).
BODY_LIMITS = {
    "error": 64 * 1024,
    "token": 1024 * 1024,
    "manifest": 4 * 1024 * 1024,
}

_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only (str.isdigit() accepts "²"); below 2**63


def strict_int(value: str | None, what: str, *, maximum: int = 2**62) -> int:
    """A non-negative decimal of ASCII digits, at most ``maximum``; ``what`` names its
    origin in the error ("header OCI-Chunk-Max-Length from POST https://…")."""
    text = (value or "").strip()
    if not _DIGITS.fullmatch(text) or int(text) > maximum:
        raise RegistryError(f"{what}: {_shown(text)} is not a number from 0 to {maximum}")
    return int(text)


def _shown(text: str) -> str:
    """A header value as a message may quote it: short, control characters escaped."""
    cut = text if len(text) <= 40 else text[:40] + "…"
    return repr(cut)


def _shown_url(text: str) -> str:
    """A URL a message may quote: without its query, which may carry a signature or an
    upload's state token (``_state=``)."""
    head, sep, _ = text.partition("?")
    return _shown(head) + (" (query not shown)" if sep else "")


def what_of(response: httpx.Response, header: str) -> str:
    """``header Range from PATCH http://host/v2/…?…``: the header and the request, query
    redacted (upload locations and redirects may carry signatures)."""
    request = response.request
    url = request.url.copy_with(query=None, fragment=None)
    return f"header {header} from {request.method} {url}{'?…' if request.url.query else ''}"


# -- Range ---------------------------------------------------------------------------------

_RANGE = re.compile(r"(?:bytes[= ])?0-([0-9]{1,18})")
_NOTHING = "0--1"  # serverless-registry: nothing stored yet (the end before byte 0)


def parse_range(value: str | None, what: str) -> int | None:
    """A ``Range: 0-END`` answer → how many bytes the registry holds (END + 1); ``0--1``
    → 0; None when absent.  ``0-0`` is ambiguous (distribution says it for an empty upload
    too): that is for the caller, who knows whether anything was sent."""
    if value is None:
        return None
    text = value.strip()
    if text == _NOTHING:
        return 0
    match = _RANGE.fullmatch(text)
    if match is None:
        raise RegistryError(f"{what}: {_shown(text)} is not a range 0-END")
    return int(match[1]) + 1


# -- OCI-Chunk-Min-Length / OCI-Chunk-Max-Length ----------------------------------------------


def chunk_length(value: str | None, what: str) -> int | None:
    """A chunk limit in bytes: None when absent; 0, garbage or more than 18 digits → error."""
    if value is None:
        return None
    text = value.strip()
    if not _DIGITS.fullmatch(text) or int(text) == 0:
        raise RegistryError(f"{what}: {_shown(text)} is not a positive number of bytes")
    return int(text)


# -- Retry-After -----------------------------------------------------------------------------

MAX_RETRY_AFTER = 3600.0  # seconds; the retry policy caps the wait itself lower still
_DELTA = re.compile(r"[0-9]{1,64}")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IMF_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) (" + "|".join(_MONTHS) + r") ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` asks us to wait, from 0 to ``MAX_RETRY_AFTER``; ``now`` is
    the current POSIX time (an HTTP-date is relative to it).  None when absent or not in
    the grammar: an unreadable hint is ignored, never fatal (see the module docstring)."""
    text = (value or "").strip()
    if _DELTA.fullmatch(text):  # more than 18 digits is more than an hour anyway
        return MAX_RETRY_AFTER if len(text) > 18 else min(float(int(text)), MAX_RETRY_AFTER)
    match = _IMF_FIXDATE.fullmatch(text)
    if match is None:
        return None
    day, month, year, hour, minute, second = match.groups()
    try:
        when = datetime(int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second),
                        tzinfo=UTC)
    except ValueError:  # 31 Feb, hour 25, year 0000
        return None
    delay = when.timestamp() - now
    return min(max(delay, 0.0), MAX_RETRY_AFTER) if math.isfinite(delay) else None


# -- Location --------------------------------------------------------------------------------

MAX_LOCATION = 8192  # presigned URLs run to 2-3 KB; a longer value is not a location
_URI_CHARS = re.compile(r"[\x21-\x7e]+")  # RFC 3986 URI-reference: printable ASCII, no space
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def location(response: httpx.Response) -> str:
    """The ``Location`` of ``response`` as an absolute URL: resolved against the URL that
    answered (the spec allows relative ones), and only ``http``/``https`` with a host.
    Missing or unusable → ``UploadError`` naming the header and the request."""
    request = response.request
    value = response.headers.get("Location")
    if not value:
        raise UploadError(
            f"{request.method} {redact_url(request.url)}: {response.status_code} without a Location header"
        )
    return resolve_location(request.url, value, what_of(response, "Location"))


def resolve_location(base: httpx.URL | str, value: str, what: str) -> str:
    """``value`` resolved against ``base``, checked as ``location`` says."""
    text = value.strip()
    if len(text) > MAX_LOCATION or not _URI_CHARS.fullmatch(text):
        raise UploadError(f"{what}: {_shown_url(text)} is not a URL (printable ASCII, at most {MAX_LOCATION})")
    try:
        # An absolute value stands alone: join() would quietly fill a missing host ("http://").
        url = httpx.URL(text) if _SCHEME.match(text) else httpx.URL(str(base)).join(text)
        scheme, host, port, userinfo = url.scheme, url.host, url.port, url.userinfo
    except (httpx.InvalidURL, ValueError, TypeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UploadError(f"{what}: {_shown_url(text)} is not a URL ({reason})") from None
    if scheme not in ("http", "https") or not host:
        raise UploadError(f"{what}: {_shown_url(text)} is not an http(s) URL with a host")
    if port is not None and not 0 < port < 65536:
        raise UploadError(f"{what}: {_shown_url(text)} has no valid port")
    if userinfo:  # httpx would turn it into Basic credentials of the server's choosing
        raise UploadError(f"{what}: a URL with a user name or password is refused")
    return str(url)


def redact_url(url: httpx.URL) -> str:
    """A URL for messages: its query may carry a signature or an upload's state."""
    return str(url.copy_with(query=None, fragment=None)) + ("?…" if url.query else "")


# -- Docker-Content-Digest -------------------------------------------------------------------


def content_digest(value: str | None, what: str) -> Digest | None:
    """The digest a registry says it stored: None when absent, an error when not a digest
    (a registry that cannot name what it stored is not one to leave the blob with)."""
    if value is None:
        return None
    try:
        return Digest.parse(value.strip())
    except ValueError:
        raise RegistryError(f"{what}: {_shown(value.strip())} is not a digest") from None


# -- bodies ----------------------------------------------------------------------------------


def read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    """The body of a streamed ``response``, refused when it exceeds ``limit`` bytes
    (``what`` names the request for the message).  Closes the response either way."""
    chunks: list[bytes] = []
    size = 0
    try:
        for block in response.iter_bytes():
            size += len(block)
            if size > limit:
                raise RegistryError(f"{what}: the answer's body exceeds {limit} bytes; refused")
            chunks.append(block)
    finally:
        response.close()
    return b"".join(chunks)


def redact_text(url: str) -> str:
    """A URL httpx cannot parse, shown without its query and at most 200 characters."""
    head, sep, _ = str(url).partition("?")
    head = "".join(c if c.isprintable() else "?" for c in head)[:200]
    return head + ("?…" if sep else "")
