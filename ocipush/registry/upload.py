"""Uploading one blob: check, initiate, stream, commit — the chunked protocol of the
OCI distribution spec 1.1, as serverless registries need it — under one retry loop.

- check:    ``HEAD /v2/<repo>/blobs/<digest>``; 200 means there is nothing to do.
- initiate: ``POST /v2/<repo>/blobs/uploads/`` → 202, a ``Location`` and the optional
            ``OCI-Chunk-Min-Length`` / ``OCI-Chunk-Max-Length`` limits.
- stream:   one ``PATCH`` per chunk with ``Content-Range: start-end`` → 202 (ECR: 201);
            each answer's ``Range`` must say the registry holds exactly what we sent, and
            its ``Location`` (which may carry state, e.g. ``_state=``) is the next URL.
- commit:   ``PUT <location>&digest=…`` with an empty body (serverless-registry fails
            with 500 when the final PUT carries data) → 201 and ``Docker-Content-Digest``.

Retries (``retry.py``): N per request, a chunk's resends and status ``GET``s sharing one
budget; N restarts per blob, this loop's own (a 413's smaller chunk aside).

Every header read goes through ``headers.py``'s strict grammars: one that does not
parse is a one-line ``RegistryError`` naming the header and the request.

When a chunk fails, we ask the registry where the upload stands (``GET <location>`` →
``204`` and ``Range``) and go on from there: the chunk again, or the next one when it did
arrive (serverless-registry says ``Range: 0--1`` when it holds nothing: offset 0, the
first chunk again on the same upload).  When the upload is gone (404,
``BLOB_UPLOAD_INVALID``/``UNKNOWN`` — the CNCF registry invalidates an upload whose PATCH
answer was lost; serverless-registry answers 500 to a stale one) or stands where the
equal-chunk rule cannot continue, the blob starts again with a new POST.

A ``413`` means a body limit nobody announced (a proxy's).  The size is halved for the
rest of the push (``HostLimits.too_large``), and when the registry still holds the upload
at the refused chunk's start (a ``GET`` says so: the proxy refused it before the registry
saw it), the same bytes go again, in pieces of the new size, on the same upload: a file's
chunk re-reads its slice, a compressed one its spill, so nothing is compressed twice.
The blob starts again only where the registry's rules force it: a registry that announced
``OCI-Chunk-Min/Max-Length`` (serverless-registry, whose chunks must all equal the first)
is re-cut only from offset 0 into equal pieces; and a registry that answers a re-cut's
smaller pieces with ``416`` showed that rule (``HostLimits.equal_chunks``).
Every request is counted for ``--json`` (``uploadstate.UploadStats``).

A failed commit ``PUT`` (any status) is checked with one ``HEAD``: serverless-registry
stores the blob, then answers a resent PUT with 500; a blob there, our size, is committed.

The bytes come from a ``BlobContent`` that can give any chunk again, verified after the
last chunk and before the commit: a corrupt source is never committed.

Resume (``content.UploadJournal``, kept by ``resume.py``; this module never imports it):
every upload is recorded when it begins and after every chunk the registry confirms, and
forgotten when committed or cancelled.  The next run's first attempt at the blob asks the
registry where a recorded upload stands (``GET`` → ``Range``, the strict grammar) and goes
on from there if ``uploadstate.resume_problem`` finds nothing wrong: the registry's word
wins when it is within the recorded offset, or beyond it by at most the one chunk whose
confirmation the killed run did not get to record, and on the recorded chunk grid
(serverless-registry's equal chunks).  A record naming another origin, an upload gone
(404), a registry that cannot say (no ``GET`` on uploads) or an answer off the grid: the
blob starts afresh, with a note.  The bytes before the offset are read again locally (a
file's are hashed, a recompressed stream is produced again, deterministic), and the
commit's digest check decides: a ``DIGEST_INVALID`` after a resume restarts the blob once,
with a note.  Retries exhausted on a network or server failure keep the upload and its
record (no ``DELETE``) for the next run; so does an interrupt with ``--keep-partial``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from ..chunks import HostLimits, content_range
from ..content import BlobContent, ChunkBody, UploadJournal, UploadOutcome, UploadPoint
from ..digest import Digest
from ..errors import RegistryError, SourceUnavailable, UploadError
from . import headers
from .auth import for_repository
from .client import RegistryClient, redact
from .retry import Budget, is_transient
from .transport import origin_of
from .uploadstate import (
    Refused,
    Restart,
    Session,
    UploadStats,
    contradiction,
    held_bytes,
    judge,
    locate,
    resume_problem,
)

__all__ = ["BlobContent", "BlobUploader", "ChunkBody", "UploadJournal", "UploadOutcome"]

MIN_HEADER = "OCI-Chunk-Min-Length"
MAX_HEADER = "OCI-Chunk-Max-Length"
_GONE_CODES = {"BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN"}
# A status GET that got no word from the registry itself (no answer, a gateway or a
# throttle): not a verdict on the upload.  500 is one (serverless-registry's for a stale upload).
_UNANSWERED = {None, 408, 429, 502, 503, 504}
T = TypeVar("T")


class BlobUploader:
    """Uploads blobs to one repository through a shared client; thread-safe."""

    def __init__(self, client: RegistryClient, repository: str, limits: HostLimits):
        self.client = client
        self.repository = repository
        self.limits = limits
        self.on_note: Callable[[str], None] = lambda message: None
        self._open: dict[int, Session] = {}  # uploads begun and not yet committed or cancelled
        self._kept: dict[int, Session] = {}  # uploads an interrupt left open (--keep-partial)
        self._lock = threading.Lock()
        self._aborted = False
        self._local = threading.local()  # .stats: the counters of the blob this thread uploads

    def abort(self) -> None:
        """Cancel every open upload now, from any thread, and start no new one: for Ctrl-C,
        when the threads that own them may be stuck waiting on the registry.  The requests
        in flight end (or are cut, after ``client.interrupt``'s grace) first: a DELETE that
        overtakes a PATCH, or carries the state from before it, leaves the upload in the
        CNCF registry's storage.  Each DELETE goes where the upload's last answer said.
        With ``--keep-partial`` (the journal's ``keep_partial``), recorded uploads are kept
        instead, for the next run; a chunk confirmed meanwhile is still recorded."""
        with self._lock:
            self._aborted = True
            sessions = list(self._open.values())
            self._open.clear()  # ours to cancel: the stopping threads must not DELETE them too
            kept = [s for s in sessions if s.journal is not None and s.journal.keep_partial]
            self._kept.update((id(s), s) for s in kept)
        kept_ids = {id(s) for s in kept}
        for session in kept:
            assert session.journal is not None
            session.journal.kept()
        self.client.interrupt()
        with self.client.cleanup():
            for session in sessions:
                if id(session) not in kept_ids:
                    self._delete(self.client.moved_to(session.location))
                    if session.journal is not None:
                        session.journal.done()

    def upload(self, blob: BlobContent, journal: UploadJournal | None = None) -> UploadOutcome:
        """Upload ``blob``; with a ``journal``, resume the upload an earlier run left and
        record this one's progress for a later run (see the module docstring)."""
        stats = self._local.stats = UploadStats()
        try:
            return self._upload(blob, stats, journal)
        finally:
            self._local.stats = None
            if journal is not None:
                journal.release()

    def _upload(self, blob: BlobContent, stats: UploadStats, journal: UploadJournal | None) -> UploadOutcome:
        if blob.digest is not None and self.exists(blob.digest, blob.size):
            if journal is not None:
                self._drop_recorded(journal)
            return stats.outcome("skipped", blob.digest)
        restarts = self.client.retry.budget()  # the blob's own: N new uploads at most
        first = True
        resumed_once = False  # a resume whose commit failed its digest check: not again
        try:
            while True:
                if not first:
                    stats.restarts += 1
                    stats.retries += 1
                resumed = self._resume(journal, blob, stats) if first and journal is not None else None
                first = False
                session, start = resumed or (self._initiate(journal), 0)
                try:
                    self._stream(session, blob, session.chunk_size, stats, start)
                    if blob.size is not None and blob.size < start:
                        raise Restart(UploadError(f"the resumed upload holds {start} bytes, the blob has "
                                                  f"{blob.size}"))
                    digest = blob.finish()
                    self._commit(session, digest, stats.sent)
                    if self._close(session) and journal is not None:
                        journal.done()
                    return stats.outcome("uploaded", digest)
                except Restart as restart:
                    self._cancel(session)
                    if restart.reason.status == 413:
                        continue  # the chunk size shrank; HostLimits.too_large ends this
                    if resumed is not None and not resumed_once:
                        # The bytes the earlier run left differ from ours (another compressor
                        # build, a record pointing elsewhere): this blob, once more, from byte 0.
                        resumed_once = True
                        stats.resumed_at = None
                        self.on_note(f"blob {_short(blob)}: the upload resumed at {start} bytes could not be "
                                     f"finished ({restart.reason}); uploading the blob again from its start")
                        continue
                    if "DIGEST_INVALID" in restart.reason.codes:
                        # Bytes got damaged on the way: once may be bad luck, twice is not.
                        if stats.digest_mismatches:
                            raise UploadError(
                                f"the registry computed another digest than {blob.digest} twice "
                                f"(DIGEST_INVALID): something between us corrupts uploads"
                            ) from None
                        stats.digest_mismatches += 1
                    if not restarts.spend(restart.reason):
                        raise restart.reason from None
                except BaseException as error:
                    if not self._keep(session, error):
                        self._cancel(session)
                    raise
        finally:
            blob.close()

    # -- resuming -------------------------------------------------------------------

    def _resume(self, journal: UploadJournal, blob: BlobContent, stats: UploadStats) -> tuple[Session, int] | None:
        """The upload an earlier run left for this blob, and where the registry says it
        stands; None (with a note) when there is none to go on with: the blob starts afresh."""
        point = journal.resume_point()
        if point is None:
            return None
        what = f"blob {_short(blob)}: the upload an earlier run left at {point.offset} bytes"
        if not self._same_origin(point.url):
            self.on_note(f"{what} is on another origin than {self.client.base_url}; ignored")
            return None
        session = Session(location=point.url, minimum=point.minimum, maximum=point.maximum,
                          chunk_size=point.chunk_size, journal=journal)
        with self._lock:
            self._open[id(session)] = session
        if not journal.resume:
            self._cancel(session)
            self.on_note(f"{what} is cancelled (--no-resume)")
            return None
        held, problem = self._where(session, point, blob.size)
        if problem is not None:
            self._cancel(session)
            self.on_note(f"{what} cannot be resumed ({problem}); uploading the blob from its start")
            return None
        assert held is not None
        stats.resumed_at = held
        self.on_note(f"blob {_short(blob)}: resuming the upload an earlier run left, at {held} bytes")
        self._confirm(session, held)
        return session, held

    def _where(self, session: Session, point: UploadPoint, size: int | None) -> tuple[int | None, str | None]:
        """The bytes the registry holds of the upload recorded at ``point``, by a ``GET``
        (with retries), and why they cannot be gone on from (None when they can).  A GET
        the registry itself did not answer (the network still down, a gateway's 503)
        raises: what the registry holds is not thrown away, the record stays for the next run."""
        try:
            response = self._idempotent("GET", session.location, expect=(204,),
                                        extensions=for_repository(self.repository))
        except RegistryError as e:
            if e.status in _UNANSWERED:
                self._close(session)
                assert session.journal is not None
                session.journal.kept()
                raise
            return None, str(e)  # gone (404), no GET on uploads (405)
        try:
            held = self._held(session, response, point.offset)
        except RegistryError as e:  # a Range or Location that does not parse
            return None, str(e)
        return held, resume_problem(point, held, size)

    def _held(self, session: Session, response: httpx.Response, recorded: int) -> int | None:
        """The bytes the status answer ``response`` says the registry holds; its
        ``Location``, if any, is where the upload goes on."""
        answer = f"GET {redact(session.location)}"
        if response.headers.get("Location"):
            session.location = headers.resolve_location(
                session.location, response.headers["Location"], f"header Location from {answer}")
        return held_bytes(response.headers.get("Range"), recorded, f"header Range from {answer}")

    def _same_origin(self, url: str) -> bool:
        try:
            theirs, ours = httpx.URL(url), httpx.URL(self.client.base_url)
        except httpx.InvalidURL:
            return False
        # No user name or password either: httpx would send them as Basic credentials.
        return not theirs.userinfo and origin_of(theirs) == origin_of(ours)

    def _drop_recorded(self, journal: UploadJournal) -> None:
        """The blob is there already: an upload an earlier run left for it is cancelled."""
        point = journal.resume_point()
        if point is not None:
            if self._same_origin(point.url):
                self._delete(point.url)
            journal.done()

    def _confirm(self, session: Session, offset: int) -> None:
        """Record where the upload stands, while it is ours (not after Ctrl-C cancelled it)."""
        if session.journal is None:
            return
        with self._lock:
            if id(session) in self._open or id(session) in self._kept:
                session.journal.confirmed(UploadPoint(session.location, offset, session.chunk_size,
                                                      session.minimum, session.maximum))

    def _keep(self, session: Session, error: BaseException) -> bool:
        """After retries were exhausted on a network or server failure (the destination's,
        or a ``docker://`` source's that fed the upload): keep the upload and its record for
        the next run instead of cancelling it.  True when kept."""
        journal = session.journal
        stats = self._stats()
        if journal is None or self._aborted or stats is None:
            return False
        if stats.exhausted is not error and not isinstance(error, SourceUnavailable):
            return False
        if not self._close(session):
            return False
        journal.kept()  # said once, on the failed push's error line (cli), not per upload
        return True

    # -- the steps ------------------------------------------------------------------

    def exists(self, digest: Digest, size: int | None = None) -> bool:
        """Whether the repository holds the blob: a ``HEAD`` 200 whose ``Content-Length``
        equals ``size`` (when known) and whose ``Docker-Content-Digest``, if sent, is
        ``digest``.  A 200 that contradicts either is a registry that lies (or a link the
        registry describes instead of the blob): "not there", so the blob is uploaded."""
        url = self.client.url(f"/v2/{self.repository}/blobs/{digest}")
        response = self._idempotent("HEAD", url, expect=(200, 404), follow_redirects=True)
        if response.status_code != 200:
            return False
        contradicts = contradiction(response, digest, size)
        if contradicts:
            self.on_note(f"blob {digest.short}: HEAD {redact(url)} answered 200 but {contradicts}; uploading it")
        return contradicts is None

    def mount(self, digest: Digest, from_repository: str) -> bool:
        """Ask the registry to link a blob it holds in another repository: 201 means done.
        A 202 is the registry declining (it opened an upload instead, which we cancel when
        its Location is usable; one that is not names nothing we could cancel)."""
        query = f"mount={quote(str(digest), safe=':')}&from={quote(from_repository, safe='/')}"
        url = self.client.url(f"/v2/{self.repository}/blobs/uploads/?{query}")
        try:
            response = self.client.idempotent("POST", url, expect=(201, 202), headers={"Content-Length": "0"})
            if response.status_code == 202 and response.headers.get("Location"):
                self._delete(headers.location(response))
        except RegistryError:
            return False  # a refused mount is never fatal: the upload follows
        return response.status_code == 201

    def _initiate(self, journal: UploadJournal | None = None) -> Session:
        if self._aborted:
            raise UploadError("the push was interrupted")
        url = self.client.url(f"/v2/{self.repository}/blobs/uploads/")
        response = self._idempotent("POST", url, expect=(202,), headers={"Content-Length": "0"})
        location = headers.location(response)
        try:
            minimum, maximum = (
                headers.chunk_length(response.headers.get(name), headers.what_of(response, name))
                for name in (MIN_HEADER, MAX_HEADER)
            )
        except RegistryError:
            self._delete(location)  # the upload exists, its limits are unreadable: free it
            raise
        chunk_size = self.limits.chunk_size(minimum, maximum)
        session = Session(location=location, minimum=minimum, maximum=maximum, chunk_size=chunk_size,
                          journal=journal)
        with self._lock:
            self._open[id(session)] = session
        self._confirm(session, 0)  # recorded from its first byte: a kill before any chunk leaves it
        return session

    # -- counting ---------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """``client.request``, counted for the blob this thread uploads."""
        stats = self._stats()
        if stats is not None:
            stats.methods[method] = stats.methods.get(method, 0) + 1
        return self.client.request(method, url, **kwargs)

    def _idempotent(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.retry.run(lambda: self._request(method, url, **kwargs), on_retry=self._on_retry)

    def _retried(self, attempt: Callable[[], T], budget: Budget | None = None) -> T:
        """``retry.run`` for an upload's step: a transient error it raises has used up the
        retries, which ``_keep`` must know (a header that does not parse was never retried)."""
        try:
            return self.client.retry.run(attempt, on_retry=self._on_retry, budget=budget)
        except RegistryError as e:
            stats = self._stats()
            if stats is not None and is_transient(e):
                stats.exhausted = e
            raise

    def _stats(self) -> UploadStats | None:
        """The counters of the blob this thread uploads (None outside ``upload``)."""
        stats: UploadStats | None = getattr(self._local, "stats", None)
        return stats

    def _on_retry(self, error: RegistryError) -> None:
        stats = self._stats()
        if stats is not None:
            stats.retries += 1
        self.client.on_retry(error)

    # -- streaming ------------------------------------------------------------------

    def _stream(
        self, session: Session, blob: BlobContent, chunk_size: int | None, stats: UploadStats, start: int = 0
    ) -> None:
        """Every chunk from ``start``, each cut into pieces when a 413 taught a smaller size
        (``_piece``); each one the registry confirmed is recorded."""
        stats.sent = start
        for chunk in blob.chunks(chunk_size, start):
            if chunk.offset != stats.sent:  # a resumed stream that goes on past an off-grid end
                raise Restart(UploadError(f"the resumed upload holds {stats.sent} bytes, not a chunk boundary, "
                                          f"and the blob goes on past it"))
            offset = chunk.offset
            while offset < chunk.end:
                piece = self._piece(session, chunk, offset)
                try:
                    self._send(session, piece, chunk, stats)
                except Refused:
                    continue  # the same offset again, in smaller pieces
                offset = stats.sent = piece.end
                self._confirm(session, offset)

    def _piece(self, session: Session, chunk: ChunkBody, offset: int) -> ChunkBody:
        """The next body of ``chunk`` from ``offset``: the whole chunk, unless a 413 taught
        a smaller size.  A registry without announced limits gets the size learnt by any
        upload of the push; one with them keeps its session's (its chunks must be equal)."""
        size = session.piece
        if session.minimum is None and session.maximum is None and not self.limits.equal_chunks:
            size = min(x for x in (size, self.limits.learnt, chunk.length) if x)
        if offset == chunk.offset and (size is None or size >= chunk.length):
            return chunk
        length = min(size or chunk.length, chunk.end - offset)
        if length != chunk.length:
            session.recut = True
        return chunk.piece(offset, length)

    def _send(self, session: Session, piece: ChunkBody, chunk: ChunkBody, stats: UploadStats) -> None:
        """One body, resent after transient failures; ``Refused`` after a 413 the upload survives."""
        budget = self.client.retry.budget()  # this chunk's: its resends and status GETs
        while (error := self._send_chunk(session, piece, stats)) is not None:
            if error.status == 413:
                self._shrink(session, piece, chunk, error, budget, stats)
                raise Refused()
            if not budget.spend(error):
                stats.exhausted = error
                raise error
            stats.retries += 1
            if self._resync(session, piece, budget):
                break  # the registry has the chunk after all
        stats.chunk_size = max(stats.chunk_size or 0, piece.length)
        self.limits.accepted(piece.length)

    def _shrink(
        self, session: Session, piece: ChunkBody, chunk: ChunkBody, error: RegistryError, budget: Budget,
        stats: UploadStats,
    ) -> None:
        """After a 413: learn the smaller size, then go on with it on this upload if the
        registry still holds it at the piece's start; else ``Restart``.  A registry with
        announced limits (whose chunks must be equal) is re-cut only at offset 0, into
        pieces that divide the chunk."""
        stats.refused += 1
        stats.chunk_size = None  # the bodies sent from now on are the smaller ones
        smaller = self.limits.too_large(piece.length, session.minimum)
        strict = session.minimum is not None or session.maximum is not None or self.limits.equal_chunks
        if strict and (piece.offset != 0 or chunk.length % smaller):
            raise Restart(error)
        if session.held_at != piece.offset:  # a 413 after one at the same offset changed nothing
            if self._status(session, piece, budget) != piece.offset:
                raise Restart(error)
            session.held_at = piece.offset
        session.piece = smaller

    def _status(self, session: Session, chunk: ChunkBody, budget: Budget | None = None) -> int | None:
        """Where the upload stands by a ``GET``: the bytes held; ``Restart`` when gone.
        A failed ``GET`` spends ``budget`` (the chunk's: it has none of its own)."""

        def status() -> httpx.Response:
            try:
                return self._request("GET", session.location, expect=(204,),
                                     extensions=for_repository(self.repository))
            except RegistryError as e:
                if e.status == 404 or _GONE_CODES & set(e.codes):
                    raise Restart(e) from None
                raise

        response = self._retried(status, budget)
        answer = f"GET {redact(session.location)}"
        return locate(session, chunk, answer, response.headers.get("Range"), response.headers.get("Location"))

    def _send_chunk(self, session: Session, chunk: ChunkBody, stats: UploadStats) -> RegistryError | None:
        """None when the registry confirmed the chunk; the error of a transient failure or a 413."""
        try:
            response = self._request(
                "PATCH",
                session.location,
                expect=(202, 201),  # 201: ECR
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": content_range(chunk.offset, chunk.length),
                    "Content-Length": str(chunk.length),
                },
                content=chunk,
                extensions=for_repository(self.repository),  # Location is opaque: the auth flow's scope
            )
        except RegistryError as e:
            if e.status == 413:
                return e
            if e.status == 404 or _GONE_CODES & set(e.codes):
                raise Restart(e) from None
            if e.status == 416:
                # Out of order for the registry: its Range and Location say where it stands.
                answer = f"PATCH {redact(session.location)}"
                held = locate(session, chunk, answer, e.headers.get("range"), e.headers.get("location"))
                arrived = judge(session, chunk, held)
                if not arrived and session.recut:
                    # It holds the piece's start yet refuses it: smaller pieces broke its
                    # equal-chunk rule. Learnt for the push; the blob starts again.
                    self.limits.equal_chunks = True
                    raise Restart(e) from None
                return None if arrived else e
            if not is_transient(e):
                raise
            return e
        stats.accepted += 1
        # After data arrived, 0-0 is 1 byte.
        held = headers.parse_range(response.headers.get("Range"), headers.what_of(response, "Range"))
        if held is not None and held != chunk.end:
            raise UploadError(
                f"PATCH {redact(session.location)}: registry holds {held} bytes after a chunk "
                f"ending at {chunk.end}",
                status=response.status_code,
            )
        session.location = headers.location(response)
        return None

    def _resync(self, session: Session, chunk: ChunkBody, budget: Budget) -> bool:
        """After a failed chunk: ask where the upload stands. True if it holds the chunk.
        A failed ``GET`` spends the chunk's ``budget``: it has none of its own."""
        return judge(session, chunk, self._status(session, chunk, budget))

    def _commit(self, session: Session, digest: Digest, size: int) -> None:
        sep = "&" if "?" in session.location else "?"
        url = f"{session.location}{sep}digest={quote(str(digest), safe=':')}"

        def put() -> httpx.Response | None:
            """The answer, or None when the blob is committed although the PUT failed."""
            try:
                return self._request("PUT", url, expect=(201, 204), headers={"Content-Length": "0"},
                                     extensions=for_repository(self.repository))
            except RegistryError as e:
                # Whatever the status: an earlier PUT whose answer we lost may have committed
                # it (serverless-registry then answers 500 to the same PUT; distribution 404).
                if self._committed(digest, size):
                    return None
                if _GONE_CODES & set(e.codes) or e.status == 404 or "DIGEST_INVALID" in e.codes:
                    raise Restart(e) from None
                raise

        response = self._retried(put)
        if response is None:
            return
        got = headers.content_digest(
            response.headers.get("Docker-Content-Digest"), headers.what_of(response, "Docker-Content-Digest")
        )
        if got is not None and got != digest:
            raise UploadError(f"PUT {redact(url)}: registry stored {got}, expected {digest}")

    def _committed(self, digest: Digest, size: int) -> bool:
        """Whether the registry holds ``digest`` with the ``size`` we sent, by one ``HEAD``
        (no retries: a failing commit has waited enough) that ``_contradiction`` accepts;
        anything else, an error included, is "not committed"."""
        url = self.client.url(f"/v2/{self.repository}/blobs/{digest}")
        try:
            response = self._request("HEAD", url, expect=(200, 404), follow_redirects=True)
        except RegistryError:
            return False
        return response.status_code == 200 and contradiction(response, digest, size) is None

    def _cancel(self, session: Session, timeout: float | None = None) -> None:
        if self._close(session):  # not already committed or cancelled
            self._delete(session.location, timeout)
            if session.journal is not None:
                session.journal.done()

    def _delete(self, location: str, timeout: float | None = None) -> None:
        """Best effort: free the registry's half-finished upload."""
        try:
            extra = {"timeout": timeout} if timeout else {}
            self._request("DELETE", location, expect=(202, 204, 404),
                          extensions=for_repository(self.repository), **extra)
        except Exception:
            pass

    def _close(self, session: Session) -> bool:
        with self._lock:
            return self._open.pop(id(session), None) is not None


def _short(blob: BlobContent) -> str:
    return blob.digest.short if blob.digest is not None else "(being compressed)"
