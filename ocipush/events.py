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

    def note(self, message: str) -> None: ...


class Events(Notes, Protocol):
    """Every method may be called from any thread.

    A blob goes through states: ``checking`` (does the destination have it?), then
    ``uploading`` or ``compressing`` (compressed while it uploads), then a final action:
    ``uploaded``, ``skipped`` (the destination had it) or ``mounted`` (linked from another
    repository)."""

    def blob_state(self, desc: Descriptor, state: str) -> None: ...

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        """Bytes of the blob sent so far (it may go back when a chunk is resent)."""

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None: ...

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None: ...


class Silent:
    """Says nothing: the default when a library caller passes no reporter."""

    def note(self, message: str) -> None:
        pass

    def blob_state(self, desc: Descriptor, state: str) -> None:
        pass

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        pass

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None:
        pass

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None:
        pass
