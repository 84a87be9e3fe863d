"""Human sizes and durations for options such as ``--chunk-size 50MB``, ``--retry-delay 1m30s``.

Both parse strictly: ASCII digits only (``float`` and ``\\d`` would take ``٣`` or ``²``),
a bounded length, exact arithmetic (``Fraction``: 300 digits neither overflow a float
nor round), and a cap, so a typo fails here with the option's name instead of becoming
an absurd value or a traceback later. NaN and infinity are not numbers to us.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["MAX_DURATION", "MAX_SIZE", "format_size", "parse_duration", "parse_size"]

MAX_SIZE = 1 << 40  # 1 TiB: far above any request body a registry takes
MAX_DURATION = 24 * 3600.0  # seconds; a wait or timeout beyond a day is a typo
_MAX_TEXT = 64  # characters: "18446744073709551616 bytes" fits, a pasted novel does not

# KB/MB/GB are decimal (as serverless limits are: 100 MB = 100,000,000 bytes); KiB/MiB/GiB
# and the bare k/m/g of nginx and docker's --memory are binary.
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}
_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_SIZE_RE = re.compile(rf" *({_NUMBER}) *([a-zA-Z]*) *", re.ASCII)

# Go's time.ParseDuration, as podman's --retry-delay takes it: a sequence of decimal
# numbers, each with a unit, such as "300ms", "1.5h" or "2h45m"; no sign here.
_DURATION_UNITS = {
    "ns": Fraction(1, 10**9), "us": Fraction(1, 10**6), "µs": Fraction(1, 10**6), "μs": Fraction(1, 10**6),
    "ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600),
}
_GO_PART = re.compile(rf"({_NUMBER})(ns|us|µs|μs|ms|s|m|h)")
_GO_RE = re.compile(rf"(?:{_GO_PART.pattern})+")
_SECONDS_RE = re.compile(rf"{_NUMBER}", re.ASCII)


def parse_size(text: str) -> int:
    """``50MB``, ``64MiB``, ``1.5GB`` or bytes → bytes, from 1 to ``MAX_SIZE``."""
    m = _SIZE_RE.fullmatch(text) if len(text) <= _MAX_TEXT else None
    unit = m and m[2].lower()
    if not m or unit not in _UNITS:
        raise ValueError(f"invalid size {_shown(text)} (examples: 50MB, 64MiB, 8000000)")
    value = math.floor(Fraction(m[1]) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"invalid size {text!r}: must be positive")
    if value > MAX_SIZE:
        raise ValueError(f"invalid size {text!r}: at most 1 TiB")
    return value


def parse_duration(text: str, *, maximum: float = MAX_DURATION) -> float:
    """Seconds from Go's duration syntax (``1m30s``, ``500ms``, ``2.5s``, ``1h``,
    ``300us``) or plain seconds (``1.5``), from 0 to ``maximum`` (default 24 hours)."""
    example = "such as 2s, 500ms, 1m30s or seconds"
    if len(text) > _MAX_TEXT:
        raise ValueError(f"invalid duration {_shown(text)}: expected a duration {example}")
    if text.startswith("-"):
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    body = text.removeprefix("+")
    if _SECONDS_RE.fullmatch(body):
        seconds = Fraction(body)
    elif _GO_RE.fullmatch(body):
        seconds = sum((Fraction(n) * _DURATION_UNITS[u] for n, u in _GO_PART.findall(body)), Fraction(0))
    else:
        raise ValueError(f"invalid duration {text!r}: expected a duration {example}")
    if seconds > Fraction(maximum):
        raise ValueError(f"invalid duration {text!r}: at most {_format_seconds(maximum)}")
    return float(seconds)


def _format_seconds(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds:g}s"


def _shown(text: str) -> str:
    return repr(text) if len(text) <= _MAX_TEXT else f"{text[:_MAX_TEXT]!r}… ({len(text)} characters)"


def format_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
