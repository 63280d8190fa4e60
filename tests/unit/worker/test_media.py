"""worker/media.py: images encoded in each format, uploads decoded only when they are a small
enough PNG, JPEG or WebP, MP4s that keep every frame and the fps, and a video's stills as the worker
makes them next to its MP4: the thumbnail (the middle frame, WebP) and the spritesheet (evenly
spaced frames in a near-square grid, JPEG), checked by decoding them and looking at the pixels."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from worker.media import (
    InvalidImageError,
    decode_image,
    encode_image,
    encode_mp4,
    encode_spritesheet,
    encode_thumbnail,
    probe_video,
    spritesheet_frames,
)


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

def solid_frames(count: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Frame i is one flat colour that names i, so a decoded tile says which frame it shows."""
    colours = np.array(
        [[(37 * i) % 256, (91 * i + 40) % 256, (151 * i + 80) % 256] for i in range(count)],
        np.uint8,
    )
    return np.broadcast_to(colours[:, None, None, :], (count, height, width, 3)).copy()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def close_to(pixel, colour, tolerance: int = 12) -> bool:
    # Lossy formats shift a flat colour a little, never by this much.
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, colour, strict=True))


def test_the_thumbnail_is_the_middle_frame_as_webp():
    frames = solid_frames(9)
    still = encode_thumbnail(frames)
    image = decode(still.data)
    assert (image.format, image.size, still.content_type, still.extension) == (
        "WEBP",
        (48, 32),
        "image/webp",
        "webp",
    )
    assert still.layout == {"frame": 4, "width": 48, "height": 32}
    assert close_to(image.convert("RGB").getpixel((24, 16)), frames[4, 0, 0])


@pytest.mark.parametrize(
    "count, tiles, expected",
    [
        (1, 16, [0]),
        (9, 16, list(range(9))),
        (17, 5, [0, 4, 8, 12, 16]),
        (81, 16, [round(i * 80 / 15) for i in range(16)]),
    ],
)
def test_spritesheet_frames_are_evenly_spaced_first_and_last_included(count, tiles, expected):
    assert spritesheet_frames(count, tiles) == expected


@pytest.mark.parametrize(
    "count, columns, rows", [(1, 1, 1), (2, 2, 1), (5, 3, 2), (9, 3, 3), (17, 4, 4), (81, 4, 4)]
)
def test_the_spritesheet_grid_is_near_square_and_sized_by_its_tiles(count, columns, rows):
    still = encode_spritesheet(solid_frames(count))
    image = decode(still.data)
    assert (image.format, still.content_type, still.extension) == ("JPEG", "image/jpeg", "jpg")
    assert (still.layout["columns"], still.layout["rows"]) == (columns, rows)
    assert (still.layout["tile_width"], still.layout["tile_height"]) == (48, 32)
    assert image.size == (columns * 48, rows * 32)
    assert len(still.layout["frames"]) == min(count, 16)


def test_tiles_run_row_major_in_time_order_and_spare_cells_are_black():
    frames = solid_frames(5)
    still = encode_spritesheet(frames)  # 3x2 grid: one spare cell
    image = decode(still.data).convert("RGB")
    for position, index in enumerate(still.layout["frames"]):
        row, column = divmod(position, 3)
        centre = (column * 48 + 24, row * 32 + 16)
        assert close_to(image.getpixel(centre), frames[index, 0, 0]), (position, index)
    assert close_to(image.getpixel((2 * 48 + 24, 32 + 16)), (0, 0, 0))


def test_large_frames_are_shrunk_to_tiles_keeping_their_aspect_ratio():
    still = encode_spritesheet(solid_frames(4, height=360, width=640), max_tile_side=128)
    assert (still.layout["tile_width"], still.layout["tile_height"]) == (128, 72)
    assert decode(still.data).size == (256, 144)


def test_the_same_frames_make_the_same_stills():
    frames = np.random.default_rng(3).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)
    assert encode_thumbnail(frames).data == encode_thumbnail(frames).data
    assert encode_spritesheet(frames).data == encode_spritesheet(frames).data


@pytest.mark.parametrize("make", [encode_thumbnail, encode_spritesheet])
def test_stills_refuse_frames_that_are_not_a_video(make):
    with pytest.raises(ValueError):
        make(np.zeros((0, 16, 16, 3), dtype=np.uint8))
    with pytest.raises(ValueError):
        make(np.zeros((4, 16, 16, 3), dtype=np.float32))
