"""`Range` / `If-Range` parsing (RFC 9110 §14): what is served, what is ignored, what is a 416."""

from __future__ import annotations

import pytest

from api.ranges import ByteRange, RangeNotSatisfiable, if_range_holds, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    "header,expected",
    [
        ("bytes=0-0", ByteRange(0, 1)),
        ("bytes=0-499", ByteRange(0, 500)),
        ("bytes=500-999", ByteRange(500, 1000)),
        ("bytes=500-", ByteRange(500, 1000)),
        ("bytes=999-", ByteRange(999, 1000)),
        ("bytes=-1", ByteRange(999, 1000)),
        ("bytes=-250", ByteRange(750, 1000)),
        # A last position past the end, or a suffix longer than the body, is cut to the body.
        ("bytes=900-5000", ByteRange(900, 1000)),
        ("bytes=-5000", ByteRange(0, 1000)),
        # The unit is case-insensitive; whitespace around the list and empty elements are allowed.
        ("Bytes=10-19", ByteRange(10, 20)),
        ("bytes= 10-19 ", ByteRange(10, 20)),
        ("bytes=10-19,", ByteRange(10, 20)),
        ("bytes=007-008", ByteRange(7, 9)),
    ],
)
def test_a_single_range_is_resolved_against_the_size(header, expected):
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=1 - 2",
        "bytes=0x10-20",
        "bytes=5-2",  # last before first: invalid, not unsatisfiable
        "bytes=0-1,5-6",  # more than one range: ignored, the whole body is served
        "bytes=0-1, 2000-3000",
        "items=0-5",
        "0-5",
        "bytes=" + "9" * 40 + "-",
    ],
)
def test_malformed_multi_range_and_other_units_are_ignored(header):
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=1000-2000", "bytes=5000-", "bytes=-0"])
def test_a_range_that_selects_nothing_is_not_satisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, SIZE)


def test_an_empty_body_has_no_satisfiable_range_but_a_suffix_serves_it_whole():
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)
    assert parse_range("bytes=-10", 0) is None


def test_content_range_and_length():
    byte_range = ByteRange(500, 1000)
    assert (byte_range.length, byte_range.content_range(SIZE)) == (500, "bytes 500-999/1000")


@pytest.mark.parametrize(
    "if_range,etag,holds",
    [
        (None, '"abc"', True),
        (None, None, True),
        ('"abc"', '"abc"', True),
        (' "abc" ', '"abc"', True),
        ('"abd"', '"abc"', False),
        ('W/"abc"', '"abc"', False),  # a weak tag never validates a range
        ('"abc"', 'W/"abc"', False),
        ('"abc"', None, False),
        ("Wed, 21 Oct 2015 07:28:00 GMT", '"abc"', False),  # no Last-Modified is sent to check it by
    ],
)
def test_if_range_holds_only_for_the_same_strong_etag(if_range, etag, holds):
    assert if_range_holds(if_range, etag) is holds
