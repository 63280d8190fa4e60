"""Encode results to files and check media: images (PNG/JPEG/WebP), H.264 MP4 via PyAV, and a
video's two stills (a thumbnail and a spritesheet), made next to its MP4 by the worker.

`decode_image` is the guard for uploaded edit inputs: it refuses what is not an image, and
images that are too large, before any pixel is decoded.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# Uploads are decoded only by these PIL plugins: some others (EPS) call external programs.
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")
VIDEO_CODEC = "libx264"
# The formats OpenAI serves these variants in, so a client that names its files after them works.
THUMBNAIL_FORMAT, SPRITESHEET_FORMAT = "webp", "jpeg"
STILL_TYPES = {"webp": ("image/webp", "webp"), "jpeg": ("image/jpeg", "jpg")}  # content type, extension
SPRITESHEET_MAX_TILES = 16  # at most a 4x4 grid: enough to scrub, small enough to fetch at once
SPRITESHEET_MAX_TILE_SIDE = 256  # tiles are downscaled to this longer side, never upscaled


class InvalidImageError(ValueError):
    """Uploaded bytes are not an acceptable image."""


@dataclass(frozen=True)
class VideoInfo:
    codec: str  # e.g. "h264"
    width: int
    height: int
    frames: int  # frames actually decoded
    fps: float
    faststart: bool  # the index (moov) precedes the media data (mdat)


@dataclass(frozen=True)
class Still:
    """One encoded still of a video, with what a client needs to read it (JSON-able)."""

    data: bytes
    content_type: str
    extension: str
    layout: dict[str, int | list[int]]


def encode_image(image: Image.Image, fmt: str = "png", *, quality: int = 90) -> bytes:
    """`image` as PNG, JPEG or WebP bytes; `quality` applies to the lossy formats."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(
            f"image format {fmt!r} is not supported; expected one of {', '.join(IMAGE_FORMATS)}"
        )
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    else:
        image.convert("RGB").save(buffer, format=IMAGE_FORMATS[fmt], quality=quality)
    return buffer.getvalue()


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode an uploaded PNG/JPEG/WebP into an RGB image of at most `max_pixels` pixels."""
    try:
        # Image.open reads only the header; the size check runs before any pixel is decoded.
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"image is {width}x{height} ({width * height} pixels); "
                    f"at most {max_pixels} pixels are allowed"
                )
            image.load()
            return image.convert("RGB")
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as exc:
        # PIL's own limit, hit when a header claims an enormous size.
        raise InvalidImageError(f"image is far too large: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(f"data is not a {', '.join(UPLOAD_FORMATS)} image") from exc
    except (OSError, ValueError, SyntaxError, struct.error) as exc:
        # PIL's plugins report broken files with any of these.
        raise InvalidImageError(f"image data is corrupt or truncated ({exc})") from exc


def encode_mp4(frames: np.ndarray, fps: int, *, crf: int = 18) -> bytes:
    """H.264 (yuv420p) MP4 of `frames` (T, H, W, 3) uint8, index at the front for streaming."""
    _check_frames(frames)
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even sides, got {width}x{height}")
    if VIDEO_CODEC not in av.codecs_available:
        raise RuntimeError(
            f"this PyAV build's ffmpeg has no {VIDEO_CODEC} encoder; cannot write H.264"
        )

    # +faststart: at close ffmpeg moves the index (`moov`) to the front so the file plays while
    # downloading. That second pass reopens the output by name, so it cannot write to a
    # BytesIO: encode to a temporary file and read it back.
    with tempfile.TemporaryDirectory(prefix="darkroom-mp4-") as tmp:
        path = Path(tmp) / "video.mp4"
        _write_mp4(path, frames, fps, crf)
        return path.read_bytes()


@functools.cache
def _x264_repeatable_options() -> dict[str, str]:
    """x264 capped at AVX2 where the CPU has AVX-512, so the same frames always encode to the
    same bytes (the contract: same seed and parameters, byte-identical output on the CPU).

    With its AVX-512 code, x264 (core 165) encodes the same frames to different bytes depending on
    what else is in the process's memory: up to a third of repeated encodes differed, on frames
    32 to 240 px wide, and a tiny video's remix with the source's own prompt was not its copy.
    Never so with `asm=avx2`, `no-asm` or `no-mbtree`, which points at its macroblock-tree
    lookahead. AVX2 is as fast here; turning the macroblock tree off would cost bitrate.
    """
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = next(
        (line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []
    )
    return {"x264-params": "asm=avx2"} if "avx512f" in flags and "avx2" in flags else {}


def _write_mp4(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    height, width = frames.shape[1:3]
    with av.open(
        str(path), mode="w", format="mp4", options={"movflags": "+faststart"}
    ) as container:
        stream = container.add_stream(VIDEO_CODEC, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), **_x264_repeatable_options()}
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the frames the encoder still holds
            container.mux(packet)


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(
            f"expected (frames, height, width, 3) uint8 frames, got {frames.shape} {frames.dtype}"
        )


def encode_thumbnail(frames: np.ndarray, *, quality: int = 85) -> Still:
    """The middle frame at full size as WebP: the first frame of a generated clip is often the
    least settled one, and the middle is what the clip is about."""
    _check_frames(frames)
    index = len(frames) // 2
    height, width = frames.shape[1:3]
    data = encode_image(Image.fromarray(frames[index]), THUMBNAIL_FORMAT, quality=quality)
    return Still(data, *STILL_TYPES[THUMBNAIL_FORMAT], {"frame": index, "width": width, "height": height})


def spritesheet_frames(count: int, tiles: int) -> list[int]:
    """`tiles` frame indices evenly spaced over `count` frames, first and last included."""
    tiles = min(tiles, count)
    if tiles == 1:
        return [0]
    return [round(i * (count - 1) / (tiles - 1)) for i in range(tiles)]


def encode_spritesheet(
    frames: np.ndarray,
    *,
    max_tiles: int = SPRITESHEET_MAX_TILES,
    max_tile_side: int = SPRITESHEET_MAX_TILE_SIDE,
    quality: int = 85,
) -> Still:
    """Evenly spaced frames in a near-square grid, row-major in time order, as JPEG.

    Cells past the last tile stay black. The layout (columns, rows, tile size, which frames)
    travels with it, since the grid depends on the clip's length.
    """
    _check_frames(frames)
    indices = spritesheet_frames(len(frames), max_tiles)
    columns = math.ceil(math.sqrt(len(indices)))
    rows = math.ceil(len(indices) / columns)
    height, width = frames.shape[1:3]
    scale = min(1.0, max_tile_side / max(width, height))
    tile_width, tile_height = max(1, round(width * scale)), max(1, round(height * scale))
    sheet = Image.new("RGB", (columns * tile_width, rows * tile_height))
    for position, index in enumerate(indices):
        tile = Image.fromarray(frames[index])
        if tile.size != (tile_width, tile_height):
            tile = tile.resize((tile_width, tile_height), Image.Resampling.LANCZOS)
        row, column = divmod(position, columns)
        sheet.paste(tile, (column * tile_width, row * tile_height))
    layout = {
        "columns": columns,
        "rows": rows,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "frames": indices,
    }
    data = encode_image(sheet, SPRITESHEET_FORMAT, quality=quality)
    return Still(data, *STILL_TYPES[SPRITESHEET_FORMAT], layout)


def probe_video(data: bytes) -> VideoInfo:
    """Decode every frame of a video file and report what it really holds."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return VideoInfo(
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frames=frames,
            fps=float(stream.average_rate or stream.guessed_rate or 0),
            faststart=_moov_before_mdat(data),
        )


def _moov_before_mdat(data: bytes) -> bool:
    """Walk the MP4's top-level boxes (4-byte size, 4-byte type) and see which comes first."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind in (b"moov", b"mdat"):
            return kind == b"moov"
        if size == 1:  # 64-bit size follows the type
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        if size < 8:
            return False
        offset += size
    return False
