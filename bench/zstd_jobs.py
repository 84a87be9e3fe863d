#!/usr/bin/env python3
"""What zstd's multithreaded jobs cost in size and memory, layer by layer (docs/compression.md).

    python bench/zstd_jobs.py                         # the bench image's layers (make it first: push_bench.py)
    python bench/zstd_jobs.py FILE.tar FILE.tar.gz …  # any tars, gzip-compressed or not
    python bench/zstd_jobs.py --jobs 4,8,16 --workers 2 --level 3

For each input: the single-threaded size (8 MiB window, what ocipush wrote before it
went multithreaded), then for each job size the multithreaded size, its ratio to the
single-threaded one, and the compressor's CPU and wall time. Each configuration runs in
a child process of its own, which reports its peak RSS (the memory a stream adds is the
difference from the single-threaded row). Output bytes are the same for any number of
workers ≥ 1: ``--workers`` changes the time, not the sizes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import zstandard

MiB = 1 << 20


def measure(path: str, level: int, window_log: int, workers: int, job_mib: int) -> dict[str, float]:
    """One compression of one input, in this process (run as a child)."""
    if workers:
        params = zstandard.ZstdCompressionParameters.from_level(
            level, window_log=window_log, threads=workers, job_size=job_mib * MiB
        )
    else:
        params = zstandard.ZstdCompressionParameters.from_level(level, window_log=window_log)
    c = zstandard.ZstdCompressor(compression_params=params).compressobj()
    size = 0
    with open(path, "rb") as raw:
        src = gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw  # type: ignore[attr-defined]
        plain = src.read(MiB)
        cpu0, wall0 = time.process_time(), time.monotonic()
        while plain:
            size += len(c.compress(plain))
            plain = src.read(MiB)
        size += len(c.flush())
    return {
        "size": size,
        "cpu": time.process_time() - cpu0,  # includes gzip's inflate when the input is gzip
        "wall": time.monotonic() - wall0,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child(path: str, level: int, window_log: int, workers: int, job_mib: int) -> dict[str, float]:
    argv = [sys.executable, __file__, "--child", json.dumps([path, level, window_log, workers, job_mib])]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)  # type: ignore[no-any-return]


def bench_layers(workdir: Path) -> list[str]:
    """The bench image's layer blobs, in manifest order."""
    layout = workdir / "image-full"
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest).read_text())
    return [str(layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]) for layer in manifest["layers"]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="*", help="tar files (gzip or not); default: the bench image's layers")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/ocipush-bench"), help="push_bench.py's workdir")
    p.add_argument("--jobs", default="4,8", help="job sizes in MiB, comma-separated (default 4,8)")
    p.add_argument("--workers", type=int, default=1, help="zstd workers for the multithreaded rows (default 1)")
    p.add_argument("--level", type=int, default=3)
    p.add_argument("--window-log", type=int, default=23)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return 0
    inputs = args.inputs or bench_layers(args.workdir)
    jobs = [int(j) for j in args.jobs.split(",") if j]
    print("| input | one stream | " + " | ".join(f"{j} MiB jobs" for j in jobs) + " |")
    print("|---|---:|" + "---:|" * len(jobs))
    totals = [0] * (1 + len(jobs))
    for path in inputs:
        st = child(path, args.level, args.window_log, 0, 0)
        cells = [f"{st['size'] / 1e6:.2f} MB ({st['cpu']:.1f} s CPU, {st['rss_mib']:.0f} MiB)"]
        totals[0] += int(st["size"])
        for i, j in enumerate(jobs, 1):
            mt = child(path, args.level, args.window_log, args.workers, j)
            totals[i] += int(mt["size"])
            ratio = mt["size"] / st["size"] - 1
            cells.append(f"{ratio:+.2%} ({mt['cpu']:.1f} s CPU, {mt['wall']:.1f} s, {mt['rss_mib']:.0f} MiB)")
        print(f"| {os.path.basename(path)[:12]} | " + " | ".join(cells) + " |")
    if len(inputs) > 1:
        print(
            f"| all | {totals[0] / 1e6:.2f} MB | "
            + " | ".join(f"{t / totals[0] - 1:+.2%}" for t in totals[1:])
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
