"""A model's limits on what a request may ask: output sizes, and seconds as Wan frame counts.

Pure data, no torch: the API checks requests with these and the registry gives each model its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")


@dataclass(frozen=True)
class SizeRule:
    """Allowed output sizes: both sides a multiple of `multiple`, within [min_side, max_side]."""

    default: tuple[int, int]  # (width, height)
    multiple: int
    min_side: int
    max_side: int

    def describe(self, rounded: bool = False) -> str:
        if rounded:
            return (
                f"WIDTHxHEIGHT, each side rounded to the nearest multiple of {self.multiple} "
                f"(halves up), then between {self.min_side} and {self.max_side}"
            )
        return (
            f"WIDTHxHEIGHT with each side a multiple of {self.multiple} "
            f"between {self.min_side} and {self.max_side}"
        )

    def parse(self, size: str, rounded: bool = False) -> tuple[int, int]:
        """Return (width, height) for a `WxH` string, or raise ValueError saying what is allowed.

        `rounded`: each side is first rounded to the nearest multiple (`70x50` -> `64x48` on a
        multiple of 16) instead of refused; the rounded sides must still be within the range.
        """
        match = _SIZE_PATTERN.match(size.strip())
        if not match:
            raise ValueError(f"size {size!r} is not WIDTHxHEIGHT; expected {self.describe(rounded)}")
        width, height = (int(side) for side in match.groups())
        if rounded:
            half = self.multiple // 2
            width, height = ((side + half) // self.multiple * self.multiple for side in (width, height))
        for side in (width, height):
            if not self.min_side <= side <= self.max_side or side % self.multiple:
                raise ValueError(f"size {size!r} is not allowed; expected {self.describe(rounded)}")
        return width, height

    def fit(self, width: int, height: int, *, upscale: bool = False) -> tuple[int, int]:
        """The allowed size closest to an input image's aspect ratio, at most the default area;
        with `upscale`, exactly about the default area (a smaller image is scaled up)."""
        area = self.default[0] * self.default[1]
        scale = (area / (width * height)) ** 0.5
        if not upscale:
            scale = min(1.0, scale)
        return self._clamp(width * scale), self._clamp(height * scale)

    @property
    def max_aspect_ratio(self) -> float:
        """How elongated an input image may be (long side over short side): scaled to the default
        area in its own proportions, as an edit or an image-to-video start frame is, its short
        side is still at least `min_side`. A thinner image would be scaled to nothing (diffusers
        then fails with "height and width must be > 0") or cropped to a sliver of a pixel."""
        width, height = self.default
        return width * height / self.min_side**2

    def _clamp(self, side: float) -> int:
        rounded = max(self.multiple, round(side / self.multiple) * self.multiple)
        return min(self.max_side, max(self.min_side, rounded))


@dataclass(frozen=True)
class FrameRule:
    """`seconds` -> frame count at the model's frame rate, rounded up to 4k+1 (Wan's VAE rule)."""

    fps: int
    allowed_seconds: tuple[str, ...]
    default_seconds: str

    def describe(self) -> str:
        return f"frames = seconds x {self.fps} fps, rounded up to the next 4k+1"

    def frames_for(self, seconds: str) -> int:
        if seconds not in self.allowed_seconds:
            raise ValueError(
                f"seconds {seconds!r} is not allowed for this model; "
                f"allowed: {', '.join(self.allowed_seconds)}"
            )
        wanted = int(seconds) * self.fps
        return 4 * -(-wanted // 4) + 1
