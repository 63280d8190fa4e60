"""A video's stills, as the worker makes them next to its MP4: the thumbnail (the middle frame,
WebP) and the spritesheet (evenly spaced frames in a near-square grid, JPEG), checked by decoding
them and looking at the pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worker.media import encode_spritesheet, encode_thumbnail, spritesheet_frames


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
