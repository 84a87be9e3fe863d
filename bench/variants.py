#!/usr/bin/env python3
"""Measure proposed ocipush fixes without changing the package: run ocipush with a
candidate patched in at run time, interleaved with the unpatched one and skopeo.

    python bench/variants.py compare --runs 3 --scenarios main,single \\
        base= mem=zstdmem+spool1 fixed=zstdmem+spool1+pipeline:--jobs=2 skopeo
    python bench/variants.py run zstdmem+pipeline -- oci:DIR:ref HOST/REPO:TAG --compression-format zstd

A variant is NAME=FLAGS[:EXTRA-ARGS] (flags joined by +, extra ocipush arguments by +),
or ``skopeo``. Flags (each replaces one piece of ocipush, as docs/benchmarks.md proposes):

  zstdmem    zstd with window_log 23 and job_size 2 MiB (the level stays as given)
  level4     zstd level 4 (instead of the default 3) with window_log 23, job_size 2 MiB
  st23       single-threaded zstd (threads=0) with window_log 23
  spool1     SPOOL_MEMORY = 1 MiB instead of 8 MiB
  pipeline   StreamContent.chunks fills the next chunk in a thread while the current one
             is being sent (double buffering through the spill files)

Scenarios: main (the 3-layer image), single (one 1 GB layer), big (one 3 GB layer, no skopeo).
This patches private names (compression._ZstdEncoder, content.StreamContent.chunks,
content.SPOOL_MEMORY); when the package changes, adapt it or drop it.
"""

from __future__ import annotations

import os
import sys


def patch(flags: set[str]) -> None:
    import queue
    import tempfile
    import threading

    import zstandard

    from ocipush import compression, content

    if flags & {"zstdmem", "level4", "st23"}:
        class _ZstdEncoder:
            def __init__(self, level: int) -> None:
                if "st23" in flags:
                    p = zstandard.ZstdCompressionParameters.from_level(level, threads=0, window_log=23)
                else:
                    if "level4" in flags and level == 3:
                        level = 4
                    threads = max(1, min(os.cpu_count() or 1, 8))
                    p = zstandard.ZstdCompressionParameters.from_level(
                        level, threads=threads, window_log=23, job_size=2 << 20)
                self._c = zstandard.ZstdCompressor(compression_params=p).compressobj()

            def feed(self, data: bytes) -> bytes:
                return self._c.compress(data)

            def flush(self) -> bytes:
                return self._c.flush()

        compression._ZstdEncoder = _ZstdEncoder

    if "spool1" in flags:
        content.SPOOL_MEMORY = 1 << 20

    if "pipeline" in flags:
        done = object()

        def chunks(self, chunk_size, start=0):
            """Like StreamContent.chunks, but the next chunk is produced (in a thread)
            while the uploader sends the current one; at most 3 spills exist at once."""
            step = chunk_size or content.STREAM_CHUNK
            handoff: queue.Queue = queue.Queue(maxsize=1)
            stop = threading.Event()

            def new_spill():
                return tempfile.SpooledTemporaryFile(max_size=content.SPOOL_MEMORY)

            def produce() -> None:
                try:
                    offset, filled, spill = 0, 0, new_spill()
                    for block in self.stream():
                        view = memoryview(block)
                        while view:
                            take = view[: step - filled]
                            spill.write(take)
                            filled += len(take)
                            view = view[len(take):]
                            if filled == step:
                                if offset >= start:
                                    handoff.put((spill, offset, step))
                                else:
                                    spill.close()
                                offset, filled, spill = offset + step, 0, new_spill()
                                if stop.is_set():
                                    return
                    if filled and offset >= start:
                        handoff.put((spill, offset, filled))
                    else:
                        spill.close()
                    handoff.put(done)
                except BaseException as e:  # noqa: BLE001 - handed to the consumer
                    handoff.put(e)

            worker = threading.Thread(target=produce, daemon=True)
            worker.start()
            current = None
            try:
                while True:
                    item = handoff.get()
                    if current is not None:
                        current.close()  # the uploader is done with it (resends happen before)
                        current = None
                    if item is done:
                        break
                    if isinstance(item, BaseException):
                        raise item
                    current, offset, length = item
                    yield self._spilled_chunk(current, offset, length)
            finally:
                stop.set()
                while worker.is_alive():
                    try:
                        item = handoff.get(timeout=0.1)
                        if isinstance(item, tuple):
                            item[0].close()
                    except queue.Empty:
                        pass
                if current is not None:
                    current.close()

        content.StreamContent.chunks = chunks


def run(flags: str, ocipush_args: list[str]) -> None:
    patch(set(filter(None, flags.split("+"))))
    from ocipush.cli import entry_point

    sys.argv = ["ocipush", *ocipush_args]
    entry_point()


def compare(argv: list[str]) -> int:
    import argparse
    import statistics
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import push_bench as pb

    p = argparse.ArgumentParser(prog="variants.py compare")
    p.add_argument("variants", nargs="+", help="NAME=FLAGS[:EXTRA] or skopeo")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--scenarios", default="main,single")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/ocipush-bench"))
    a = p.parse_args(argv)
    scenarios = a.scenarios.split(",")
    specs: dict[str, tuple[str, list[str]]] = {}
    for v in a.variants:
        name, _, rest = v.partition("=")
        flags, _, extra = rest.partition(":")
        specs[name] = (flags, [x for x in extra.split("+") if x])

    args = pb.build_parser().parse_args(["--workdir", str(a.workdir)])
    args.runs, args.argv, args.ocipush = a.runs, [], "ocipush"
    args.rss_sizes = [3 * 10**9] if "big" in scenarios else []
    bench = pb.Bench(args)
    current: list[tuple[str, list[str]]] = [("", [])]

    def ocipush_argv(image, dest, zstd, cache=False):
        flags, extra = current[0]
        argv = [sys.executable, str(Path(__file__).resolve()), "run", flags or "none", "--"]
        argv += ["--compression-format", "zstd", "--no-cache"] if zstd else []
        return argv + extra + [bench.source(image), dest]

    bench.ocipush_argv = ocipush_argv
    try:
        bench.prepare(["single"] + (["rss"] if "big" in scenarios else []))
        for run in range(1, a.runs + 1):
            names = list(specs) if run % 2 else list(reversed(specs))
            for name in names:
                tool = "skopeo" if name == "skopeo" else "ocipush"
                current[0] = specs[name]
                if "main" in scenarios:
                    bench.tool_push("main", tool, run, True, label=name)
                if "single" in scenarios:
                    bench.tool_push("single", tool, run, True, image=bench.single_image, label=name)
                if "big" in scenarios and tool == "ocipush":
                    bench.tool_push("big", tool, run, True, image=bench.rss_images["3GB"], label=name)
    finally:
        bench.close()
    print(f"\n| scenario | variant | median | runs (s) | CPU s | peak RSS | output |\n|---|---|---:|---|---:|---:|---:|")
    for scen in scenarios:
        for name in specs:
            g = [s for s in bench.samples if s.scenario == scen and s.variant == name and s.ok]
            if g:
                print(f"| {scen} | {name} | {statistics.median(s.seconds for s in g):.2f} s | "
                      f"{', '.join(f'{s.seconds:.2f}' for s in g)} | {statistics.median(s.user + s.sys for s in g):.1f} | "
                      f"{max(s.maxrss_kib for s in g) / 1024:.0f} MiB | {g[0].pushed_size:,} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "run":
        rest = sys.argv[3:]
        run("" if sys.argv[2] == "none" else sys.argv[2], rest[1:] if rest[:1] == ["--"] else rest)
    elif len(sys.argv) >= 2 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2:]))
    else:
        print(__doc__)
        sys.exit(2)
