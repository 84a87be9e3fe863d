"""What a push tells the user while it runs. The orchestrator calls a ``Reporter``;
the CLI picks one. Messages go to stderr; only the result goes to stdout."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from .mediatypes import is_index
from .models import Descriptor
from .units import format_size

__all__ = ["LineReporter", "Reporter"]


class Reporter:
    """The silent reporter, and the interface: every method may be called from any thread."""

    def blob_started(self, desc: Descriptor) -> None: ...

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        """Bytes of the blob sent so far (it may go back when a chunk is resent)."""

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None: ...

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None: ...

    def note(self, message: str) -> None: ...


class LineReporter(Reporter):
    """One plain line per event: for logs and terminals alike."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self._lock = threading.Lock()

    def _say(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None:
        self._say(f"blob {desc.digest.short} {format_size(desc.size)}: {action}{detail and ' ' + detail}")

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None:
        kind = "index" if is_index(desc.media_type) else "manifest"
        self._say(f"{kind} {desc.digest.short}: pushed as {reference}")

    def note(self, message: str) -> None:
        self._say(message)
