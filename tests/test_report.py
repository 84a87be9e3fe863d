"""What the user sees while a push runs: the plain lines of logs and pipes (their pace,
on an injected clock), the live bars on a fake terminal (what follows them, what is
never interpreted), the notes said once at the end, and the states a real push reports."""

from __future__ import annotations

import io
import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocipush.compression import Compression
from ocipush.digest import Digest
from ocipush.models import Descriptor
from ocipush.push import PushOptions, push
from ocipush.report import LineReporter, ProgressReporter, Reporter
from tests.imagegen import LayerSpec, make_layout

MB = 1_000_000
PACE_SECONDS = 30.0  # docs/cli.md: at most one progress line per tenth and per 30 s
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def blob(size: int, n: int = 1) -> Descriptor:
    return Descriptor(media_type=LAYER, digest=Digest("sha256", f"{n:02x}" * 32), size=size)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(reporter: LineReporter, clock: Clock, desc: Descriptor, step: int, seconds_per_step: float) -> list[float]:
    """Report ``desc`` sent in ``step``-byte blocks, ``seconds_per_step`` apart; the
    injected times at which a line was said."""
    stream = reporter.stream
    assert isinstance(stream, io.StringIO)
    times, said = [], stream.getvalue().count("\n")
    reporter.blob_state(desc, "checking")
    reporter.blob_state(desc, "uploading")
    for offset in range(step, desc.size + step, step):
        clock.now += seconds_per_step
        reporter.blob_position(desc, min(offset, desc.size))
        if (n := stream.getvalue().count("\n")) > said:
            times.append(clock.now)
            said = n
    reporter.blob_finished(desc, "uploaded")
    return times


def line_reporter() -> tuple[LineReporter, Clock, io.StringIO]:
    clock, stream = Clock(), io.StringIO()
    return LineReporter(stream, clock=clock), clock, stream


# -- LineReporter: pace -------------------------------------------------------------


def test_a_10_gb_blob_in_1_mb_steps_says_at_most_11_lines():
    reporter, clock, stream = line_reporter()
    desc = blob(10_000 * MB)
    times = feed(reporter, clock, desc, MB, 1.0)  # 1 MB/s: 10 000 s in all
    lines = stream.getvalue().splitlines()
    assert len(lines) <= 11
    assert len(times) == 10  # a line per tenth: it does not look hung
    assert lines[0] == f"blob {desc.digest.short} 10.0 GB: uploading, 1.0 GB sent (10%) after 16m40s"
    assert lines[-1] == f"blob {desc.digest.short} 10.0 GB: uploaded"


def test_a_slow_blob_says_a_line_every_30_s_at_most():
    reporter, clock, _ = line_reporter()
    times = feed(reporter, clock, blob(100 * MB), MB, 1.0)  # a tenth in 10 s: the 30 s bound rules
    assert len(times) == 3  # at 30 s, 60 s, 90 s
    started = 1000.0
    assert all(b - a >= PACE_SECONDS for a, b in itertools.pairwise([started, *times]))


def test_a_blob_done_within_30_s_says_one_line():
    reporter, clock, stream = line_reporter()
    feed(reporter, clock, blob(10_000 * MB), MB, 0.002)  # 20 s in all
    assert stream.getvalue().splitlines() == [f"blob {blob(1).digest.short} 10.0 GB: uploaded"]


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 3_000 * MB),
    steps=st.integers(1, 3000),
    seconds_per_step=st.floats(0.001, 20.0),
)
def test_pace_is_at_most_a_line_per_tenth_and_per_30_s_and_never_silent_longer(size, steps, seconds_per_step):
    reporter, clock, _ = line_reporter()
    step = max(1, size // steps)
    times = feed(reporter, clock, blob(size), step, seconds_per_step)
    assert len(times) <= 10
    moments = [1000.0, *times]
    assert all(b - a >= PACE_SECONDS for a, b in itertools.pairwise(moments))
    # Liveness: after a line, the next tenth comes within a tenth's time (and a step):
    # no gap longer than the rarer of the two paces, to the end of the blob.
    tenth_seconds = seconds_per_step * size / step / 10
    longest = max(PACE_SECONDS, tenth_seconds) + 2 * seconds_per_step
    ends = [*moments, clock.now]
    assert all(b - a <= longest for a, b in itertools.pairwise(ends))


def test_a_compressed_layer_counts_compressed_bytes_without_a_percentage():
    reporter, clock, stream = line_reporter()
    desc = blob(1000 * MB)
    reporter.blob_state(desc, "checking")
    reporter.blob_state(desc, "compressing")
    reporter.blob_state(desc, "uploading")
    for offset in range(MB, 401 * MB, MB):  # 400 MB of gzip out of 1 GB of tar
        clock.now += 1.0
        reporter.blob_position(desc, offset)
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"blob {desc.digest.short} 1.0 GB: uploading, 100.0 MB sent (compressed) after 1m40s"
    assert len(lines) == 4 and "%" not in stream.getvalue()


# -- notes for the end --------------------------------------------------------------


def test_line_reporter_says_the_last_note_of_a_topic_once_after_the_manifest():
    reporter, _, stream = line_reporter()
    reporter.note_at_end("chunk-size", "learnt 32 MiB")
    reporter.note("retrying: 503")
    reporter.note_at_end("chunk-size", "learnt 8 MiB")
    reporter.manifest_pushed(Descriptor(MANIFEST, blob(1, 2).digest, 500), "v1")
    reporter.close()
    reporter.close()
    assert stream.getvalue().splitlines() == [
        "retrying: 503",
        f"manifest {blob(1, 2).digest.short}: pushed as v1",
        "learnt 8 MiB",
    ]


def test_line_reporter_escapes_what_a_terminal_would_act_on():
    reporter, _, stream = line_reporter()
    reporter.note("registry says: \x1b[2Jcleared\nsecond line")
    assert stream.getvalue() == "registry says: \\x1b[2Jcleared\\nsecond line\n"


# -- ProgressReporter on a fake terminal --------------------------------------------


class Terminal(io.StringIO):
    """What rich takes for a terminal (as the CLI's stderr on one)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch) -> Terminal:
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "120")
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    return Terminal()


def test_the_manifest_line_comes_after_the_bars_and_its_digest_is_plain(terminal):
    reporter = ProgressReporter(terminal)
    layer, manifest = blob(5 * MB, 1), Descriptor(MANIFEST, blob(1, 2).digest, 500)
    reporter.blob_state(layer, "uploading")
    reporter.blob_position(layer, 2 * MB)
    reporter.blob_finished(layer, "uploaded")
    reporter.manifest_pushed(manifest, "v1")
    reporter.close()
    out = terminal.getvalue()
    line = f"manifest {manifest.digest.short}: pushed as v1"
    assert line in out  # not a byte of markup or colour inside it
    assert out.rindex(f"blob {layer.digest.short}") < out.index(line)
    assert ANSI.sub("", out).rstrip().endswith(line)


def test_server_text_in_a_note_is_printed_literally(terminal):
    reporter = ProgressReporter(terminal)
    message = "retrying: [bold]busy[/bold] :warning: sha256:0123456789ab \x1b[2J"
    reporter.note(message)
    reporter.close()
    out = terminal.getvalue()
    assert "retrying: [bold]busy[/bold] :warning: sha256:0123456789ab \\x1b[2J" in out


def test_notes_for_the_end_follow_the_manifest_lines_on_a_terminal(terminal):
    reporter = ProgressReporter(terminal)
    reporter.blob_state(blob(MB), "uploading")
    reporter.note_at_end("chunk-size", "first")
    reporter.note_at_end("chunk-size", "the size learnt")
    reporter.manifest_pushed(Descriptor(MANIFEST, blob(1, 2).digest, 500), "v1")
    reporter.close()
    plain = ANSI.sub("", terminal.getvalue())
    assert plain.rstrip().endswith("pushed as v1\nthe size learnt") and "first" not in plain


def test_a_compressed_bar_keeps_an_unknown_total_when_it_starts_uploading():
    from rich.console import Console

    reporter = ProgressReporter(console=Console(file=io.StringIO(), force_terminal=True, width=100))
    desc = blob(100 * MB)
    reporter.blob_state(desc, "checking")
    reporter.blob_state(desc, "compressing")
    reporter.blob_state(desc, "uploading")
    reporter.blob_position(desc, 3 * MB)
    (task,) = reporter._progress.tasks
    assert (task.fields["state"], task.total, task.completed) == ("uploading", None, 3 * MB)
    reporter.close()


# -- the states a real push reports ---------------------------------------------------


class Recorder(Reporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def blob_state(self, desc: Descriptor, state: str) -> None:
        self.events.append((str(desc.digest), "state", state))

    def blob_position(self, desc: Descriptor, offset: int) -> None:
        self.events.append((str(desc.digest), "position", offset))

    def blob_finished(self, desc: Descriptor, action: str, detail: str = "") -> None:
        self.events.append((str(desc.digest), "finished", action))


def _story(events: list[tuple[str, str, object]], digest: str) -> list[object]:
    """The blob's states, positions collapsed to one "position" mark each run."""
    story: list[object] = []
    for d, kind, value in events:
        if d != digest:
            continue
        item = "position" if kind == "position" else value
        if not story or story[-1] != item or item != "position":
            story.append(item)
    return story


@pytest.mark.integration
def test_a_recompressed_layer_goes_from_compressing_to_uploading(registry, repo, tmp_path):
    info = make_layout(tmp_path / "img", [LayerSpec(3 * MB, "text")], ref="v1")
    recorder = Recorder()
    options = PushOptions(compression=Compression("zstd"), chunk_size=1 << 20, jobs=1)
    result = push(f"oci:{info.layout}", f"{registry.host}/{repo}:v1", options, recorder)
    (layer,) = [b for b in result.blobs if b.pushed.digest != b.source.digest]
    assert _story(recorder.events, str(layer.source.digest)) == [
        "checking", "compressing", "uploading", "position", "uploaded"
    ]
    (config,) = [b for b in result.blobs if b.pushed.digest == b.source.digest]
    assert _story(recorder.events, str(config.source.digest)) == ["checking", "uploading", "position", "uploaded"]
