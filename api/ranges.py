"""HTTP `Range` and `If-Range` (RFC 9110 §14) for `/content`: pure functions, no I/O.

Only a single byte range is served. A multi-range request would need a multipart/byteranges body,
which players and browsers do not ask for; RFC 9110 lets a server ignore any Range header, so a
multi-range or malformed one gets the whole body with 200, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# One range-spec: "first-last", "first-" or "-suffix". Digits only: no signs, no inner spaces.
_RANGE_SPEC = re.compile(r"(\d*)-(\d*)")
# Past this many digits a position means nothing real; also keeps int() away from its digit limit.
_MAX_DIGITS = 18


class RangeNotSatisfiable(ValueError):
    """A well-formed range that selects no byte of the representation: answer 416."""


@dataclass(frozen=True)
class ByteRange:
    start: int  # first byte
    end: int  # one past the last byte, as in slicing

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The byte range `header` selects from `size` bytes, or None to serve the whole body.

    None for no header, another unit, a malformed header and more than one range. Raises
    `RangeNotSatisfiable` when the one range starts at or past the end, or is an empty suffix.
    """
    if header is None:
        return None
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    # A list may carry empty elements ("0-5, ,"): RFC 9110 §5.6.1 says to ignore them.
    specs = [spec.strip() for spec in range_set.split(",") if spec.strip()]
    if len(specs) != 1:
        return None
    match = _RANGE_SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    if (not first and not last) or len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        return None
    if not first:
        suffix = int(last)
        if size == 0:
            return None  # nothing to select a suffix of: the (empty) whole body says it best
        if suffix == 0:
            raise RangeNotSatisfiable("a suffix range of zero bytes selects nothing")
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    if last and int(last) < start:
        return None  # "5-2" is invalid syntax (§14.1.1), not an unsatisfiable range
    if start >= size:
        raise RangeNotSatisfiable(f"the range starts at byte {start}; the content has {size} bytes")
    end = size if not last else min(int(last) + 1, size)
    return ByteRange(start, end)


def if_range_holds(if_range: str | None, etag: str | None) -> bool:
    """Whether a Range header may be honoured given `If-Range` (§13.1.5).

    Only a strong entity tag equal to the current one holds. A weak tag never does, and neither
    does a date: this server sends no Last-Modified, so a date cannot be checked and the safe
    answer is the whole, current body.
    """
    if if_range is None:
        return True
    if_range = if_range.strip()
    return etag is not None and not etag.startswith("W/") and if_range == etag
