"""Human sizes for options such as ``--chunk-size 50MB``."""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

# KB/MB/GB are decimal (as serverless limits are: 100 MB = 100,000,000 bytes); KiB/MiB/GiB
# and the bare k/m/g of nginx and docker's --memory are binary.
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
    "k": 2**10, "m": 2**20, "g": 2**30,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    m = _SIZE_RE.match(text)
    unit = m and m[2].lower()
    if not m or unit not in _UNITS:
        raise ValueError(f"invalid size {text!r} (examples: 50MB, 64MiB, 8000000)")
    value = int(float(m[1]) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be positive")
    return value


def format_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
