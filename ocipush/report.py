"""What a push tells the user while it runs. The orchestrator and the destinations tell
an ``events.Events`` (a Protocol below them: they never import this module); every
``Reporter`` here satisfies it, and the CLI picks one: live bars on a terminal, one plain
line per event otherwise, nothing with ``--quiet``. Everything goes to stderr; only the result goes to stdout.

Text we print is never interpreted: rich's markup, emoji codes and highlighter are off
(a server's message may hold ``[bold]`` or ``:warning:``), and characters a terminal
would act on are escaped. Notes for the end (``note_at_end``) are said by ``close()``."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import attrs

from . import mediatypes
from .mediatypes import is_index
from .models import BlobSummary, Descriptor, PushSummary, converter
from .units import format_size

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from .push import PushResult

__all__ = ["PACE_SECONDS", "PACE_STEPS", "LineReporter", "ProgressReporter", "Reporter", "plan_text", "summary_json"]

PACE_STEPS = 10  # LineReporter: at most one progress line per tenth of a blob...
PACE_SECONDS = 30.0  # ...and at most one per 30 s: whichever is rarer


class Reporter:
    """The silent reporter, the base of the others; an ``events.Events``. Every method may
    be called from any thread; ``close()`` once the push is over (it says the notes kept
    for the end).

    A blob goes through states: ``checking`` (does the registry have it?), then
    ``compressing`` for a layer compressed on the way, ``uploading`` once its first bytes
    go out, then a final action: ``uploaded``, ``skipped`` (the registry had it) or
    ``mounted`` (linked from another repository)."""

    def blob_state(self, desc: Descriptor, state: str) -> None: ...

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        """Bytes of the blob sent so far (it may go back when a chunk is resent)."""

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None: ...

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None: ...

    def note(self, message: str) -> None: ...

    def note_at_end(self, topic: str, message: str) -> None: ...

    def close(self) -> None: ...


def _printable(text: str) -> str:
    """One line, with anything a terminal would act on (a newline, an escape) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _manifest_line(desc: Descriptor, reference: str) -> str:
    kind = "index" if is_index(desc.media_type) else "manifest"
    return f"{kind} {desc.digest.short}: pushed as {reference}"


def _blob_line(desc: Descriptor, action: str, detail: str) -> str:
    return f"blob {desc.digest.short} {format_size(desc.size)}: {action}{detail and ' ' + detail}"


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _EndNotes:
    """Notes kept for the end, by topic: the last one on a topic wins, each is said once."""

    def __init__(self) -> None:
        self._notes: dict[str, str] = {}
        self._lock = threading.Lock()

    def keep(self, topic: str, message: str) -> None:
        with self._lock:
            self._notes.pop(topic, None)  # the newest last
            self._notes[topic] = message

    def take(self) -> list[str]:
        with self._lock:
            notes, self._notes = list(self._notes.values()), {}
        return notes


@attrs.define
class _Pace:
    """One blob's progress lines: when (and at which tenth) the last was said."""

    began: float
    said_at: float  # the last line, or the blob's start
    tenth: int = 0  # tenths of the blob reached at the last line
    state: str = "uploading"
    sized: bool = True  # False once compressing: positions count output of unknown size


class LineReporter(Reporter):
    """One plain line per event: for logs and pipes. A long blob also says how far it got,
    so that a log does not look hung: a line when it has passed another tenth of its size
    (for a layer compressed on the way: another tenth of its source's size in compressed
    bytes) since the last line, *and* at least ``PACE_SECONDS`` have passed since the last
    line (or since the blob started): at most ``PACE_STEPS`` lines a blob, none for a blob
    done within 30 s. ``clock`` is injectable for tests."""

    def __init__(self, stream: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self._clock = clock
        self._lock = threading.Lock()
        self._paces: dict[str, _Pace] = {}
        self._end = _EndNotes()

    def _say(self, line: str) -> None:
        with self._lock:
            print(_printable(line), file=self.stream, flush=True)

    def _pace(self, desc: Descriptor) -> _Pace:
        """The blob's pace (under ``_lock``), started now when it is new."""
        key = str(desc.digest)
        if key not in self._paces:
            now = self._clock()
            self._paces[key] = _Pace(began=now, said_at=now)
        return self._paces[key]

    def blob_state(self, desc: Descriptor, state: str) -> None:
        with self._lock:
            pace = self._pace(desc)
            pace.state = state
            if state == "compressing":
                pace.sized = False

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        if desc.size <= 0:
            return
        tenth = offset * PACE_STEPS // desc.size
        with self._lock:
            pace = self._pace(desc)
            if tenth <= pace.tenth:
                return  # cheap: no clock for most blocks
            now = self._clock()
            if now - pace.said_at < PACE_SECONDS:
                return
            pace.tenth, pace.said_at = tenth, now
            line = self._progress_line(desc, pace, offset, now)
        self._say(line)

    @staticmethod
    def _progress_line(desc: Descriptor, pace: _Pace, offset: int, now: float) -> str:
        sent = format_size(offset)
        done = f"{sent} sent ({offset * 100 // desc.size}%)" if pace.sized else f"{sent} sent (compressed)"
        return _blob_line(desc, pace.state + ",", f"{done} after {_duration(now - pace.began)}")

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None:
        with self._lock:
            self._paces.pop(str(desc.digest), None)
        self._say(_blob_line(desc, action, detail))

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None:
        self._say(_manifest_line(desc, reference))

    def note(self, message: str) -> None:
        self._say(message)

    def note_at_end(self, topic: str, message: str) -> None:
        self._end.keep(topic, message)

    def close(self) -> None:
        for message in self._end.take():
            self._say(message)


class ProgressReporter(Reporter):
    """Live bars on a terminal (rich): one per blob, with bytes, rate, ETA and state. The
    bars stop at the first manifest (every blob is done by then), so the manifest lines
    and the notes for the end come after them, not above. ``console``: for tests, a
    ``rich.console.Console`` of their own (a fake terminal)."""

    def __init__(self, stream: TextIO = sys.stderr, *, console: Console | None = None):
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
            TextColumn("{task.description}", markup=False),
            TextColumn("{task.fields[state]:>11}", style="bold", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console or Console(file=stream, markup=False, emoji=False, highlight=False),
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._unsized: set[str] = set()  # compressed on the way: output size unknown until the end
        self._lock = threading.Lock()
        self._live = True
        self._end = _EndNotes()
        self._progress.start()

    def _task(self, desc: Descriptor) -> TaskID:
        key = str(desc.digest)
        with self._lock:
            if key not in self._tasks:
                # No total until the blob's bytes go out with a known size: the bar pulses.
                task = self._progress.add_task(f"blob {desc.digest.short}", total=None, state="waiting")
                self._tasks[key] = task
            return self._tasks[key]

    def blob_state(self, desc: Descriptor, state: str) -> None:
        # Compressed output has no size until the end: its bar keeps pulsing while it uploads
        # (rich's update cannot take a total back to None: one is set only when known).
        key = str(desc.digest)
        with self._lock:
            if state == "compressing":
                self._unsized.add(key)
            sized = state == "uploading" and key not in self._unsized
        self._progress.update(self._task(desc), state=state, total=desc.size if sized else None)

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        self._progress.update(self._task(desc), completed=offset)

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None:
        task = self._task(desc)
        self._progress.update(task, state=action, total=desc.size, completed=desc.size)

    def _print(self, text: str) -> None:
        self._progress.console.print(_printable(text), markup=False, highlight=False, emoji=False)

    def _stop_bars(self) -> None:
        with self._lock:
            live, self._live = self._live, False
        if live:
            self._progress.stop()  # the bars' last frame stays; what follows goes below it

    def manifest_pushed(self, desc: Descriptor, reference: str) -> None:
        self._stop_bars()
        self._print(_manifest_line(desc, reference))

    def note(self, message: str) -> None:
        self._print(message)

    def note_at_end(self, topic: str, message: str) -> None:
        self._end.keep(topic, message)

    def close(self) -> None:
        self._stop_bars()
        for message in self._end.take():
            self._print(message)


_METHODS = ("HEAD", "POST", "PATCH", "GET", "PUT", "DELETE")  # the keys of requests_by_method, always all there


def _compression(desc: Descriptor) -> str | None:
    is_layer, compression = mediatypes.layer_compression(desc.media_type)
    if mediatypes.is_zstd_chunked(desc.media_type, desc.annotations):
        return "zstd:chunked"
    return compression if is_layer else None


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
                pushed_media_type=b.pushed.media_type,
                resumed_at=b.resumed_at,
                compression=_compression(b.pushed),
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
