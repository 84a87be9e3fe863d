"""Strict readers of what a registry (or anything between us and it) sends.

Everything from the network is untrusted: a header value is parsed by an exact grammar,
numbers are ASCII digits of bounded length (``int("²")`` and 5,000-digit numbers never
reach arithmetic), and a body is read up to a limit chosen for its purpose.  Anything
that does not parse is a ``RegistryError`` that names the header or the body, never a
traceback.
"""

from __future__ import annotations

import re

import httpx

from ..errors import RegistryError

__all__ = ["BODY_LIMITS", "read_bounded", "strict_int"]

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
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise RegistryError(f"{what}: {shown!r} is not a number from 0 to {maximum}")
    return int(text)


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
