from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from worker.media import InvalidImageError, decode_image, encode_image, encode_mp4, probe_video


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG of a huge image whose pixel data is a few bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt, pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_encode_image_formats(fmt, pil_format):
    image = Image.new("RGB", (48, 32), (10, 200, 30))
    data = encode_image(image, fmt)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == pil_format
        assert decoded.size == (48, 32)


def test_encode_image_refuses_unknown_format():
    with pytest.raises(ValueError, match="png, jpeg, webp"):
        encode_image(Image.new("RGB", (8, 8)), "bmp")


def test_decode_image_returns_rgb():
    rgba = Image.new("RGBA", (20, 10), (1, 2, 3, 128))
    image = decode_image(png_bytes(rgba), max_pixels=1000)
    assert image.mode == "RGB"
    assert image.size == (20, 10)


@pytest.mark.parametrize("data", [b"", b"definitely not an image"], ids=["empty", "garbage"])
def test_decode_image_refuses_non_images(data):
    with pytest.raises(InvalidImageError, match="not a PNG, JPEG, WEBP image"):
        decode_image(data, max_pixels=10_000)


def test_decode_image_refuses_a_truncated_image():
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = png_bytes(Image.fromarray(noise))
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], max_pixels=10_000)


def test_decode_image_refuses_formats_outside_the_list():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    with pytest.raises(InvalidImageError, match="not a PNG, JPEG, WEBP image"):
        decode_image(buffer.getvalue(), max_pixels=10_000)


def test_decode_image_refuses_an_oversized_image():
    with pytest.raises(InvalidImageError, match=r"100x50 \(5000 pixels\); at most 4999"):
        decode_image(png_bytes(Image.new("RGB", (100, 50))), max_pixels=4999)


def test_decode_image_checks_size_before_decoding_pixels():
    # The header claims 9000x9000 and there are no pixels: only a header check can answer.
    with pytest.raises(InvalidImageError, match="at most 1000000 pixels"):
        decode_image(png_header_claiming(9_000, 9_000), max_pixels=1_000_000)


def test_decode_image_turns_a_decompression_bomb_into_invalid_image():
    # Past twice PIL's own limit, Image.open refuses before our check runs.
    with pytest.raises(InvalidImageError, match="far too large"):
        decode_image(png_header_claiming(100_000, 100_000), max_pixels=10**12)


def test_mp4_round_trip_keeps_every_frame_and_the_fps():
    frames = np.random.default_rng(0).integers(0, 256, (17, 32, 48, 3), dtype=np.uint8)
    info = probe_video(encode_mp4(frames, fps=16))

    assert info.codec == "h264"
    assert (info.width, info.height) == (48, 32)
    assert info.frames == 17
    assert info.fps == 16
    assert info.faststart


def test_the_same_frames_always_encode_to_the_same_bytes():
    # Small frames are where x264's AVX-512 code reads memory it does not own: on an AVX-512 CPU
    # nearly every one of these encodes differed before the cap (`_x264_repeatable_options`).
    # The buffers allocated in between change what lies next to the encoder's.
    blocks = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    frames = np.stack([np.roll(blocks, step, axis=1)[:48, :48] for step in range(9)])  # moving right
    first = encode_mp4(frames, fps=8)
    padding = []
    for size in np.random.default_rng(1).integers(1, 200_000, 40):
        padding.append(bytearray(int(size)))
        assert encode_mp4(frames, fps=8) == first


def test_mp4_single_frame():
    info = probe_video(encode_mp4(np.zeros((1, 16, 16, 3), dtype=np.uint8), fps=8))
    assert info.frames == 1


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((4, 16, 16, 3), dtype=np.float32),
        np.zeros((16, 16, 3), dtype=np.uint8),
        np.zeros((0, 16, 16, 3), dtype=np.uint8),
        np.zeros((4, 15, 16, 3), dtype=np.uint8),
    ],
    ids=["float", "no-time-axis", "empty", "odd-height"],
)
def test_encode_mp4_refuses_bad_frames(frames):
    with pytest.raises(ValueError):
        encode_mp4(frames, fps=8)
