"""The state of one blob's upload, apart from the protocol steps (``upload.py``): the
session the registry opened, the counters ``--json`` reports, and how its answers about
a blob or an upload are read.

Counters, per blob (``UploadOutcome`` carries them): every request sent, by method,
whatever its answer (a refused PATCH, a failed GET, the DELETE of a cancelled upload);
``retries``, every request sent again after a transient failure plus every new upload;
``restarts``, the new uploads alone; ``refused``, the requests answered ``413``.
"""

from __future__ import annotations

import attrs
import httpx

from ..content import ChunkBody, UploadJournal, UploadOutcome, UploadPoint
from ..digest import Digest
from ..errors import RegistryError, UploadError
from . import headers
from .client import redact

__all__ = [
    "Refused", "Restart", "Session", "UploadStats", "contradiction", "held_bytes", "judge", "locate", "resume_problem",
]


@attrs.define
class Session:
    location: str
    minimum: int | None
    maximum: int | None
    piece: int | None = None  # after a 413: the size its chunks are re-cut to
    recut: bool = False  # a chunk was sent in pieces on this upload
    held_at: int | None = None  # a status GET after a 413 found the upload holding this many bytes
    chunk_size: int | None = None  # every chunk but the last on this upload (None: one request)
    journal: UploadJournal | None = attrs.field(default=None, eq=False, repr=False)  # its record, for a resume


class Refused(Exception):
    """A 413 on a chunk the upload can go on from: send it again in pieces of ``session.piece``."""


class Restart(Exception):
    """This upload cannot go on; start the blob again with a new POST."""

    def __init__(self, reason: RegistryError):
        self.reason = reason



@attrs.define
class UploadStats:
    """One blob's counters, for ``--json`` (``UploadOutcome``'s fields say what each means)."""

    methods: dict[str, int] = attrs.field(factory=dict)  # every request sent, by method
    accepted: int = 0  # chunks the registry took
    retries: int = 0
    restarts: int = 0
    refused: int = 0
    chunk_size: int | None = None
    digest_mismatches: int = 0
    sent: int = 0  # the end of the last chunk the registry confirmed
    resumed_at: int | None = None  # an earlier run's upload went on from here
    exhausted: RegistryError | None = None  # the transient error that used up a step's retries

    def outcome(self, action: str, digest: Digest) -> UploadOutcome:
        return UploadOutcome(action, digest, self.accepted, self.chunk_size, self.retries, dict(self.methods),
                             self.restarts, self.refused, self.resumed_at)


def resume_problem(point: UploadPoint, held: int | None, size: int | None) -> str | None:
    """Why the upload recorded at ``point`` cannot go on from the ``held`` bytes the
    registry reports (for a blob of ``size`` bytes, None while unknown); None when it can.

    The registry's word wins when it is at most the recorded offset (it never confirmed
    more, or the record was changed), or beyond it by the one chunk a killed run may have
    had confirmed without getting to record it.  It must fall on the recorded chunk grid:
    every chunk of an upload but the last has the same size (serverless-registry's rule),
    so a resume can only go on at a multiple of it, or at the blob's end — which, for a
    stream whose size is known only at its end (``size`` None), the uploader checks then."""
    if held is None:
        return "the registry does not say how many bytes it holds (no Range)"
    step = point.chunk_size
    if held > point.offset + (step or 0):
        return f"the registry holds {held} bytes, more than the {point.offset} recorded and one chunk"
    if size is not None and held > size:
        return f"the registry holds {held} bytes, more than the blob's {size}"
    if held and size is not None and held != size and (step is None or held % step):
        return f"the registry holds {held} bytes, not a multiple of the upload's chunk size {step}"
    return None


def locate(session: Session, chunk: ChunkBody, answer: str, range_: str | None, location: str | None
            ) -> int | None:
    """The bytes a 416 or a status answer (``answer`` names its request) says the
    upload holds; its ``Location``, if any, is where the upload goes on."""
    if location:
        session.location = headers.resolve_location(session.location, location, f"header Location from {answer}")
    return held_bytes(range_, chunk.offset, f"header Range from {answer}")

def judge(session: Session, chunk: ChunkBody, held: int | None) -> bool:
    """True if the upload holds the chunk, False to send it again; else start over."""
    if held == chunk.end:
        return True
    if held == chunk.offset:
        return False  # send it again (``0--1``: nothing stored, the first chunk again)
    # Anywhere else would break the equal-chunk rule (or the registry lost data).
    holds = "does not say how many bytes it holds" if held is None else f"holds {held} bytes"
    raise Restart(UploadError(
        f"{redact(session.location)}: the registry {holds}, expected {chunk.offset} or {chunk.end}",
    ))


def held_bytes(value: str | None, expected_offset: int, what: str) -> int | None:
    """Bytes the registry holds per its ``Range``. ``0-0`` is ambiguous (distribution says
    it for an empty upload too): read as 0 when we have not sent anything before."""
    if value is not None and value.strip() == "0-0" and expected_offset == 0:
        return 0
    return headers.parse_range(value, what)


def contradiction(response: httpx.Response, digest: Digest, size: int | None) -> str | None:
    """How a blob ``HEAD`` 200 contradicts the descriptor, or None when it confirms it:
    its ``Content-Length`` must be ``size`` (when known) and its ``Docker-Content-Digest``,
    when sent, ``digest``; a value that does not parse contradicts too."""
    try:
        if size is not None:
            length = headers.strict_int(
                response.headers.get("Content-Length"), headers.what_of(response, "Content-Length")
            )
            if length != size:
                return f"says {length} bytes where the descriptor says {size}"
        named = headers.content_digest(
            response.headers.get("Docker-Content-Digest"), headers.what_of(response, "Docker-Content-Digest")
        )
    except RegistryError as e:
        return str(e)
    if named is not None and named != digest:
        return f"names digest {named}"
    return None
