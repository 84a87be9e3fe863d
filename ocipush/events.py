"""What a push says while it runs, as an interface: the orchestrator and the destinations
tell an ``Events``; the face (``report.py``) decides how it is shown.

It lives at the bottom of the layers so that ``push`` and ``destinations`` report without
importing the face: ``report.Reporter`` and its subclasses satisfy these Protocols.
"""

from __future__ import annotations

from typing import Protocol

from .models import Descriptor

__all__ = ["Events", "Notes", "Silent"]


class Notes(Protocol):
    """All a destination says: a line for the user (a retry, a learnt limit)."""

    def note(self, message: str) -> None:
        """Said now, between the blobs' progress."""

    def note_at_end(self, topic: str, message: str) -> None:
        """Said once, after the push (after the bars and the manifest lines): what the push
        learnt, which only its last value makes true (the chunk size a ``413`` taught).  A
        later note on the same ``topic`` replaces the earlier one, so a destination may
        say it every time it learns more; the reporter says the last one."""


class Events(Notes, Protocol):
    """Every method may be called from any thread.

    A blob goes through states: ``checking`` (does the destination have it?), then
    ``compressing`` for a layer compressed on the way (its first chunk is being made),
    ``uploading`` once its first bytes go out, then a final action: ``uploaded``,
    ``skipped`` (the destination had it) or ``mounted`` (linked from another
    repository).  After ``compressing`` the blob's positions count compressed bytes, whose
    total is unknown until it is finished."""

    def blob_state(self, desc: Descriptor, state: str) -> None: ...

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        """Bytes of the blob sent so far (it may go back when a chunk is resent)."""

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None: ...

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None: ...


class Silent:
    """Says nothing: the default when a library caller passes no reporter."""

    def note(self, message: str) -> None:
        pass

    def note_at_end(self, topic: str, message: str) -> None:
        pass

    def blob_state(self, desc: Descriptor, state: str) -> None:
        pass

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        pass

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None:
        pass

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None:
        pass
