"""The video families' runners: text-to-video, and image-to-video, whose first frame is the
request's input image. They share `Runner`'s call (cache, LoRA, timings) with the image families."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from pipelines.runners.base import Runner, common_kwargs
from pipelines.spec.types import GenerationRequest, PreviewCallback, StepCallback, VideoOutput


class TextToVideoRunner(Runner):
    def run(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        on_preview: PreviewCallback | None = None,  # no previews of videos: refused by `_previews`
    ) -> VideoOutput:
        output, timings = self._call(self._video_kwargs(request), request, on_step, on_preview)
        # output.frames: (videos, frames, height, width, 3) floats in [0, 1]; one video per request.
        frames = np.clip(output.frames[0], 0.0, 1.0)
        frames = (frames * 255.0).round().astype(np.uint8)
        return VideoOutput(frames=frames, fps=self.spec.frames.fps, timings=timings)

    def _video_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        if request.num_frames is None or self.spec.frames is None:
            raise ValueError(f"{self.spec.name} needs num_frames for a video request")
        if request.num_images != 1:
            raise ValueError(
                f"{self.spec.name} makes one video per request, not {request.num_images}"
            )
        kwargs = common_kwargs(request, self._generator(request.seed))
        kwargs["num_frames"] = request.num_frames
        kwargs["output_type"] = "np"
        if request.guidance_scale is not None:
            kwargs["guidance_scale"] = request.guidance_scale
        return kwargs


class ImageToVideoRunner(TextToVideoRunner):
    """A video whose first frame is the request's one input image, brought to the video size."""

    def _video_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        if len(request.images) != 1:
            raise ValueError(
                f"{self.spec.name} starts a video from exactly 1 input image, got {len(request.images)}"
            )
        kwargs = super()._video_kwargs(request)
        kwargs["image"] = cover_and_center_crop(request.images[0], request.width, request.height)
        return kwargs


def cover_and_center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` scaled to cover width x height, its overflow cut equally from both sides.

    Done here because the pipeline would stretch it to the video size: a portrait photo in a
    landscape video would come out squashed. Cropping keeps proportions and fills the frame.
    Only the part that stays in the frame is resampled (`resize`'s box), straight to the video
    size, so the memory it takes is the frame's whatever the input's shape: scaling the whole
    image first made a 1x60000 input a 832x49,920,000 image on its way to 832x480.
    """
    scale = max(width / image.width, height / image.height)
    kept_width, kept_height = width / scale, height / scale
    left, top = (image.width - kept_width) / 2, (image.height - kept_height) / 2
    box = (left, top, left + kept_width, top + kept_height)
    return image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS, box=box)
