"""Tiny, randomly initialised pipelines of the real diffusers classes, built offline, and tiny
LoRA adapters for them.

Each builder makes the same component classes a real checkpoint has (with the small shapes from
diffusers' own `get_dummy_components` tests), seeds torch so every build is identical, and writes
the pipeline with `save_pretrained`. The worker then loads it with the very `from_pretrained`
path real weights use. diffusers' tests fetch tokenizers and a T5 config from the Hub; here the
tokenizers are trained locally on a few sentences instead, so nothing touches the network.

Outputs are noise: these models exist to exercise the plumbing (shapes, seeds, callbacks,
encoding) in seconds on a CPU.
"""
