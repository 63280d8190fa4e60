"""Model names -> family, defaults and limits.

Pure data, no torch: the API validates sizes, seconds and counts against these specs, and the
worker loads and runs them. Real entries name a Hugging Face repository; `tiny-*` entries are
randomly initialised pipelines of the same classes that pipelines/tiny/ builds offline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from pipelines.spec.cache_policy import NO_CACHE, CachePolicy, MagCache
from pipelines.spec.pipeline_traits import PipelineTraits, pipeline_traits
from pipelines.spec.rules import FrameRule, SizeRule

__all__ = ["REGISTRY", "TINY_MODELS", "Family", "FrameRule", "ModelSpec", "SizeRule", "get_model"]


class Family(StrEnum):
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_EDIT = "image-edit"
    TEXT_TO_VIDEO = "text-to-video"
    IMAGE_TO_VIDEO = "image-to-video"  # a video that starts from `input_reference`


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: Family
    pipeline_class: str  # diffusers class name
    source: str  # Hugging Face repo id, or the tiny builder's name for `tiny-*`
    size: SizeRule
    steps: int
    dtype: str  # torch dtype name the weights are loaded in
    owned_by: str
    frames: FrameRule | None = None
    # None means the model has no such knob, and a request setting it is refused.
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    # None: the model runs without classifier-free guidance (FLUX.1-dev is guidance-distilled),
    # so a negative prompt would be silently ignored; the API refuses one instead.
    negative_prompt: str | None = None
    max_steps: int = 100  # more buys nothing on these schedulers and holds a GPU for minutes
    max_images: int = 4  # `n`
    max_input_images: int = 0  # image inputs an edit accepts; an image-to-video model takes 1
    # Components loaded in float32 whatever `dtype` says: the Wan 2.1 image-to-video model card
    # loads its VAE and CLIP image encoder in float32 and only the rest in bfloat16.
    float32_components: tuple[str, ...] = ()
    # Qwen-Image-Edit resizes every input to ~1 MP for its VAE whatever the output size; a tiny
    # model sets this to about its own output area so an edit does not take a minute on a CPU.
    edit_vae_image_area: int | None = None
    # The diffusers pipeline an edit with a `mask` runs through, built with `from_pipe` on the
    # loaded edit pipeline (pipelines/runners/inpaint.py); None: the model takes no mask.
    inpaint_pipeline_class: str | None = None
    # How far a masked edit re-noises the masked area (diffusers' `strength`, 0 < s <= 1); 1.0
    # repaints it from noise, as diffusers' own Qwen-Image-Edit inpainting example does.
    strength: float = 1.0
    # The cache a job runs with unless it asks for another (or the operator sets one per model).
    cache: CachePolicy = NO_CACHE
    # Name of the per-step MagCache ratios calibrated for this checkpoint (MAG_RATIOS in
    # pipelines/acceleration/cache_hooks.py); without them MagCache is refused.
    mag_ratios: str | None = None

    @property
    def is_tiny(self) -> bool:
        return self.name.startswith("tiny-")

    @property
    def traits(self) -> PipelineTraits:
        """What its diffusers pipeline class supports: LoRA, previews, context parallelism."""
        return pipeline_traits(self.pipeline_class)


_WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, "
    "images, static, overall gray, worst quality, low quality, JPEG compression residue, ugly, "
    "incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, "
    "misshapen limbs, fused fingers, still picture, messy background, three legs, many people in "
    "the background, walking backwards"
)
_TINY_SIZE = SizeRule(default=(64, 64), multiple=16, min_side=16, max_side=256)
_TINY_MAX_STEPS = 200  # the tests make deliberately slow jobs with 200 steps

_TINY_WAN = ModelSpec(
    name="tiny-wan",
    family=Family.TEXT_TO_VIDEO,
    pipeline_class="WanPipeline",
    source="tiny-wan",
    size=_TINY_SIZE,
    frames=FrameRule(
        fps=8, allowed_seconds=tuple(str(s) for s in range(1, 9)), default_seconds="1"
    ),
    steps=4,
    guidance_scale=5.0,
    negative_prompt="low quality",
    max_images=1,
    max_steps=_TINY_MAX_STEPS,
    dtype="float32",
    owned_by="darkroom",
)

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="Qwen/Qwen-Image",
            family=Family.TEXT_TO_IMAGE,
            pipeline_class="QwenImagePipeline",
            source="Qwen/Qwen-Image",
            size=SizeRule(default=(1328, 1328), multiple=16, min_side=256, max_side=2048),
            steps=50,
            true_cfg_scale=4.0,
            negative_prompt=" ",
            dtype="bfloat16",
            owned_by="Qwen",
        ),
        ModelSpec(
            name="Qwen/Qwen-Image-Edit-2511",
            family=Family.IMAGE_EDIT,
            pipeline_class="QwenImageEditPlusPipeline",
            source="Qwen/Qwen-Image-Edit-2511",
            size=SizeRule(default=(1024, 1024), multiple=16, min_side=256, max_side=2048),
            steps=40,
            true_cfg_scale=4.0,
            negative_prompt=" ",
            max_input_images=3,
            inpaint_pipeline_class="QwenImageEditInpaintPipeline",
            dtype="bfloat16",
            owned_by="Qwen",
        ),
        ModelSpec(
            name="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            family=Family.TEXT_TO_VIDEO,
            pipeline_class="WanPipeline",
            source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            size=SizeRule(default=(832, 480), multiple=16, min_side=256, max_side=1280),
            frames=FrameRule(fps=16, allowed_seconds=("1", "2", "3", "4", "5"), default_seconds="5"),
            steps=50,
            guidance_scale=5.0,
            negative_prompt=_WAN_NEGATIVE_PROMPT,
            max_images=1,
            dtype="bfloat16",
            owned_by="Wan-AI",
        ),
        ModelSpec(
            # Model card and diffusers' WanPipeline example: 480p and 720p (1280x720), 81 frames
            # at 16 fps, 50 steps, guidance 5.0; the pipeline checks sides are multiples of 16.
            name="Wan-AI/Wan2.1-T2V-14B-Diffusers",
            family=Family.TEXT_TO_VIDEO,
            pipeline_class="WanPipeline",
            source="Wan-AI/Wan2.1-T2V-14B-Diffusers",
            size=SizeRule(default=(1280, 720), multiple=16, min_side=256, max_side=1280),
            frames=FrameRule(fps=16, allowed_seconds=("1", "2", "3", "4", "5"), default_seconds="5"),
            steps=50,
            guidance_scale=5.0,
            negative_prompt=_WAN_NEGATIVE_PROMPT,
            max_images=1,
            dtype="bfloat16",
            owned_by="Wan-AI",
        ),
        ModelSpec(
            # Model card: 720p as 1280x704 or 704x1280, 24 fps, up to 121 frames (5 s at 24 fps ->
            # 121 by the 4k+1 rule), 50 steps, guidance 5.0. Its VAE downsamples 16x and the
            # transformer patches 2x2, so sides are multiples of 32. The checkpoint's
            # model_index.json sets WanPipeline's `expand_timesteps`, so plain text-to-video
            # through WanPipeline needs nothing extra from the runner.
            name="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            family=Family.TEXT_TO_VIDEO,
            pipeline_class="WanPipeline",
            source="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            size=SizeRule(default=(1280, 704), multiple=32, min_side=256, max_side=1280),
            frames=FrameRule(fps=24, allowed_seconds=("1", "2", "3", "4", "5"), default_seconds="5"),
            steps=50,
            guidance_scale=5.0,
            negative_prompt=_WAN_NEGATIVE_PROMPT,
            max_images=1,
            dtype="bfloat16",
            owned_by="Wan-AI",
        ),
        *(
            ModelSpec(
                # Model cards and diffusers' WanImageToVideoPipeline example: one input image
                # (the first frame, also seen by a CLIP image encoder), 81 frames at 16 fps, 50
                # steps, guidance 5.0, the size fitted to the image's aspect ratio at 480x832 or
                # 720x1280 pixels; the VAE and image encoder in float32. Two checkpoints, one
                # per resolution, each trained at its own area: the side limits keep a request
                # near it.
                name=f"Wan-AI/Wan2.1-I2V-14B-{resolution}-Diffusers",
                family=Family.IMAGE_TO_VIDEO,
                pipeline_class="WanImageToVideoPipeline",
                source=f"Wan-AI/Wan2.1-I2V-14B-{resolution}-Diffusers",
                size=SizeRule(default=default, multiple=16, min_side=256, max_side=max_side),
                frames=FrameRule(fps=16, allowed_seconds=("1", "2", "3", "4", "5"), default_seconds="5"),
                steps=50,
                guidance_scale=5.0,
                negative_prompt=_WAN_NEGATIVE_PROMPT,
                max_images=1,
                max_input_images=1,
                dtype="bfloat16",
                float32_components=("vae", "image_encoder"),
                owned_by="Wan-AI",
            )
            for resolution, default, max_side in (("480P", (832, 480), 832), ("720P", (1280, 720), 1280))
        ),
        ModelSpec(
            # FluxPipeline.__call__ defaults (diffusers 0.42): 28 steps, guidance_scale 3.5, which
            # FLUX.1-dev takes as an embedded input (guidance-distilled: no negative prompt, no
            # true CFG). Sides must divide by 16 (8x VAE, 2x2 packing); 1024x1024 per the card.
            name="black-forest-labs/FLUX.1-dev",
            family=Family.TEXT_TO_IMAGE,
            pipeline_class="FluxPipeline",
            source="black-forest-labs/FLUX.1-dev",
            size=SizeRule(default=(1024, 1024), multiple=16, min_side=256, max_side=2048),
            steps=28,
            guidance_scale=3.5,
            # diffusers ships MagCache ratios calibrated on this checkpoint, so its skips follow
            # the real model's dynamics. The other real models run uncached unless a request or
            # the operator asks: a default that changes the picture needs a quality measurement
            # on real weights, which we cannot make without them.
            cache=MagCache(),
            mag_ratios="flux",
            dtype="bfloat16",
            owned_by="black-forest-labs",
        ),
        ModelSpec(
            name="tiny-qwen-image",
            family=Family.TEXT_TO_IMAGE,
            pipeline_class="QwenImagePipeline",
            source="tiny-qwen-image",
            size=_TINY_SIZE,
            steps=4,
            true_cfg_scale=4.0,
            negative_prompt=" ",
            max_steps=_TINY_MAX_STEPS,
            dtype="float32",
            owned_by="darkroom",
        ),
        ModelSpec(
            name="tiny-qwen-image-edit",
            family=Family.IMAGE_EDIT,
            pipeline_class="QwenImageEditPlusPipeline",
            source="tiny-qwen-image-edit",
            size=_TINY_SIZE,
            steps=4,
            true_cfg_scale=4.0,
            negative_prompt=" ",
            max_input_images=3,
            # A little over its output area: at the most elongated input the API accepts (16:1),
            # the pipeline's rounding to multiples of 32 still leaves the short side 32, not 0.
            edit_vae_image_area=72 * 72,
            inpaint_pipeline_class="QwenImageEditInpaintPipeline",
            max_steps=_TINY_MAX_STEPS,
            dtype="float32",
            owned_by="darkroom",
        ),
        _TINY_WAN,
        # The same tiny Wan, starting from an image: WanImageToVideoPipeline with a CLIP encoder.
        replace(
            _TINY_WAN,
            name="tiny-wan-i2v",
            family=Family.IMAGE_TO_VIDEO,
            pipeline_class="WanImageToVideoPipeline",
            source="tiny-wan-i2v",
            max_input_images=1,
        ),
        ModelSpec(
            name="tiny-flux",
            family=Family.TEXT_TO_IMAGE,
            pipeline_class="FluxPipeline",
            source="tiny-flux",
            size=_TINY_SIZE,
            steps=4,
            guidance_scale=3.5,
            mag_ratios="flux",  # the real FLUX ratios: lets the tests run MagCache end to end
            max_steps=_TINY_MAX_STEPS,
            dtype="float32",
            owned_by="darkroom",
        ),
    )
}

TINY_MODELS: tuple[str, ...] = tuple(name for name in REGISTRY if name.startswith("tiny-"))


def get_model(name: str) -> ModelSpec:
    """The spec for `name`; KeyError if the registry has no such model."""
    return REGISTRY[name]
