"""Qwen2-VL processor for CPU hosts without torchvision.

Why this exists: `QwenImageEditPlusPipeline` takes a `Qwen2VLProcessor` (tokenizer + image
processor + video processor). In transformers 5.23 that class cannot be built, saved or loaded
without torchvision: its video processor (and the type check `ProcessorMixin` runs on it) lives
behind torchvision. There is no CPU build of torchvision for our CPU torch, so on a CPU-only host
neither the tiny edit model nor a real Qwen-Image-Edit checkpoint would load.

The adaptation is narrow: `Qwen2VLImageOnlyProcessor` is `Qwen2VLProcessor` minus its video
processor, with the PIL-based `Qwen2VLImageProcessorPil` as image processor. The edit pipeline
only ever passes text and images, so it behaves the same. The loader passes it explicitly
(`processor=`) to `from_pretrained`, and only when torchvision is missing; GPU images have
torchvision, and there real checkpoints (and the tiny model) load the normal way.

On disk the processor is written exactly as real checkpoints have it (Qwen/Qwen-Image-Edit-2511:
`processor/preprocessor_config.json` naming `Qwen2VLImageProcessor` / `Qwen2VLProcessor`, plus
the tokenizer files), and `model_index.json` names `transformers.Qwen2VLProcessor`, so nothing
on disk depends on this module.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

from transformers import AutoTokenizer, Qwen2VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

PROCESSOR_SUBFOLDER = "processor"


@functools.cache
def torchvision_available() -> bool:
    """Whether torchvision imports: installed is not enough (CUDA-only wheels fail on CPU torch)."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, OSError, RuntimeError):  # missing; missing CUDA libraries; op mismatch
        return False
    return True


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without a video processor (which needs torchvision)."""

    # transformers derives a processor's parts from its `__init__` parameters: leaving out
    # `video_processor` here is what drops it. (Qwen2VLProcessor.__init__ still hands a None
    # video processor on positionally; ProcessorMixin pairs positional arguments with the parts
    # it knows, so that None is ignored. Checked against transformers 5.23.)
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


def build_processor(tokenizer, *, max_pixels: int | None = None) -> Qwen2VLImageOnlyProcessor:
    """A processor around `tokenizer` with the stock Qwen2-VL image settings."""
    image_processor = (
        Qwen2VLImageProcessorPil(max_pixels=max_pixels)
        if max_pixels
        else Qwen2VLImageProcessorPil()
    )
    return Qwen2VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer)


def load_processor(model_dir: Path) -> Qwen2VLImageOnlyProcessor:
    """Load `model_dir/processor` (a tiny model's or a real checkpoint's) without torchvision."""
    directory = Path(model_dir) / PROCESSOR_SUBFOLDER
    if not (directory / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"{directory} has no preprocessor_config.json")
    return Qwen2VLImageOnlyProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(directory),
        tokenizer=AutoTokenizer.from_pretrained(directory),
    )


def save_pipeline_processor(processor: Qwen2VLImageOnlyProcessor, model_dir: Path) -> None:
    """Write `model_dir/processor` in the real checkpoints' layout and name the standard class.

    `save_pretrained` on the pipeline would record this module's class; real checkpoints have a
    legacy `preprocessor_config.json` (from which transformers also infers the video processor
    when torchvision is there) and `Qwen2VLProcessor` in `model_index.json`.
    """
    model_dir = Path(model_dir)
    directory = model_dir / PROCESSOR_SUBFOLDER
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    processor.tokenizer.save_pretrained(directory)
    config = processor.image_processor.to_dict()
    size = config.pop("size")
    config.update(
        {
            "min_pixels": size["shortest_edge"],
            "max_pixels": size["longest_edge"],
            "resample": int(config["resample"]),
            "image_mean": list(config["image_mean"]),
            "image_std": list(config["image_std"]),
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2VLProcessor",
        }
    )
    (directory / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")

    index_path = model_dir / "model_index.json"
    index = json.loads(index_path.read_text())
    index[PROCESSOR_SUBFOLDER] = ["transformers", "Qwen2VLProcessor"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
