import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocipush.chunks import choose_chunk_size, chunk_ranges, content_range
from ocipush.registry.headers import parse_range
from ocipush.units import parse_size

sizes = st.one_of(st.none(), st.integers(1, 10**9))


@given(sizes, sizes, sizes)
def test_chunk_size_respects_limits(requested, minimum, maximum):
    chunk = choose_chunk_size(requested, minimum, maximum)
    if requested is None and maximum is None:
        assert chunk is None
        return
    assert chunk >= 1
    if maximum:
        assert chunk <= maximum  # the hard body limit always wins
    if requested and (not minimum or requested >= minimum):
        assert chunk <= requested
    if minimum and (not maximum or minimum <= maximum):
        assert chunk >= minimum


def test_chunk_size_examples():
    # serverless-registry: min 5 MiB, max 100,000,000
    assert choose_chunk_size(None, 5 * 2**20, 100_000_000) == 100_000_000
    assert choose_chunk_size(50_000_000, 5 * 2**20, 100_000_000) == 50_000_000
    assert choose_chunk_size(2**20, 5 * 2**20, 100_000_000) == 5 * 2**20
    assert choose_chunk_size(None, None, None) is None


# Chunks of at least size/1000: enough to cover every shape without a million ranges.
@st.composite
def blob_and_chunk(draw, allow_none=True):
    size = draw(st.integers(0 if allow_none else 1, 10**8))
    chunk = draw(st.integers(max(1, size // 1000), max(1, size * 2)))
    return size, (draw(st.one_of(st.none(), st.just(chunk))) if allow_none else chunk)


@given(blob_and_chunk())
def test_ranges_cover_blob_in_equal_parts(args):
    size, chunk = args
    ranges = list(chunk_ranges(size, chunk))
    assert sum(length for _, length in ranges) == size
    offset = 0
    for start, length in ranges:
        assert start == offset and length > 0
        offset += length
    if ranges:
        first = ranges[0][1]
        assert all(length == first for _, length in ranges[:-1])  # equal but the last
        assert ranges[-1][1] <= first
    if chunk is None:
        assert len(ranges) == (1 if size else 0)


@given(blob_and_chunk(allow_none=False), st.data())
def test_resume_from_a_boundary_continues_the_same_plan(args, data):
    size, chunk = args
    full = list(chunk_ranges(size, chunk))
    k = data.draw(st.integers(0, len(full) - 1))
    assert list(chunk_ranges(size, chunk, start=full[k][0])) == full[k:]


def test_resume_off_boundary_is_refused():
    with pytest.raises(ValueError):
        list(chunk_ranges(100, 10, start=15))


@given(st.integers(0, 10**12), st.integers(1, 10**9))
def test_content_range_round_trips_through_range(offset, length):
    value = content_range(0, offset + length)
    assert value == f"0-{offset + length - 1}"
    assert parse_range(value, "header Range") == offset + length


@pytest.mark.parametrize(
    "text, n",
    [("8000000", 8_000_000), ("50MB", 50_000_000), ("64MiB", 64 * 2**20), ("8m", 8 * 2**20),
     ("1.5GB", 1_500_000_000), ("100 kB", 100_000)],
)
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "0", "-5MB", "10XB", "MB", "1e6"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)
