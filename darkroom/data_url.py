"""`data:` URLs (RFC 2397) carrying an image: `data:image/png;base64,<payload>`.

Parsed in one pass that never looks past a short header: the comma that ends the header must come
within `MAX_HEADER_CHARS`, so a URL of millions of `;x` parameters is refused after reading a
kilobyte, and the payload is only measured, never scanned, until it is decoded.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

# "data:" + a media type and its parameters (`;name=a.png;base64`): far more than any real one.
MAX_HEADER_CHARS = 1024


class BadDataURL(ValueError):
    """Not a `data:image/...;base64,` URL; the message says what is wrong."""


class DataURLTooLarge(ValueError):
    """The payload decodes to more than the byte limit."""


@dataclass(frozen=True)
class DataURL:
    media_type: str  # lower case, e.g. "image/png"
    payload: str  # base64, not yet decoded


def data_url_chars(max_bytes: int) -> int:
    """The longest data: URL whose payload decodes to at most `max_bytes` bytes."""
    return MAX_HEADER_CHARS + 4 * -(-max_bytes // 3)


def parse_image_data_url(url: str, *, max_bytes: int) -> DataURL:
    """The media type and payload of an image data: URL, its decoded size checked."""
    if url[:5].lower() != "data:":
        raise BadDataURL("it does not start with 'data:'")
    comma = url.find(",", 5, MAX_HEADER_CHARS + 1)
    if comma < 0:
        raise BadDataURL(
            f"no ',' within its first {MAX_HEADER_CHARS} characters: its header (media type and "
            "parameters) is missing its end or is too long"
        )
    media_type, *parameters = url[5:comma].lower().split(";")
    if not media_type.startswith("image/"):
        raise BadDataURL(f"its media type is '{media_type or 'none'}', not an image/ type")
    if "base64" not in parameters:
        raise BadDataURL("it is not base64-encoded (';base64' is missing)")
    payload = url[comma + 1 :]
    if len(payload) // 4 * 3 > max_bytes + 3:  # base64: 3 bytes per 4 characters
        raise DataURLTooLarge(f"its payload is over the {max_bytes} byte limit")
    return DataURL(media_type, payload)


def decode_payload(data_url: DataURL) -> bytes:
    try:
        return base64.b64decode(data_url.payload, validate=True)
    except (binascii.Error, ValueError):
        raise BadDataURL("its payload is not valid base64") from None
