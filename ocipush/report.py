"""What a push tells the user while it runs. The orchestrator and the destinations tell
an ``events.Events`` (a Protocol below them: they never import this module); every
``Reporter`` here satisfies it, and the CLI picks one: live bars on a terminal, one plain
line per event otherwise, nothing with ``--quiet``. Everything goes to stderr; only the result goes to stdout."""

from __future__ import annotations

import json
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from .mediatypes import is_index
from .models import BlobSummary, Descriptor, PushSummary, converter
from .units import format_size

if TYPE_CHECKING:
    from rich.progress import TaskID

    from .push import PushResult

__all__ = ["LineReporter", "ProgressReporter", "Reporter", "plan_text", "summary_json"]


class Reporter:
    """The silent reporter, the base of the others; an ``events.Events``. Every method may
    be called from any thread.

    A blob goes through states: ``checking`` (does the registry have it?), then
    ``uploading`` or ``compressing`` (compressed while it uploads), then a final action:
    ``uploaded``, ``skipped`` (the registry had it) or ``mounted`` (linked from another
    repository)."""

    def blob_state(self, desc: Descriptor, state: str) -> None: ...

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        """Bytes of the blob sent so far (it may go back when a chunk is resent)."""

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None: ...

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None: ...

    def note(self, message: str) -> None: ...

    def close(self) -> None: ...


def _manifest_line(desc: Descriptor, reference: str) -> str:
    kind = "index" if is_index(desc.media_type) else "manifest"
    return f"{kind} {desc.digest.short}: pushed as {reference}"


def _blob_line(desc: Descriptor, action: str, detail: str) -> str:
    return f"blob {desc.digest.short} {format_size(desc.size)}: {action}{detail and ' ' + detail}"


class LineReporter(Reporter):
    """One plain line per event: for logs and pipes."""

    def __init__(self, stream: TextIO = sys.stderr):
        self.stream = stream
        self._lock = threading.Lock()

    def _say(self, line: str) -> None:
        with self._lock:
            print(line, file=self.stream, flush=True)

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None:
        self._say(_blob_line(desc, action, detail))

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None:
        self._say(_manifest_line(desc, reference))

    def note(self, message: str) -> None:
        self._say(message)


class ProgressReporter(Reporter):
    """Live bars on a terminal (rich): one per blob, with bytes, rate, ETA and state."""

    def __init__(self, stream: TextIO = sys.stderr):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            TextColumn("[bold]{task.fields[state]:>11}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()
        self._progress.start()

    def _task(self, desc: Descriptor) -> TaskID:
        key = str(desc.digest)
        with self._lock:
            if key not in self._tasks:
                task = self._progress.add_task(f"blob {desc.digest.short}", total=desc.size, state="waiting")
                self._tasks[key] = task
            return self._tasks[key]

    def blob_state(self, desc: Descriptor, state: str) -> None:
        # Compressed output has no size until the end: the bar pulses instead.
        total = None if state == "compressing" else desc.size
        self._progress.update(self._task(desc), state=state, total=total)

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        self._progress.update(self._task(desc), completed=offset)

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None:
        task = self._task(desc)
        self._progress.update(task, state=action, total=desc.size, completed=desc.size)

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None:
        self._progress.console.print(_manifest_line(desc, reference))

    def note(self, message: str) -> None:
        self._progress.console.print(message, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


_METHODS = ("HEAD", "POST", "PATCH", "GET", "PUT", "DELETE")  # the keys of requests_by_method, always all there


def summary_json(result: PushResult) -> str:
    """``--json``: what a CI job wants to know, one document (``PushSummary``'s keys)."""
    summary = PushSummary(
        reference=str(result.reference),
        digest=result.digest,
        dry_run=result.dry_run,
        seconds=round(result.seconds, 3),
        blobs=tuple(
            BlobSummary(
                digest=b.source.digest,
                size=b.source.size,
                media_type=b.source.media_type,
                action=b.action,
                pushed_digest=b.pushed.digest,
                pushed_size=b.pushed.size,
                requests=b.requests,
                retries=b.retries,
                requests_by_method={m: b.sent.get(m, 0) for m in _METHODS},
                restarts=b.restarts,
                refused=b.refused,
            )
            for b in result.blobs
        ),
        chunk_size_learnt=result.chunk_size_learnt,
        notes=result.notes,
    )
    return json.dumps(converter.unstructure(summary), indent=2)


def plan_text(result: PushResult) -> str:
    """``--dry-run``: one line per blob, then the totals."""
    lines = [_blob_line(b.source, b.action, "") for b in result.blobs]
    sending = [b for b in result.blobs if b.action != "would skip"]
    lines.append(
        f"{result.reference}: would send {len(sending)} of {len(result.blobs)} blobs, "
        f"{format_size(sum(b.source.size for b in sending))} before compression"
    )
    return "\n".join(lines)
