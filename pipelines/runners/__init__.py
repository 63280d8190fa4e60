"""Running one request through a loaded diffusers pipeline: a runner per family (image, video),
with what they share (`base.Runner`: seeding, step callback, stage timings, cache, LoRA, previews),
masked edits (`inpaint`), previews while an image denoises (`previews`) and per-request LoRA
adapters (`lora`).

Imports torch and diffusers; of Darkroom's own code pipelines/spec/ and pipelines/acceleration/.
"""
