"""Sizes and durations as options take them: strict, exact, capped; never a traceback."""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.cli import _count, _duration, _jobs, _level, _size, build_parser
from ocipush.units import MAX_DURATION, MAX_SIZE, parse_duration, parse_size


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("0", 0.0),
        ("1", 1.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("2s", 2.0),
        ("500ms", 0.5),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("2.5s", 2.5),
        ("300us", 0.0003),
        ("300µs", 0.0003),
        ("300μs", 0.0003),
        ("1500000ns", 0.0015),
        ("2h45m", 9900.0),
        ("1.5h30m", 7200.0),
        ("1h0m0.5s", 3600.5),
        ("+1s", 1.0),
        ("24h", 86400.0),
        ("1439m60s", 86400.0),
    ],
)
def test_go_durations_and_seconds_are_accepted(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)
    assert build_parser().parse_args(["oci:x", "y", "--retry-delay", text]).retry_delay == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text, why",
    [
        ("nan", "expected a duration"),
        ("NaN", "expected a duration"),
        ("inf", "expected a duration"),
        ("-inf", "must not be negative"),
        ("Infinity", "expected a duration"),
        ("1e400", "expected a duration"),
        ("1e3", "expected a duration"),
        ("-1s", "must not be negative"),
        ("-0.5", "must not be negative"),
        ("25h", "at most 24h"),
        ("86400.001", "at most 24h"),
        ("9" * 60 + "h", "at most 24h"),
        ("9" * 65, "characters"),
        ("٣s", "expected a duration"),
        ("²", "expected a duration"),
        ("1d", "expected a duration"),
        ("1 s", "expected a duration"),
        (" 1s", "expected a duration"),
        ("1s ", "expected a duration"),
        ("1s\n", "expected a duration"),
        ("s", "expected a duration"),
        ("ms", "expected a duration"),
        ("", "expected a duration"),
        ("1..5s", "expected a duration"),
        ("1m-30s", "expected a duration"),
        ("1.s.", "expected a duration"),
    ],
)
def test_bad_durations_are_value_errors(text, why):
    with pytest.raises(ValueError, match=why):
        parse_duration(text)
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        _duration(text)


@pytest.mark.parametrize(
    "text, size",
    [
        ("1", 1),
        ("8000000", 8_000_000),
        ("50MB", 50_000_000),
        ("64MiB", 64 << 20),
        ("64m", 64 << 20),
        ("1.5GB", 1_500_000_000),
        (".5k", 512),
        ("5 MB", 5_000_000),
        ("1TiB", MAX_SIZE),
        ("1099511627776", MAX_SIZE),
    ],
)
def test_sizes_are_accepted(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text, why",
    [
        ("1" * 300, "300 characters"),
        ("1" * 64, "at most 1 TiB"),
        ("2TiB", "at most 1 TiB"),
        ("1099511627777", "at most 1 TiB"),
        ("0", "must be positive"),
        ("0.1", "must be positive"),
        ("-5MB", "examples"),
        ("nan", "examples"),
        ("inf", "examples"),
        ("1e9", "examples"),
        ("٥MB", "examples"),
        ("²", "examples"),
        ("5XB", "examples"),
        ("5MB\n", "examples"),
        ("", "examples"),
    ],
)
def test_bad_sizes_are_value_errors(text, why):
    with pytest.raises(ValueError, match=why):
        parse_size(text)
    with pytest.raises(argparse.ArgumentTypeError, match="invalid size"):
        _size(text)


@pytest.mark.parametrize("parse", [_count, _jobs, _level])
@pytest.mark.parametrize("text", ["²", "٣", "-1", "1.0", " 1", "1\n", "", "1" * 5000, "0x10"])
def test_counts_take_ascii_digits_only(parse, text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected a"):
        parse(text)


def test_counts_in_range():
    assert (_count("0"), _count("100"), _jobs("1"), _jobs("64"), _level("22")) == (0, 100, 1, 64, 22)
    for parse, text in ((_count, "101"), (_jobs, "0"), (_jobs, "65")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@given(st.text(max_size=80))
def test_any_text_is_a_size_or_a_value_error(text):
    try:
        size = parse_size(text)
    except ValueError:
        return
    assert 1 <= size <= MAX_SIZE


@given(st.text(max_size=80))
def test_any_text_is_a_duration_or_a_value_error(text):
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(seconds) and 0 <= seconds <= MAX_DURATION


_GO_UNITS = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@given(st.lists(st.tuples(st.integers(0, 500), st.sampled_from(sorted(_GO_UNITS))), min_size=1, max_size=4))
def test_go_durations_sum_their_parts(parts):
    text = "".join(f"{n}{unit}" for n, unit in parts)
    expected = sum(n * _GO_UNITS[unit] for n, unit in parts)
    if expected > MAX_DURATION:
        with pytest.raises(ValueError, match="at most"):
            parse_duration(text)
    else:
        assert parse_duration(text) == pytest.approx(expected)
